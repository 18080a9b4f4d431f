import { sql, type Kysely } from 'kysely'
import type { DB, Row } from '../db/index.js'
import { devices, latest, recentSince } from './queries.js'

/**
 * Every device paku knows, of every kind, as one list: edge devices (their status), everything that
 * sends telemetry (relayed and wired sensors, heaters, fridges: the newest row of each), and EcoFlow
 * stations (the newest poll). A device that reports under several systems of one site (a heater's
 * status on `edge`, its readings on `heater`) is one entry. Fleet-sized: each source is read by index,
 * one newest row per device, never a scan of the history.
 */

/** Devices listed at most; more means the caller should filter (the answer says `truncated`). */
export const MAX_FLEET = 5000
/** A device that reports no online flag counts as online when it sent something this recently. */
export const ONLINE_WINDOW_MS = 10 * 60_000

export type FleetKind = 'edge' | 'sensor' | 'heater' | 'fridge' | 'ecoflow' | 'other'
export type Reading = { value: number | string | boolean | null; unit?: string }

export type FleetDevice = {
  /** `site_id` is null for EcoFlow stations, which belong to the account, not a site. */
  site_id: string | null
  device_id: string
  kind: FleetKind
  systems: string[]
  online: boolean
  last_seen: string | null
  model: string | null
  firmware: string | null
  location: string | null
  /** The gateway that relays this sensor (a claim in mqtt_sensor_claims). */
  via: string | null
  battery: Reading | null
  signal: Reading | null
  /** The newest value of each metric, and where its series is read from. */
  readings: Record<
    string,
    { value: unknown; source: 'measurements' | 'status' | 'ecoflow'; system: string; at: string }
  >
}

/** Metric names that mean a battery level or a radio signal, in order of preference, with their units. */
const BATTERY: Array<[string, string]> = [
  ['battery_percent', '%'],
  ['battery_pct', '%'],
  ['soc_percent', '%'],
  ['battery_soc', '%'],
  ['battery_v', 'V'],
  ['battery_voltage', 'V'],
  ['battery_mv', 'mV'],
]
const SIGNAL: Array<[string, string]> = [
  ['signal_strength_dbm', 'dBm'],
  ['rssi_dbm', 'dBm'],
  ['rssi', 'dBm'],
  ['wifi_rssi', 'dBm'],
]
/** Status fields charted from the rollups (src/rollup/sources.ts reads the same three). */
const STATUS_SERIES = ['signal_strength_dbm', 'uptime_seconds', 'heater_status']
/** Status fields that say who a device is, not what it measures. */
const IDENTITY = ['device_id', 'device_model', 'firmware_version', 'online', 'timestamp', 'site_id']
/** EcoFlow columns the fleet shows; the station page charts these and more. */
const ECOFLOW_READINGS = [
  'soc_percent',
  'watts_in_sum',
  'watts_out_sum',
  'pv_in_watts',
  'ac_out_watts',
  'dc_out_watts',
  'remain_time_min',
  'bms_temp',
  'wifi_rssi',
] as const

const KIND_OF_SYSTEM: Record<string, FleetKind> = {
  edge: 'edge',
  sensors: 'sensor',
  heater: 'heater',
  fridge: 'fridge',
  ecoflow: 'ecoflow',
}
/** When a device reports under several systems, the most specific one names its kind. */
const KIND_ORDER: FleetKind[] = ['ecoflow', 'heater', 'fridge', 'sensor', 'edge', 'other']

/**
 * The fleet, or the entries of one site or device id: those filters are applied in SQL (a device page
 * asks for its own entry every few seconds), the rest by matches().
 */
