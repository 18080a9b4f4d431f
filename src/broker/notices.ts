import type { Logger } from '../log/index.js'
import type { QuotaName } from './ledger.js'

/**
 * Log lines about clients, at most once a minute per key: a misconfigured device retries every few
 * seconds, and one line per attempt would bury everything else.
 */
export function createNotices(opts: { log: Logger; now: () => number }) {
  const { log, now } = opts
  const last = new Map<string, number>()

  /** Whether a line for this key may be logged now. */
  const due = (key: string) => {
    const t = now()
    if ((last.get(key) ?? 0) + 60_000 > t) return false
    if (last.size > 10_000) last.clear()
    last.set(key, t)
    return true
  }
  const warnOnce = (key: string, msg: string, fields: Record<string, unknown>) =>
    due(key) && log.warn(msg, fields)
  const infoOnce = (key: string, msg: string, fields: Record<string, unknown>) =>
    due(key) && log.info(msg, fields)

  return {
    warnOnce,
    infoOnce,
    /** A refusal for a quota: counted by the ledger, logged once a minute per principal. */
    quotaRefused: (principal: string, quota: QuotaName, fields: Record<string, unknown>) =>
      warnOnce(`quota:${principal}`, 'MQTT quota reached; refused', {
        principal,
        quota,
        ...fields,
      }),
  }
}

export type Notices = ReturnType<typeof createNotices>
