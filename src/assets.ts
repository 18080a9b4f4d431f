import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { SqlFile } from './db/index.js'
import { readSqlDir } from './db/index.js'
import { seaModule, type SeaModule } from './util/sea.js'

/**
 * The files paku carries (SQL migrations, Grafana provisioning, the admin UI, version): from the repository when
 * running from source or the ESM bundle, from the executable's embedded assets when it is the
 * single executable (build/sea.ts puts them there with a manifest).
 */

/** What build/sea.ts embeds as `manifest.json`. */
export type SeaManifest = {
  version: string
  commit: string
  sql: string[]
  grafana: string[]
  ui: string[]
}

export function isSingleExecutable(): boolean {
  return seaModule() !== undefined
}

let manifestCache: SeaManifest | undefined
function manifest(s: SeaModule): SeaManifest {
  manifestCache ??= JSON.parse(s.getAsset('manifest.json', 'utf8')) as SeaManifest
  return manifestCache
}

/** The repository root when running from source (src/ sits one level below it) or from dist/paku.mjs. */
function root(): string {
  return join(dirname(fileURLToPath(import.meta.url)), '..')
}

/** Directory of the numbered SQL migrations (source checkouts and tests). */
export function sqlDir(): string {
  return join(root(), 'sql')
}

/** Directory of the Grafana provisioning tree (source checkouts and tests). */
export function grafanaDir(): string {
  return join(root(), 'grafana-provisioning')
}

/** Directory of the admin web UI's static files (source checkouts and tests). */
export function uiDir(): string {
  return join(root(), 'src', 'ui', 'static')
}

/**
 * Files of npm packages that the UI serves under its own names: uPlot, the charting library
 * (docs/development.md, "Dependencies and why"). They come from node_modules, so npm pins and updates them; the executable
 * embeds them like the UI's own files.
 */
export const UI_VENDOR: Readonly<Record<string, string>> = {
  'uplot.js': 'uplot/dist/uPlot.iife.min.js',
  'uplot.css': 'uplot/dist/uPlot.min.css',
}

/** Where a UI_VENDOR file is in node_modules (source checkouts, the build). */
export function uiVendorPath(name: string): string {
  const spec = UI_VENDOR[name]
  if (!spec) throw new Error(`no vendored UI file ${name}`)
  return createRequire(import.meta.url).resolve(spec)
}

/** The admin UI's files by name (flat: index.html, app.js, style.css, …, and the UI_VENDOR files). */
export function uiFiles(): Map<string, Buffer> {
  const s = seaModule()
  if (s) return new Map(manifest(s).ui.map((name) => [name, Buffer.from(s.getAsset(`ui/${name}`))]))
  const own: Array<[string, Buffer]> = readdirSync(uiDir()).map((name) => [
    name,
    readFileSync(join(uiDir(), name)),
  ])
  return new Map([
    ...own,
    ...Object.keys(UI_VENDOR).map((name): [string, Buffer] => [
      name,
      readFileSync(uiVendorPath(name)),
    ]),
  ])
}

/** The SQL migrations, in apply order. */
export function migrationFiles(): SqlFile[] {
  const s = seaModule()
  if (!s) return readSqlDir(sqlDir())
  return manifest(s).sql.map((name) => ({ name, sql: s.getAsset(`sql/${name}`, 'utf8') }))
}

/** The "EcoFlow — Legacy" folder in the provisioning tree: its dashboard provider and its dashboards. */
export const GRAFANA_LEGACY = [
  'dashboards/ecoflow-legacy.yaml',
  'dashboards/ecoflow-legacy',
] as const

const isLegacy = (rel: string) => GRAFANA_LEGACY.some((l) => rel === l || rel.startsWith(`${l}/`))

/**
 * Writes the Grafana provisioning tree (datasources/, dashboards/) into `dir`. With `legacy: false` the
 * "EcoFlow — Legacy" folder's provider and dashboards are left out, and removed from `dir` if an earlier
 * export put them there (Grafana then drops those dashboards when it reloads); returns what it removed.
 */
export function exportGrafana(dir: string, opts: { legacy?: boolean } = {}): string[] {
  const legacy = opts.legacy ?? true
  const removed: string[] = []
  if (!legacy) {
    for (const rel of GRAFANA_LEGACY) {
      if (!existsSync(join(dir, rel))) continue
      rmSync(join(dir, rel), { recursive: true, force: true })
      removed.push(rel)
    }
  }
  const s = seaModule()
  if (!s) {
    const root = grafanaDir()
    cpSync(root, dir, {
      recursive: true,
      filter: (src) => legacy || !isLegacy(relative(root, src).split(sep).join('/')),
    })
    return removed
  }
  for (const rel of manifest(s).grafana) {
    if (!legacy && isLegacy(rel)) continue
    const target = join(dir, rel)
    mkdirSync(dirname(target), { recursive: true })
    writeFileSync(target, Buffer.from(s.getAsset(`grafana/${rel}`)))
  }
  return removed
}

/** The systemd unit `paku install-service` writes (build/systemd/paku.service in the repository). */
export function serviceUnit(): string {
  const s = seaModule()
  return s
    ? s.getAsset('systemd/paku.service', 'utf8')
    : readFileSync(join(root(), 'build', 'systemd', 'paku.service'), 'utf8')
}

/** The package version and the commit (embedded in the executable; from .git in a checkout). */
export function versionInfo(env: Record<string, string | undefined> = process.env): {
  version: string
  commit: string
} {
  const s = seaModule()
  if (s) {
    const m = manifest(s)
    return { version: m.version, commit: m.commit }
  }
  const pkg = JSON.parse(readFileSync(join(root(), 'package.json'), 'utf8')) as { version: string }
  return { version: pkg.version, commit: env.PAKU_COMMIT ?? gitCommit(root()) }
}

export function gitCommit(dir: string): string {
  try {
    const head = readFileSync(join(dir, '.git', 'HEAD'), 'utf8').trim()
    if (!head.startsWith('ref: ')) return head.slice(0, 12)
    const refFile = join(dir, '.git', head.slice(5))
    if (existsSync(refFile)) return readFileSync(refFile, 'utf8').trim().slice(0, 12)
    const packed = readFileSync(join(dir, '.git', 'packed-refs'), 'utf8')
    const line = packed.split('\n').find((l) => l.endsWith(' ' + head.slice(5)))
    return line ? line.slice(0, 12) : 'unknown'
  } catch {
    return 'unknown'
  }
}
