import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The repository root when running from source: src/ sits one level below it. */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')

/** Directory of the numbered SQL migrations. */
export function sqlDir(): string {
  return join(ROOT, 'sql')
}

/** Directory of the Grafana provisioning tree. */
export function grafanaDir(): string {
  return join(ROOT, 'grafana-provisioning')
}

/** The package version and, in a git checkout, the commit. */
export function versionInfo(env: Record<string, string | undefined> = process.env): { version: string; commit: string } {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
  return { version: pkg.version, commit: env.PAKU_COMMIT ?? gitCommit() }
}

function gitCommit(): string {
  try {
    const head = readFileSync(join(ROOT, '.git', 'HEAD'), 'utf8').trim()
    if (!head.startsWith('ref: ')) return head.slice(0, 12)
    const refFile = join(ROOT, '.git', head.slice(5))
    if (existsSync(refFile)) return readFileSync(refFile, 'utf8').trim().slice(0, 12)
    const packed = readFileSync(join(ROOT, '.git', 'packed-refs'), 'utf8')
    const line = packed.split('\n').find((l) => l.endsWith(' ' + head.slice(5)))
    return line ? line.slice(0, 12) : 'unknown'
  } catch {
    return 'unknown'
  }
}
