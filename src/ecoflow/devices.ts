import type { Config } from '../config/index.js'
import { errorText, type Logger } from '../log/index.js'
import { EcoflowError, type EcoflowClient } from './client.js'
import { detectFamily, mapQuota, type Columns, type Family, type PowerSummary } from './mapping.js'

/** One poll's row, handed to ingest's durable writer. */
export type EcoflowRow = {
  kind: 'ecoflow'
  deviceSn: string
  ts: Date
  model: string
  columns: Columns
  raw: string
}

export type Publish = (
  topic: string,
  payload: string,
  opts: { qos: 0 | 1; retain: boolean },
) => Promise<void>

/** What paku knows about one power station; shown as it is by GET /api/admin/ecoflow/devices. */
export type DeviceState = {
  sn: string
  productName: string | null
  family: Family | null
  online: boolean | null
  lastPollAt: string | null
  lastError: string | null
  blocked: boolean
  summary: PowerSummary | null
}

// "current device is not allowed to get device info" and friends (docs/ecoflow.md, "Errors"): EcoFlow's allow-list.
const NOT_ALLOWED = /not allowed|no permission/i

/** An EcoFlow failure as logged and shown: EcoFlow's code and message when it sent one. */
export function failureText(err: unknown): string {
  return err instanceof EcoflowError ? `${err.code}: ${err.message}` : errorText(err)
}

/** The device with serial number `sn`, added (nothing known yet) when it is new. */
function device(devices: Map<string, DeviceState>, sn: string): DeviceState {
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

/**
 * Brings `devices` up to date: the configured serial numbers, or the account's device list. The list
 * is read every 20th poll (`polls`), and whenever no device is known yet.
 */
export async function discover(o: {
  client: EcoflowClient
  config: Config['ecoflow']
  log: Logger
  devices: Map<string, DeviceState>
  polls: number
  signal: AbortSignal
}): Promise<void> {
  const { client, config, devices, polls, signal } = o
  if (config.devices.length > 0) {
    for (const sn of config.devices) device(devices, sn)
    // Product names improve the family guess; a failing device/list must not stop polling configured devices.
    if (polls % 20 !== 0) return
    try {
      for (const d of await client.deviceList(signal))
        if (devices.has(d.sn))
          Object.assign(device(devices, d.sn), {
            productName: d.productName ?? null,
            online: d.online === 1,
          })
    } catch (err) {
      o.log.debug('device list failed', { err: errorText(err) })
    }
    return
  }
  if (polls % 20 === 0 || devices.size === 0) {
    for (const d of await client.deviceList(signal))
      Object.assign(device(devices, d.sn), {
        productName: d.productName ?? d.deviceName ?? null,
        online: d.online === undefined ? null : d.online === 1,
      })
  }
}

/**
 * Polls one device: its quota becomes a row for `write` and a retained power summary. A device EcoFlow
 * does not allow on the Open API is marked blocked and does not fail; any other failure is recorded on
 * the device and thrown.
 */
export async function pollDevice(
  d: DeviceState,
  o: {
    client: EcoflowClient
    log: Logger
    write: (row: EcoflowRow) => Promise<void>
    publish: Publish
    signal: AbortSignal
  },
): Promise<void> {
  const { log, signal } = o
  try {
    const quota = await o.client.quotaAll(d.sn, signal)
    const family = detectFamily(d.productName ?? undefined, quota)
    if (family === 'unknown' && d.family !== 'unknown')
      log.warn('unknown EcoFlow model; storing the raw quota only', {
        sn: d.sn,
        productName: d.productName,
      })
    d.family = family
    const { columns, summary } = mapQuota(family, quota)
    const ts = new Date()
    await o.write({
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
    await o
      .publish(`paku/ecoflow/${d.sn}/power`, JSON.stringify(summary), { qos: 0, retain: true })
      .catch((err: unknown) => {
        log.warn('power summary not published', { sn: d.sn, err: errorText(err) })
      })
  } catch (err) {
    if (signal.aborted) return
    const text = failureText(err)
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
