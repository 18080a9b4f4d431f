import { HTTPException } from 'hono/http-exception'
import { sql, type Kysely, type RawBuilder } from 'kysely'
import type { DB } from '../db/index.js'
import { BUCKETS, MAX_POINTS, type Agg, type Bucket, type SeriesSource } from './params.js'

/**
 * The SQL behind /api/v1. Every query is bounded by an index: raw rows by (site_id, device_id, ts) or
 * (ts), downsampled series by the rollup tables' primary keys, device lists by rollup_series.
 */

type Filters = {
  site_id?: string | undefined
  system?: string | undefined
  device_id?: string | undefined
}

const HOUR = 3_600_000
const SIX_HOURS = 6 * HOUR
/** Largest result of a series query; more means the caller should name a device or narrow the range. */
export const MAX_SERIES_ROWS = 50_000

function where(f: Filters, alias = ''): RawBuilder<unknown> {
  const col = (c: string) => sql.ref(alias ? `${alias}.${c}` : c)
  const parts: RawBuilder<unknown>[] = [sql`true`]
  if (f.site_id !== undefined) parts.push(sql`${col('site_id')} = ${f.site_id}`)
  if (f.system !== undefined) parts.push(sql`${col('system')} = ${f.system}`)
  if (f.device_id !== undefined) parts.push(sql`${col('device_id')} = ${f.device_id}`)
  return sql.join(parts, sql` AND `)
}

/** PostgreSQL's text form of a timestamptz, the only lossless one (JavaScript dates drop microseconds). */
const PG_TS = /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})?[+-]\d{2}(:\d{2}){0,2}$/

export type MeasurementRow = {
  id: string
  site_id: string
  system: string
  device_id: string
  location: string | null
  mac: string | null
  ts: Date
  ts_key: string
  metrics: Record<string, unknown>
  value?: unknown
}

/** Raw rows in [from, to), newest first (or oldest), keyset-paginated by (ts, id). */
export async function listMeasurements(
  db: Kysely<DB>,
  q: Filters & {
    metric?: string | undefined
    from: Date
    to: Date
    limit: number
    after?: string[] | undefined
    order: 'asc' | 'desc'
  },
): Promise<{ rows: MeasurementRow[]; more: boolean }> {
  let keyset = sql`true`
  if (q.after) {
    const [ts, id] = q.after as [string, string]
    if (!PG_TS.test(ts) || !/^\d{1,19}$/.test(id))
      throw new HTTPException(400, { message: 'cursor: not a cursor this API returned' })
    keyset =
      q.order === 'desc'
        ? sql`(ts, id) < (${ts}::timestamptz, ${id}::bigint)`
        : sql`(ts, id) > (${ts}::timestamptz, ${id}::bigint)`
  }
  const dir = sql.raw(q.order === 'desc' ? 'DESC' : 'ASC')
  const r = await sql<MeasurementRow>`
    SELECT id::text AS id, site_id, system, device_id, location, mac, ts, ts::text AS ts_key, metrics
      ${q.metric === undefined ? sql`` : sql`, metrics -> ${q.metric} AS value`}
    FROM measurements
    WHERE ${where(q)} AND ts >= ${q.from} AND ts < ${q.to} AND ${keyset}
      ${q.metric === undefined ? sql`` : sql`AND metrics ? ${q.metric}`}
    ORDER BY ts ${dir}, id ${dir}
    LIMIT ${q.limit + 1}`.execute(db)
  return { rows: r.rows.slice(0, q.limit), more: r.rows.length > q.limit }
}

export type SeriesPoint = {
  site_id: string
  system: string
  device_id: string
  metric: string
  t: Date
  n: number
  avg: number | null
  min: number | null
  max: number | null
  last: string | null
}

/** Rollup tables by bucket width; EcoFlow and status readings have no 5-minute rollups (src/rollup/sources.ts). */
const FIVE_MINUTES = 300_000
/** The raw tier's own buckets (the outer query bins them into the asked width). */
const RAW_WIDTH: Record<Bucket, string> = {
  '1m': '1 minute',
  '5m': '5 minutes',
  '1h': '1 hour',
  '6h': '1 hour',
  '1d': '1 hour',
}
const OUTER_WIDTH: Record<Bucket, string> = {
  '1m': '1 minute',
  '5m': '5 minutes',
  '1h': '1 hour',
  '6h': '6 hours',
  '1d': '1 day',
}

export type SeriesQuery = Filters & {
  /** One or more metrics (a device page asks for all of its charts at once). */
  metrics: readonly string[]
  from: Date
  to: Date
  bucket: Bucket
  /** Telemetry (default), EcoFlow polls or edge devices' status readings. */
  source?: SeriesSource | undefined
  /** The ecoflow_measurements columns that are readings (a metric of source ecoflow must be one). */
  ecoflowColumns?: readonly string[] | undefined
}

