import { createHmac, randomInt } from 'node:crypto'

/**
 * The two signing forms (docs/ecoflow.md, "Request signing"):
 * - `documented`: EcoFlow's generalInfo steps — the request parameters (GET query, or PUT/POST JSON body)
 *   flattened (`a.b=1`, `list[0]=x`), sorted by key (ASCII), joined with `&`, then
 *   `accessKey=…&nonce=…&timestamp=…` appended.
 * - `legacy`: what the old collector signed: only `accessKey=…&nonce=…&timestamp=…`.
 */
export const SIGNING_FORMS = ['documented', 'legacy'] as const
export type SigningForm = (typeof SIGNING_FORMS)[number]

/** Flattens nested objects with `.` and arrays with `[i]`, as EcoFlow's signature expects. */
export function flatten(
  value: unknown,
  prefix = '',
  out: Array<[string, string]> = [],
): Array<[string, string]> {
  if (Array.isArray(value)) {
    value.forEach((v, i) => flatten(v, `${prefix}[${i}]`, out))
  } else if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out)
  } else if (prefix) {
    out.push([prefix, value === null || value === undefined ? '' : String(value)])
  }
  return out
}

/** The exact string that is signed. */
export function signingString(opts: {
  params?: unknown
  accessKey: string
  nonce: string
  timestamp: string
  form: SigningForm
}): string {
  const tail = `accessKey=${opts.accessKey}&nonce=${opts.nonce}&timestamp=${opts.timestamp}`
  if (opts.form === 'legacy' || opts.params === undefined) return tail
  const pairs = flatten(opts.params).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return pairs.length === 0 ? tail : `${pairs.map(([k, v]) => `${k}=${v}`).join('&')}&${tail}`
}

/** Lower-case hex HMAC-SHA256 of the signing string with the secret key. */
export function sign(text: string, secretKey: string): string {
  return createHmac('sha256', secretKey).update(text, 'utf8').digest('hex')
}

/** The four auth headers for one request; a fresh nonce and timestamp every time (stale ones are refused). */
export function signedHeaders(opts: {
  params?: unknown
  accessKey: string
  secretKey: string
  form: SigningForm
  now?: number
  nonce?: string
}): Record<string, string> {
  const nonce = opts.nonce ?? String(randomInt(100_000, 1_000_000))
  const timestamp = String(opts.now ?? Date.now())
  const text = signingString({
    params: opts.params,
    accessKey: opts.accessKey,
    nonce,
    timestamp,
    form: opts.form,
  })
  return { accessKey: opts.accessKey, nonce, timestamp, sign: sign(text, opts.secretKey) }
}
