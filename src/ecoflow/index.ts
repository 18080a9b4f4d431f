import { Cron } from 'croner'
import { scope } from '../util/scope.js'
import { Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { Config } from '../config/index.js'
import { errorText, type Logger } from '../log/index.js'
import { readJson, validate } from '../util/validate.js'
import { createEcoflowClient, EcoflowError, type EcoflowClient } from './client.js'
import { controlBody, ControlRequest } from './controls.js'
import { detectFamily, mapQuota, type Columns, type Family, type PowerSummary } from './mapping.js'

export { createEcoflowClient, EcoflowError, REGION_HOSTS } from './client.js'

/** One poll's row, handed to ingest's durable writer. */
export type EcoflowRow = {
  kind: 'ecoflow'
  deviceSn: string
  ts: Date
  model: string
  columns: Columns
  raw: string
}

export type EcoflowOptions = {
  config: Config['ecoflow']
  log: Logger
  write: (row: EcoflowRow) => Promise<void>
  publish: (topic: string, payload: string, opts: { qos: 0 | 1; retain: boolean }) => Promise<void>
  /** With several instances, whether this one polls now (one at a time; docs/scaling.md). Default: always. */
  leads?: () => boolean
}

type DeviceState = {
  sn: string
  productName: string | null
  family: Family | null
  online: boolean | null
  lastPollAt: string | null
  lastError: string | null
  blocked: boolean
  summary: PowerSummary | null
}

const MAX_BACKOFF_MS = 15 * 60_000
// "current device is not allowed to get device info" and friends (docs/ecoflow.md, "Errors"): EcoFlow's allow-list.
const NOT_ALLOWED = /not allowed|no permission/i

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

  const device = (sn: string): DeviceState => {
    let d = devices.get(sn)
    if (!d) {
      d = {
        sn,
        productName: null,
        family: null,
        online: null,
        lastPollAt: null,
        lastError: null,
        blocked: false,
        summary: null,
      }
      devices.set(sn, d)
    }
    return d
  }

  async function discover(signal: AbortSignal): Promise<void> {
    if (!client) return
    if (config.devices.length > 0) {
      for (const sn of config.devices) device(sn)
      // Product names improve the family guess; a failing device/list must not stop polling configured devices.
      if (polls % 20 !== 0) return
      try {
        for (const d of await client.deviceList(signal))
          if (devices.has(d.sn))
            Object.assign(device(d.sn), {
              productName: d.productName ?? null,
              online: d.online === 1,
            })
      } catch (err) {
        log.debug('device list failed', { err: errorText(err) })
      }
      return
    }
    if (polls % 20 === 0 || devices.size === 0) {
      for (const d of await client.deviceList(signal))
        Object.assign(device(d.sn), {
          productName: d.productName ?? d.deviceName ?? null,
          online: d.online === undefined ? null : d.online === 1,
        })
    }
  }

  async function pollDevice(d: DeviceState, signal: AbortSignal): Promise<void> {
    if (!client) return
    try {
      const quota = await client.quotaAll(d.sn, signal)
      const family = detectFamily(d.productName ?? undefined, quota)
      if (family === 'unknown' && d.family !== 'unknown')
        log.warn('unknown EcoFlow model; storing the raw quota only', {
          sn: d.sn,
          productName: d.productName,
        })
      d.family = family
      const { columns, summary } = mapQuota(family, quota)
      const ts = new Date()
      await opts.write({
        kind: 'ecoflow',
        deviceSn: d.sn,
        ts,
        model: family,
        columns,
        raw: JSON.stringify(quota),
      })
      d.summary = summary
      d.lastPollAt = ts.toISOString()
      if (d.lastError) log.info('EcoFlow device polled again', { sn: d.sn })
      d.lastError = null
      d.blocked = false
      await opts
        .publish(`paku/ecoflow/${d.sn}/power`, JSON.stringify(summary), { qos: 0, retain: true })
        .catch((err: unknown) => {
          log.warn('power summary not published', { sn: d.sn, err: errorText(err) })
        })
    } catch (err) {
      if (signal.aborted) return
      const text = err instanceof EcoflowError ? `${err.code}: ${err.message}` : errorText(err)
      // A device on EcoFlow's block list fails alone, quietly after the first time.
      if (err instanceof EcoflowError && NOT_ALLOWED.test(err.message)) {
        if (!d.blocked)
          log.warn('EcoFlow does not allow this device on the Open API; keeping its history', {
            sn: d.sn,
            err: text,
          })
        d.blocked = true
        d.lastError = text
        return
      }
      if (d.lastError !== text) log.warn('EcoFlow device not polled', { sn: d.sn, err: text })
      d.lastError = text
      throw err
    }
  }

  async function pollOnce(): Promise<void> {
    if (!client || !abort) return
    if (Date.now() < backoffUntil) return
    const signal = abort.signal
    try {
      await discover(signal)
      // One device's failure (a mistyped serial number, a device EcoFlow no longer knows) does not keep
      // the others from being polled. Only when every device fails, which is what account-wide errors
      // (keys, region, network, an outage) look like, does the poll fail and back off.
      let polled = 0
      let firstError: unknown
      for (const d of devices.values()) {
        if (signal.aborted) return
        try {
          await pollDevice(d, signal)
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
      lastError = err instanceof EcoflowError ? `${err.code}: ${err.message}` : errorText(err)
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

  const routes = new Hono()
  routes.get('/api/admin/ecoflow/devices', scope('read'), (c) =>
    c.json({ enabled, state, lastError, devices: [...devices.values()] }),
  )
  routes.post('/api/admin/ecoflow/poll', scope('admin'), async (c) => {
    if (!enabled)
      throw new HTTPException(409, {
        message:
          'EcoFlow is not configured: set PAKU_ECOFLOW_ACCESS_KEY and PAKU_ECOFLOW_SECRET_KEY',
      })
    backoffUntil = 0
    await poll()
    return c.json({ state, lastError, devices: [...devices.values()] })
  })
  routes.post('/api/admin/ecoflow/devices/:sn/control', scope('admin'), async (c) => {
    if (!enabled || !client)
      throw new HTTPException(409, {
        message:
          'EcoFlow is not configured: set PAKU_ECOFLOW_ACCESS_KEY and PAKU_ECOFLOW_SECRET_KEY',
      })
    const sn = c.req.param('sn')
    const d = devices.get(sn)
    if (!d) throw new HTTPException(404, { message: `no EcoFlow device ${sn}` })
    const body = await readJson(c.req, 'body must be JSON: {"action": …, "value": …}')
    const request = validate(ControlRequest, body)
    if (!d.family)
      throw new HTTPException(409, {
        message: `device ${sn} has not been polled yet; its model is unknown`,
      })
    const built = controlBody(d.family, sn, request)
    if ('error' in built) throw new HTTPException(400, { message: built.error })
    try {
      await client.setQuota(built.body, AbortSignal.timeout(config.requestTimeoutMs))
    } catch (err) {
      const text = err instanceof EcoflowError ? `${err.code}: ${err.message}` : errorText(err)
      log.warn('EcoFlow control refused', { sn, action: request.action, err: text })
      throw new HTTPException(502, { message: `EcoFlow refused the command: ${text}` })
    }
    log.info('EcoFlow control sent', { sn, action: request.action, value: request.value })
    return c.json({ ok: true, sn, action: request.action, value: request.value, sent: built.body })
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