/**
 * Downsampled series of one metric. 1m buckets come from raw rows; 5m from rollup_5m (telemetry; the
 * other sources have no 5-minute rollups and are read raw); 1h from rollup_1h; 6h and 1d from rollup_6h
 * and rollup_1h. The part after the rollup watermark (the last minute or so that no pass has covered
 * yet) comes from raw rows, so the newest bucket is complete too. Every tier yields partial aggregates
 * (n, sum, min, max, last) that the outer query combines.
 */
export async function series(
  db: Kysely<DB>,
  q: SeriesQuery,
): Promise<{ from: Date; to: Date; rows: SeriesPoint[] }> {
  const source = q.source ?? 'measurements'
  const unknown =
    source === 'ecoflow' ? q.metrics.find((m) => !(q.ecoflowColumns ?? []).includes(m)) : undefined
  if (unknown !== undefined) {
    throw new HTTPException(400, {
      message: `metric: ${unknown.slice(0, 64)} is not an EcoFlow reading (${(q.ecoflowColumns ?? []).slice(0, 8).join(', ')}, …)`,
    })
  }
  const width = BUCKETS[q.bucket]
  const from = floor(q.from.getTime(), width)
  const to = Math.ceil(q.to.getTime() / width) * width
  const points = (to - from) / width
  if (points > MAX_POINTS) {
    throw new HTTPException(400, {
      message: `range is ${points} buckets of ${q.bucket}; at most ${MAX_POINTS}: use a coarser bucket or a shorter range`,
    })
  }
  const tiers: RawBuilder<unknown>[] = []
  let rawFrom = from
  const fromRollups = q.bucket !== '1m' && (q.bucket !== '5m' || source === 'measurements')
  if (fromRollups) {
    const wm = await sql<{
      watermark: Date
    }>`SELECT watermark FROM rollup_state WHERE source = ${source}`.execute(db)
    const watermark = wm.rows[0]?.watermark.getTime()
    if (watermark !== undefined && q.bucket === '5m') {
      // Five-minute buckets before the watermark's are complete in rollup_5m.
      const cutoff = Math.max(from, Math.min(to, floor(watermark, FIVE_MINUTES)))
      if (cutoff > from) tiers.push(rollupTier('rollup_5m', { source, q, from, to: cutoff }))
      rawFrom = cutoff
    } else if (watermark !== undefined) {
      // Hours before the watermark's hour are complete in rollup_1h (and six-hour periods in rollup_6h).
      const cutoff = Math.max(from, Math.min(to, floor(watermark, HOUR)))
      let hourFrom = from
      if (q.bucket === '1d' || q.bucket === '6h') {
        const sixCut = Math.max(from, floor(cutoff, SIX_HOURS))
        if (sixCut > from) tiers.push(rollupTier('rollup_6h', { source, q, from, to: sixCut }))
        hourFrom = sixCut
      }
      if (cutoff > hourFrom)
        tiers.push(rollupTier('rollup_1h', { source, q, from: hourFrom, to: cutoff }))
      rawFrom = cutoff
    }
  }
  if (rawFrom < to) tiers.push(rawTier({ source, q, from: rawFrom, to }, RAW_WIDTH[q.bucket]))
  const r = await sql<SeriesPoint>`
    SELECT site_id, system, device_id, metric, date_bin(${OUTER_WIDTH[q.bucket]}::interval, bucket, TIMESTAMPTZ 'epoch') AS t,
      sum(n)::int AS n, sum(sum) / NULLIF(sum(n), 0) AS avg, min(min) AS min, max(max) AS max,
      (array_agg(last ORDER BY bucket DESC) FILTER (WHERE last IS NOT NULL))[1] AS last
    FROM (${sql.join(tiers, sql` UNION ALL `)}) p
    GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    LIMIT ${MAX_SERIES_ROWS + 1}`.execute(db)
  if (r.rows.length > MAX_SERIES_ROWS)
    throw new HTTPException(400, {
      message: `more than ${MAX_SERIES_ROWS} points: name a device_id or narrow the range`,
    })
  return { from: new Date(from), to: new Date(to), rows: r.rows }
}

type Metrics = Filters & { metrics: readonly string[] }

/**
 * A rollup table's buckets of each metric. One branch per metric: with `metric = ANY(…)` the planner
 * may keep the metric out of the primary key's range and read every bucket of the device (55 ms for a
 * day of a device with a year of 5-minute buckets, against 1 ms).
 */
