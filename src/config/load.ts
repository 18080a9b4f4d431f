import { readFileSync } from 'node:fs'
import * as v from 'valibot'
import { applyEnv, ENV_TABLE } from './env.js'
import { ConfigSchema, type Config } from './schema.js'

export type LoadResult =
  | { ok: true; config: Config; path: string | undefined }
  | { ok: false; issues: string[]; path: string | undefined }

export type LoadOptions = {
  /** --config from the command line; wins over PAKU_CONFIG and ./paku.config.json. */
  path?: string | undefined
  env: Record<string, string | undefined>
  /** Reads a file; injectable for tests. Defaults to readFileSync. */
  readFile?: (path: string) => string
  /** Whether ./paku.config.json exists; only consulted when neither --config nor PAKU_CONFIG is given. */
  defaultPath?: string
}

const SECRET_PATHS = new Set(ENV_TABLE.filter((e) => e.secret).map((e) => e.path.join('.')))

/**
 * Reads the config file, overlays PAKU_* env and validates the result. Pure: never prints or exits.
 * Every problem is returned as one `dot.path: message` line; secrets are never echoed.
 */
export function loadConfig(opts: LoadOptions): LoadResult {
  const read = opts.readFile ?? ((p: string) => readFileSync(p, 'utf8'))
  const explicit = opts.path ?? (opts.env.PAKU_CONFIG || undefined)
  let path = explicit ?? opts.defaultPath
  let fileValue: Record<string, unknown> = {}
  if (path !== undefined) {
    let text: string | undefined
    try {
      text = read(path)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      // A missing default file just means "all defaults"; a missing explicit file is an error.
      if (explicit !== undefined || code !== 'ENOENT') {
        return {
          ok: false,
          path,
          issues: [`${path}: cannot read config file (${code ?? String(err)})`],
        }
      }
      // Reported as "(defaults)", not as a file that was never read.
      path = undefined
    }
    if (text !== undefined) {
      try {
        const parsed: unknown = JSON.parse(text)
        if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
          return { ok: false, path, issues: [`${path}: config must be a JSON object`] }
        }
        fileValue = parsed as Record<string, unknown>
      } catch (err) {
        return { ok: false, path, issues: [`${path}: invalid JSON: ${(err as Error).message}`] }
      }
    }
  }
  const overlaid = applyEnv(fileValue, opts.env)
  const issues = overlaid.issues.map((i) => `${i.name}: ${i.message}`)
  const result = v.safeParse(ConfigSchema, overlaid.value)
  if (!result.success) {
    for (const issue of result.issues) {
      const raw = v.getDotPath(issue) ?? '(root)'
      // A key with spaces or symbols (a typo, or hostile input) is quoted so the line stays readable.
      const dot = /^[\w.()-]+$/.test(raw) ? raw : JSON.stringify(raw)
      // An issue inside a value (an array element) still names the variable that set the value.
      const envName = [...overlaid.sources].find(
        ([path]) => dot === path || dot.startsWith(`${path}.`),
      )?.[1]
      const where = envName ? `${dot} (from ${envName})` : dot
      // valibot's default messages echo the received value; never do that for secrets.
      const message = SECRET_PATHS.has(dot) ? secretMessage(dot, issue.message) : issue.message
      issues.push(`${where}: ${message}`)
    }
  }
  if (issues.length > 0) return { ok: false, path, issues }
  if (!result.success) return { ok: false, path, issues: ['(root): invalid config'] }
  return { ok: true, path: path, config: deepFreeze(result.output) }
}

function secretMessage(dot: string, message: string): string {
  return message.includes('Received') || message.includes('received')
    ? `${dot} is invalid`
    : message
}

/** Subsystems get slices of one frozen object, so nobody can change config behind another's back. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const child of Object.values(value)) deepFreeze(child)
  }
  return value
}

/** The config with every secret replaced, for `paku check-config` and the banner. */
export function maskSecrets(config: Config): unknown {
  const copy = structuredClone(config) as Config
  if (copy.database.url) copy.database.url = maskUrl(copy.database.url)
  if (copy.http.adminApiKey) copy.http.adminApiKey = '***'
  if (copy.mqtt.sharedCredential.password) copy.mqtt.sharedCredential.password = '***'
  if (copy.ecoflow.accessKey) copy.ecoflow.accessKey = '***'
  if (copy.ecoflow.secretKey) copy.ecoflow.secretKey = '***'
  if (copy.cluster.redisUrl) copy.cluster.redisUrl = maskUrl(copy.cluster.redisUrl)
  return copy
}

/**
 * A URL for display: the password after the user name and any password-like query parameter (libpq and
 * node-postgres read `?password=`, `?sslpassword=`; names compared case-insensitively) become ***.
 */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    for (const key of [...u.searchParams.keys()])
      if (/pass|secret|token/i.test(key)) u.searchParams.set(key, '***')
    return u.toString()
  } catch {
    return '***'
  }
}
