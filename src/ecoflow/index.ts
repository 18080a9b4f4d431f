import { Cron } from 'croner'
import type { Config } from '../config/index.js'
import { errorText, type Logger } from '../log/index.js'
import { createEcoflowClient, EcoflowError, type EcoflowClient } from './client.js'
import {
  discover,
  failureText,
  pollDevice,
  type DeviceState,
  type EcoflowRow,
  type Publish,
} from './devices.js'
import { ecoflowRoutes } from './routes.js'

export { createEcoflowClient, EcoflowError, REGION_HOSTS } from './client.js'
export type { EcoflowRow } from './devices.js'

export type EcoflowOptions = {
  config: Config['ecoflow']
  log: Logger
  write: (row: EcoflowRow) => Promise<void>
  publish: Publish
  /** With several instances, whether this one polls now (one at a time; docs/scaling.md). Default: always. */
  leads?: () => boolean
}

const MAX_BACKOFF_MS = 15 * 60_000

/**
 * EcoFlow power stations over the signed IoT Open API: discovers the account's devices (or uses the
 * configured serial numbers), polls quota/all for each on a croner schedule that never overlaps,
 * stores normalised rows and republishes the retained `paku/ecoflow/{sn}/power` summary.
 * Failures back off exponentially and only state changes are logged. Without keys: off and silent.
 */
export function createEcoflow(opts: EcoflowOptions) {
  const { config, log } = opts
  const enabled = config.accessKey !== '' && config.secretKey !== ''
  const devices = new Map<string, DeviceState>()
  const leads = opts.leads ?? (() => true)
  let client: EcoflowClient | undefined
  let job: Cron | undefined
  let abort: AbortController | undefined
  let inFlight: Promise<void> | undefined
  let failures = 0
  let backoffUntil = 0
  let state: 'off' | 'starting' | 'ok' | 'failing' = enabled ? 'starting' : 'off'
  let lastError: string | null = null
  let failingSince: number | undefined
  let polls = 0

  async function pollOnce(): Promise<void> {
    if (!client || !abort) return
    if (Date.now() < backoffUntil) return
    const signal = abort.signal
    try {
      await discover({ client, config, log, devices, polls, signal })
      // One device's failure (a mistyped serial number, a device EcoFlow no longer knows) does not keep
      // the others from being polled. Only when every device fails, which is what account-wide errors
      // (keys, region, network, an outage) look like, does the poll fail and back off.
      let polled = 0
      let firstError: unknown
      for (const d of devices.values()) {
        if (signal.aborted) return
        try {
          await pollDevice(d, { client, log, write: opts.write, publish: opts.publish, signal })
          polled++
        } catch (err) {
          firstError ??= err
        }
      }
      if (polled === 0 && firstError !== undefined) throw firstError
      polls++
      if (state === 'failing')
        log.info('EcoFlow polling recovered', {
          failedForMs: Date.now() - (failingSince ?? Date.now()),
          retries: failures,
        })
      else if (state === 'starting')
        log.info('EcoFlow polling', {
          devices: [...devices.keys()],
          everySeconds: config.pollSeconds,
          signing: client.signingForm,
        })
      state = 'ok'
      failures = 0
      failingSince = undefined
      lastError = null
    } catch (err) {
      if (signal.aborted) return
      failures++
      lastError = failureText(err)
      backoffUntil =
        Date.now() +
        Math.min(MAX_BACKOFF_MS, config.pollSeconds * 1000 * 2 ** Math.min(failures - 1, 10))
      if (state !== 'failing') {
        failingSince = Date.now()
        log.error('EcoFlow polling failing', {
          err: lastError,
          hint: hint(err),
          retryInSeconds: Math.round((backoffUntil - Date.now()) / 1000),
        })
      }
      state = 'failing'
    }
  }

  /** One poll at a time: a request while one runs waits for it instead of overlapping. */
  function poll(): Promise<void> {
    inFlight ??= pollOnce().finally(() => (inFlight = undefined))
    return inFlight
  }

  const routes = ecoflowRoutes({
    enabled,
    config,
    log,
    devices,
    status: () => ({ state, lastError }),
    pollNow: () => {
      backoffUntil = 0
      return poll()
    },
    client: () => client,
  })

  return {
    name: 'ecoflow',
    routes,
    poll,
    async start(): Promise<void> {
      if (!enabled) return
      client = createEcoflowClient({
        apiUrl: config.apiUrl,
        accessKey: config.accessKey,
        secretKey: config.secretKey,
        signing: config.signing,
        timeoutMs: config.requestTimeoutMs,
        onSigningFallback: () =>
          log.warn('EcoFlow refused the documented signature (8521); using the old collector form'),
      })
      abort = new AbortController()
      // protect: a poll that outlasts the interval is not started twice. startAt: without it croner
      // fires at the next whole second, a second poll right after the start-up one below.
      job = new Cron(
        '* * * * * *',
        {
          interval: config.pollSeconds,
          protect: true,
          startAt: new Date(Date.now() + config.pollSeconds * 1000),
          catch: (err) => log.error('poll failed', { err: errorText(err) }),
        },
        () => (leads() ? poll() : undefined),
      )
      // The first poll runs at start-up, without holding up the rest of paku.
      if (leads()) void poll()
    },
    async stop(): Promise<void> {
      job?.stop()
      abort?.abort()
      await inFlight?.catch(() => undefined)
      job = undefined
      client = undefined
    },
    health(): { enabled: boolean; state: string; devices: number; lastError: string | null } {
      // 'standby': another instance polls (docs/scaling.md).
      return {
        enabled,
        state: enabled && !leads() ? 'standby' : state,
        devices: devices.size,
        lastError,
      }
    },
  }
}

function hint(err: unknown): string | undefined {
  if (!(err instanceof EcoflowError)) return undefined
  if (err.code === '8513')
    return 'access key rejected: wrong key, or a key of another region (PAKU_ECOFLOW_API_URL eu|us|global)'
  if (err.code === '8521')
    return 'signature rejected: check PAKU_ECOFLOW_SECRET_KEY (or PAKU_ECOFLOW_SIGNING)'
  if (err.code === 'timeout' || err.code === 'network') return 'EcoFlow cloud unreachable'
  return undefined
}