/** What a tier reads: the series' source and metrics over [from, to) in epoch ms. */
type Window = { source: SeriesSource; q: Metrics; from: number; to: number }

function rollupTier(
  table: 'rollup_5m' | 'rollup_1h' | 'rollup_6h',
  { source, q, from, to }: Window,
): RawBuilder<unknown> {
  return sql.join(
    q.metrics.map(
      (metric) => sql`
        SELECT site_id, system, device_id, metric, bucket, n, sum, min, max, last FROM ${sql.table(table)}
        WHERE source = ${source} AND metric = ${metric} AND ${where(q)} AND bucket >= ${new Date(from)} AND bucket < ${new Date(to)}`,
    ),
    sql` UNION ALL `,
  )
}

/**
 * Each source's raw samples as (site_id, system, device_id, metric, ts, v jsonb), named as the rollups
 * name them: EcoFlow rows have no site ('') and system `ecoflow`, status rows system `edge`.
 */
function rawSamples({ source, q, from, to }: Window): RawBuilder<unknown> {
  const range = sql`ts >= ${new Date(from)} AND ts < ${new Date(to)}`
  const keys = sql`unnest(${q.metrics}::text[]) AS k (metric)`
  if (source === 'measurements') {
    return sql`SELECT site_id, system, device_id, k.metric, ts, metrics -> k.metric AS v FROM measurements CROSS JOIN ${keys}
      WHERE ${where(q)} AND metrics ? k.metric AND ${range}`
  }
  if (source === 'status') {
    return sql`SELECT site_id, 'edge' AS system, device_id, k.metric, ts, status -> k.metric AS v FROM edge_device_status CROSS JOIN ${keys}
      WHERE ${where({ site_id: q.site_id, device_id: q.device_id })} AND ${q.system === undefined || q.system === 'edge' ? sql`true` : sql`false`}
        AND status ? k.metric AND ${range}`
  }
  // Each column is one of the known reading columns (checked by the caller), so it can be named.
  const columns = q.metrics.map((m) => sql`(${m}, to_jsonb(${sql.ref(m)}))`)
  return sql`SELECT '' AS site_id, 'ecoflow' AS system, device_sn AS device_id, c.metric, ts, c.v FROM ecoflow_measurements
    CROSS JOIN LATERAL (VALUES ${sql.join(columns)}) AS c (metric, v)
    WHERE ${q.site_id === undefined || q.site_id === '' ? sql`true` : sql`false`} AND ${q.system === undefined || q.system === 'ecoflow' ? sql`true` : sql`false`}
      AND ${q.device_id === undefined ? sql`true` : sql`device_sn = ${q.device_id}`} AND c.v IS NOT NULL AND c.v <> 'null'::jsonb AND ${range}`
}

function rawTier(w: Window, width: string): RawBuilder<unknown> {
  return sql`
    SELECT site_id, system, device_id, metric, date_bin(${width}::interval, ts, TIMESTAMPTZ 'epoch') AS bucket,
      count(*) FILTER (WHERE jsonb_typeof(v) = 'number')::int AS n,
      sum(CASE WHEN jsonb_typeof(v) = 'number' THEN v::float8 END) AS sum,
      min(CASE WHEN jsonb_typeof(v) = 'number' THEN v::float8 END) AS min,
      max(CASE WHEN jsonb_typeof(v) = 'number' THEN v::float8 END) AS max,
      (array_agg(v #>> '{}' ORDER BY ts DESC))[1] AS last
    FROM (${rawSamples(w)}) m
    GROUP BY 1, 2, 3, 4, 5`
}

/** The value a point reports for `agg`; `last` keeps strings (heater_state) and turns numbers back into numbers. */
export function pointValue(p: SeriesPoint, agg: Agg): number | string | null {
  if (agg !== 'last') return p[agg]
  if (p.last === null) return null
  const n = Number(p.last)
  return p.last.trim() !== '' && Number.isFinite(n) ? n : p.last
}

const floor = (t: number, width: number) => Math.floor(t / width) * width

export type LatestRow = {
  site_id: string
  system: string
  device_id: string
  ts: Date
  location: string | null
  metrics: Record<string, unknown>
}

/**
 * The newest row of every device (site_id, system, device_id), paginated by that key. The device list
 * comes from rollup_series plus rows created since the last rollup pass (BRIN on created_at), never
 * from a DISTINCT over the whole table.
 */
