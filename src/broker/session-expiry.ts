import type { Config } from '../config/index.js'
import { errorText, type Logger } from '../log/index.js'
import type { Ledger } from './ledger.js'
import type { Counts } from './stats.js'

/** How often persistent sessions are checked for expiry (their expiry is counted in hours). */
const EXPIRY_CHECK_MS = 3_600_000

/** Deletes persistent sessions whose client has been away longer than mqtt.sessionExpiryHours. */
export function createSessionExpiry(opts: {
  config: Pick<Config['mqtt'], 'sessionExpiryHours'>
  log: Logger
  ledger: Ledger
  counts: Counts
  /** Deletes a stored session (the persistence's dropSession). */
  drop: (clientId: string) => Promise<void> | undefined
}) {
  const { config, log, ledger, counts } = opts
  let timer: NodeJS.Timeout | undefined

  /** Expires the sessions due now; resolves to how many. */
  async function expire(): Promise<number> {
    const expired = ledger.expired(config.sessionExpiryHours)
    for (const clientId of expired) await opts.drop(clientId)
    if (expired.length > 0) {
      counts.expiredSessions += expired.length
      log.info('persistent sessions expired', {
        sessions: expired.length,
        afterHours: config.sessionExpiryHours,
      })
    }
    return expired.length
  }

  return {
    expire,
    /** Checks hourly, or more often when sessions expire sooner. */
    start(): void {
      timer = setInterval(
        () => {
          expire().catch((err: unknown) =>
            log.warn('session expiry failed', { err: errorText(err) }),
          )
        },
        Math.min(EXPIRY_CHECK_MS, config.sessionExpiryHours * 3_600_000),
      )
      timer.unref()
    },
    stop(): void {
      clearInterval(timer)
      timer = undefined
    },
  }
}