export async function fleet(
  db: Kysely<DB>,
  f: { site_id?: string | undefined; device_id?: string | undefined } = {},
  now = Date.now(),
): Promise<{ devices: FleetDevice[]; truncated: boolean }> {
  const byKey = new Map<string, FleetDevice>()
  const entry = (site: string | null, deviceId: string): FleetDevice => {
    const key = `${site ?? ''}\u0000${deviceId}`
    let d = byKey.get(key)
    if (!d) {
      d = {
        site_id: site,
        device_id: deviceId,
        kind: 'other',
        systems: [],
        online: false,
        last_seen: null,
        model: null,
        firmware: null,
        location: null,
        via: null,
        battery: null,
        signal: null,
        readings: {},
      }
      byKey.set(key, d)
    }
    return d
  }
  const seen = (d: FleetDevice, at: Date | null) => {
    if (at && (d.last_seen === null || at.toISOString() > d.last_seen))
      d.last_seen = at.toISOString()
  }
  const addSystem = (d: FleetDevice, system: string) => {
    if (!d.systems.includes(system)) d.systems.push(system)
  }

  const [telemetry, edge, stations, claims] = await Promise.all([
    latest(db, { site_id: f.site_id, device_id: f.device_id, limit: MAX_FLEET }),
    // A device without a site in the devices table is at paku (as devices() reads its status): filtered below.
    devices(db, { device_id: f.device_id, limit: MAX_FLEET }),
    // Stations belong to no site.
    f.site_id === undefined ? ecoflowLatest(db, f.device_id) : Promise.resolve([]),
    sensorClaims(db, f),
  ])
  for (const row of telemetry.rows) {
    const d = entry(row.site_id, row.device_id)
    addSystem(d, row.system)
    seen(d, row.ts)
    d.location ??= row.location
    for (const [metric, value] of Object.entries(row.metrics ?? {})) {
      const prior = d.readings[metric]
      if (prior && prior.at > row.ts.toISOString()) continue
      d.readings[metric] = {
        value,
        source: 'measurements',
        system: row.system,
        at: row.ts.toISOString(),
      }
    }
  }
  // Edge devices say whether they are online (the LWT sets false); the window decides for the others.
  const reportsOnline = new Set<FleetDevice>()
  for (const e of edge.rows) {
    const site = e.site_id ?? 'paku'
    if (f.site_id !== undefined && site !== f.site_id) continue
    const d = entry(site, e.device_id)
    addSystem(d, 'edge')
    seen(d, e.last_seen)
    d.model = e.device_model
    d.firmware = e.firmware
    if (e.online !== null) {
      d.online = e.online
      reportsOnline.add(d)
    }
    const at = (e.status_at ?? e.last_seen)?.toISOString() ?? new Date(0).toISOString()
    for (const [metric, value] of Object.entries(e.status ?? {})) {
      if ((typeof value === 'object' && value !== null) || IDENTITY.includes(metric)) continue
      if (d.readings[metric] && !STATUS_SERIES.includes(metric)) continue
      d.readings[metric] = { value, source: 'status', system: 'edge', at }
    }
  }
  for (const s of stations) {
    const d = entry(null, s.device_sn)
    addSystem(d, 'ecoflow')
    seen(d, s.ts)
    d.model = s.model
    for (const c of ECOFLOW_READINGS)
      if (s[c] !== null && s[c] !== undefined)
        d.readings[c] = {
          value: Number(s[c]),
          source: 'ecoflow',
          system: 'ecoflow',
          at: s.ts.toISOString(),
        }
  }
  for (const c of claims) {
    const d = byKey.get(`${c.site_id}\u0000${c.sensor_id}`)
    if (d) d.via = c.device_id
  }

  const list = [...byKey.values()]
  for (const d of list) {
    d.kind =
      KIND_ORDER.find((k) => d.systems.some((s) => (KIND_OF_SYSTEM[s] ?? 'other') === k)) ?? 'other'
    if (!reportsOnline.has(d))
      d.online = d.last_seen !== null && now - Date.parse(d.last_seen) < ONLINE_WINDOW_MS
    d.battery = pick(d, BATTERY)
    d.signal = pick(d, SIGNAL)
  }
  list.sort(
    (a, b) =>
      (b.last_seen ?? '').localeCompare(a.last_seen ?? '') ||
      a.device_id.localeCompare(b.device_id),
  )
  return { devices: list, truncated: telemetry.more || edge.more || list.length > MAX_FLEET }
}

function pick(d: FleetDevice, names: Array<[string, string]>): Reading | null {
  for (const [name, unit] of names) {
    const r = d.readings[name]
    if (r && (typeof r.value === 'number' || typeof r.value === 'string'))
      return { value: r.value, unit }
  }
  return null
}

/** Whether a fleet entry matches the filters: exact site, system and id; `q` anywhere in id, location, model or kind. */
export function matches(
  d: FleetDevice,
  f: {
    site_id?: string | undefined
    system?: string | undefined
    device_id?: string | undefined
    q?: string | undefined
  },
): boolean {
  if (f.site_id !== undefined && d.site_id !== f.site_id) return false
  if (f.system !== undefined && !d.systems.includes(f.system)) return false
  if (f.device_id !== undefined && d.device_id !== f.device_id) return false
  if (f.q) {
    const q = f.q.toLowerCase()
    return [d.device_id, d.location, d.model, d.kind, d.site_id, d.via, ...d.systems].some((x) =>
      x?.toLowerCase().includes(q),
    )
  }
  return true
}

type StationRow = Row<
  'ecoflow_measurements',
  'device_sn' | 'ts' | 'model' | (typeof ECOFLOW_READINGS)[number]
>

/** The newest poll of every station: stations from rollup_series plus rows created since the last pass (as latest() reads devices). */
async function ecoflowLatest(db: Kysely<DB>, sn: string | undefined): Promise<StationRow[]> {
  const cols = sql.join(ECOFLOW_READINGS.map((c) => sql.ref(`e.${c}`)))
  const one = (col: string) => (sn === undefined ? sql`true` : sql`${sql.ref(col)} = ${sn}`)
  const recent = await recentSince(db, 'ecoflow')
  const r = await sql<StationRow>`
    WITH k AS (
      SELECT device_id AS device_sn FROM rollup_series WHERE source = 'ecoflow' AND ${one('device_id')}
      UNION
      SELECT DISTINCT device_sn FROM ecoflow_measurements WHERE ${one('device_sn')} AND ${recent === null ? sql`true` : sql`created_at >= ${recent}`}
    )
    SELECT k.device_sn, l.* FROM k CROSS JOIN LATERAL (
      SELECT e.ts, e.model, ${cols} FROM ecoflow_measurements e WHERE e.device_sn = k.device_sn ORDER BY e.ts DESC LIMIT 1
    ) l
    ORDER BY 1 LIMIT ${MAX_FLEET}`.execute(db)
  return r.rows
}

/** Which gateway relays which sensor (the broker's claims; read here, written only by the broker). */
async function sensorClaims(
  db: Kysely<DB>,
  f: { site_id?: string | undefined; device_id?: string | undefined },
): Promise<Array<Row<'mqtt_sensor_claims', 'site_id' | 'sensor_id' | 'device_id'>>> {
  let q = db.selectFrom('mqtt_sensor_claims').select(['site_id', 'sensor_id', 'device_id'])
  if (f.site_id !== undefined) q = q.where('site_id', '=', f.site_id)
  if (f.device_id !== undefined) q = q.where('sensor_id', '=', f.device_id)
  return q.limit(MAX_FLEET).execute()
}