export async function latest(
  db: Kysely<DB>,
  q: Filters & { limit: number; after?: string[] | undefined },
): Promise<{ rows: LatestRow[]; more: boolean }> {
  const after = q.after
    ? sql`(k.site_id, k.system, k.device_id) > (${q.after[0]}, ${q.after[1]}, ${q.after[2]})`
    : sql`true`
  // The watermark is read first and passed as a value: as a subquery the planner cannot tell how few rows
  // are that recent, and for one device it read all of the device's rows (60 ms for a year of them).
  const recent = await recentSince(db, 'measurements')
  const r = await sql<LatestRow>`
    WITH k AS (
      SELECT site_id, system, device_id FROM rollup_series WHERE source = 'measurements' AND ${where(q)}
      UNION
      SELECT DISTINCT site_id, system, device_id FROM measurements
      WHERE ${where(q)} AND ${recent === null ? sql`true` : sql`created_at >= ${recent}`}
    )
    SELECT k.site_id, k.system, k.device_id, l.ts, l.location, l.metrics FROM k
    CROSS JOIN LATERAL (
      SELECT ts, location, metrics FROM measurements m
      WHERE m.site_id = k.site_id AND m.device_id = k.device_id AND m.system = k.system ORDER BY ts DESC LIMIT 1
    ) l
    WHERE ${after}
    ORDER BY 1, 2, 3 LIMIT ${q.limit + 1}`.execute(db)
  return { rows: r.rows.slice(0, q.limit), more: r.rows.length > q.limit }
}

/**
 * Rows created since this time may not be in rollup_series yet: an hour before the source's rollup
 * watermark, or null (no pass yet: every row).
 */
export async function recentSince(
  db: Kysely<DB>,
  source: 'measurements' | 'ecoflow',
): Promise<Date | null> {
  const r = await sql<{
    since: Date
  }>`SELECT watermark - interval '1 hour' AS since FROM rollup_state WHERE source = ${source}`.execute(
    db,
  )
  return r.rows[0]?.since ?? null
}

export type DeviceRow = {
  device_id: string
  site_id: string | null
  device_model: string
  firmware: string | null
  online: boolean | null
  last_seen: Date | null
  status: Record<string, unknown> | null
  status_at: Date | null
}

/** Registered devices (from their status messages) with their newest status JSON. */
export async function devices(
  db: Kysely<DB>,
  q: {
    site_id?: string | undefined
    device_id?: string | undefined
    limit: number
    after?: string | undefined
  },
): Promise<{ rows: DeviceRow[]; more: boolean }> {
  const r = await sql<DeviceRow>`
    SELECT d.device_id, d.site_id, d.device_model, d.current_firmware_version AS firmware, d.online, d.last_seen, s.status, s.ts AS status_at
    FROM devices d
    LEFT JOIN LATERAL (
      SELECT status, ts FROM edge_device_status e WHERE e.site_id = COALESCE(d.site_id, 'paku') AND e.device_id = d.device_id ORDER BY ts DESC LIMIT 1
    ) s ON true
    WHERE ${q.site_id === undefined ? sql`true` : sql`d.site_id = ${q.site_id}`}
      AND ${q.device_id === undefined ? sql`true` : sql`d.device_id = ${q.device_id}`}
      AND ${q.after === undefined ? sql`true` : sql`d.device_id > ${q.after}`}
    ORDER BY d.device_id LIMIT ${q.limit + 1}`.execute(db)
  return { rows: r.rows.slice(0, q.limit), more: r.rows.length > q.limit }
}

export type DeviceHistory = {
  site_id: string
  status: Array<{ ts: Date; status: Record<string, unknown> }>
  config: { config: Record<string, unknown>; updated_at: Date } | null
}

/**
 * An edge device's newest status messages (newest first) and the configuration it last reported
 * (edge_device_configs keeps one per device). The site defaults to the device's own, else paku.
 */
export async function deviceHistory(
  db: Kysely<DB>,
  q: { device_id: string; site_id?: string | undefined; limit: number },
): Promise<DeviceHistory> {
  const site =
    q.site_id ??
    (
      await sql<{
        site_id: string | null
      }>`SELECT site_id FROM devices WHERE device_id = ${q.device_id}`.execute(db)
    ).rows[0]?.site_id ??
    'paku'
  const [status, config] = await Promise.all([
    sql<{ ts: Date; status: Record<string, unknown> }>`
      SELECT ts, status FROM edge_device_status WHERE site_id = ${site} AND device_id = ${q.device_id} ORDER BY ts DESC LIMIT ${q.limit}`.execute(
      db,
    ),
    sql<{ config: Record<string, unknown>; updated_at: Date }>`
      SELECT config, updated_at FROM edge_device_configs WHERE site_id = ${site} AND device_id = ${q.device_id}`.execute(
      db,
    ),
  ])
  return { site_id: site, status: status.rows, config: config.rows[0] ?? null }
}
