import { sql, type RawBuilder } from 'kysely'
import { ECOFLOW_READING_COLUMNS } from '../db/index.js'

/**
 * The tables rolled up. Each source yields the aggregates of the raw rows (alias `x`) that a condition
 * selects, per bucket, as rows of (site_id, system, device_id, location, metric, bucket, n, sum, min,
 * max, last, last_at): `n`/`sum`/`min`/`max` over the numeric samples, `last` the bucket's last value as
 * text (strings such as heater_state keep theirs) and `last_at` its time.
 */
export type Width = '5 minutes' | '1 hour'
export type Source = {
  name: 'measurements' | 'ecoflow' | 'status'
  table: string
  /**
   * Whether the source gets 5-minute buckets. Telemetry at 10 s does (30 samples a bucket); EcoFlow at
   * 30 s and status at the devices' wake interval would gain little over their raw rows and would
   * multiply them (one row per column), so they get hourly buckets only and dashboards read them raw
   * up to 14 days.
   */
  fiveMinute: boolean
  /**
   * Whether its aggregate is written for hash aggregation (fromSamples), so the planner is told not to
   * sort (src/rollup plannerHints). EcoFlow's per-column aggregates sort by ts; told not to, the planner
   * walked its device index over all rows instead (0.65 s for a pass with nothing new, on a year of polls).
   */
  hashed: boolean
  /** `where` is a condition on the raw rows, aliased `x`. */
  aggregate: (where: RawBuilder<unknown>, width: Width) => RawBuilder<unknown>
}

const bucket = (width: Width) => sql`date_bin(${width}::interval, ts, TIMESTAMPTZ 'epoch')`

/**
 * Aggregates of (id, ts, site_id, system, device_id, metric, value jsonb) samples of `table`, whose
 * JSON column is `json`. n/sum/min/max and the newest (ts, id) are one hash aggregation; `last` and
 * `location` are then read from that row by its primary key. An ORDER BY inside an aggregate rules
 * hashing out, and sorting every sample (seven per telemetry row) cost more than the rest together
 * (docs/performance.md, "Rollup passes: each row once, and out of bursts"). A lookup by (device, ts)
 * instead of id was planned on other indexes when the table had no statistics yet, scanning a whole
 * site's rows for each group. OFFSET 0 keeps the planner from pulling the samples' subquery up into the
 * aggregation, where `num` was computed once for each of the four aggregates that read it: a pass over
 * 200k new rows took 2.6–2.7 s, 1.9–2.0 s with it.
 */
function fromSamples(o: {
  samples: RawBuilder<unknown>
  width: Width
  table: 'measurements' | 'edge_device_status'
  json: 'metrics' | 'status'
}): RawBuilder<unknown> {
  const { samples, width, table, json } = o
  const location = table === 'measurements' ? sql`r.location` : sql`NULL::text`
  return sql`
    SELECT a.site_id, a.system, a.device_id, l.location, a.metric, a.bucket, a.n, a.sum, a.min, a.max, l.last, a.last_at
    FROM (
      SELECT site_id, system, device_id, metric, ${bucket(width)} AS bucket, count(num)::int AS n, sum(num) AS sum,
        min(num) AS min, max(num) AS max, max(ts) AS last_at, (max(ARRAY[date_part('epoch', ts), id::float8]))[2]::bigint AS last_id
      FROM (SELECT s.*, CASE WHEN jsonb_typeof(s.value) = 'number' THEN s.value::float8 END AS num FROM (${samples}) s OFFSET 0) s
      GROUP BY 1, 2, 3, 4, 5) a
    LEFT JOIN LATERAL (
      SELECT ${location} AS location, r.${sql.ref(json)} ->> a.metric AS last FROM ${sql.table(table)} r WHERE r.id = a.last_id LIMIT 1
    ) l ON true`
}

/** ecoflow_measurements' reading columns (docs/compatibility.md, "Tables kept"): aggregated column by column, then unpivoted. */
export const ECOFLOW_COLUMNS = ECOFLOW_READING_COLUMNS

function ecoflow(where: RawBuilder<unknown>, width: Width): RawBuilder<unknown> {
  // One pass over the wide rows (no per-value JSON): ~10× faster than unpacking each row.
  const aggs = ECOFLOW_COLUMNS.map((c) => {
    const col = sql.ref(c)
    return sql`count(${col})::int, sum(${col})::float8, min(${col})::float8, max(${col})::float8,
      ((array_agg(${col} ORDER BY ts DESC) FILTER (WHERE ${col} IS NOT NULL))[1])::text, max(ts) FILTER (WHERE ${col} IS NOT NULL)`
  })
  const cols = (i: number) => ['n', 's', 'lo', 'hi', 'l', 't'].map((k) => `c${i}_${k}`)
  const values = ECOFLOW_COLUMNS.map(
    (c, i) => sql`(${c}, ${sql.join(cols(i).map((n) => sql.ref(`a.${n}`)))})`,
  )
  const names = ECOFLOW_COLUMNS.map((_, i) => sql.raw(cols(i).join(', ')))
  return sql`
    SELECT '' AS site_id, 'ecoflow' AS system, a.device_sn AS device_id, NULL::text AS location, v.metric, a.bucket, v.n, v.sum, v.min, v.max, v.last, v.last_at
    FROM (SELECT device_sn, ${bucket(width)} AS bucket, ${sql.join(aggs)} FROM ecoflow_measurements x WHERE ${where} GROUP BY 1, 2)
      AS a (device_sn, bucket, ${sql.join(names)})
    CROSS JOIN LATERAL (VALUES ${sql.join(values)}) AS v (metric, n, sum, min, max, last, last_at)
    WHERE v.n > 0`
}

export const SOURCES: readonly Source[] = [
  {
    name: 'measurements',
    table: 'measurements',
    fiveMinute: true,
    hashed: true,
    aggregate: (where, width) =>
      fromSamples({
        samples: sql`
          SELECT x.id, x.ts, x.site_id, x.system, x.device_id, kv.key AS metric, kv.value
          FROM measurements x CROSS JOIN LATERAL jsonb_each(x.metrics) kv WHERE ${where}`,
        width,
        table: 'measurements',
        json: 'metrics',
      }),
  },
  {
    name: 'ecoflow',
    table: 'ecoflow_measurements',
    fiveMinute: false,
    hashed: false,
    aggregate: ecoflow,
  },
  {
    name: 'status',
    table: 'edge_device_status',
    fiveMinute: false,
    hashed: true,
    // The readings the dashboards chart; the rest of a status (versions, names) is not a series.
    aggregate: (where, width) =>
      fromSamples({
        samples: sql`
          SELECT x.id, x.ts, x.site_id, 'edge' AS system, x.device_id, kv.key AS metric, kv.value
          FROM edge_device_status x CROSS JOIN LATERAL jsonb_each(x.status) kv
          WHERE ${where} AND kv.key IN ('signal_strength_dbm', 'uptime_seconds', 'heater_status')`,
        width,
        table: 'edge_device_status',
        json: 'status',
      }),
  },
]
