/**
 * Grafana panel and query builders for dashboards over paku's EcoFlow table, used by the dashboard
 * generator (scripts/grafana-legacy.ts). The queries follow the provisioned dashboards' pattern: a time
 * series has one branch per source — raw polls up to 14 days, hourly rollups up to 90 days, 6-hour
 * rollups beyond (src/rollup) — and PostgreSQL keeps one of them at plan time, because Grafana's
 * $__timeFrom()/$__timeTo() are literals.
 */
import { ECOFLOW_COLUMNS } from '../src/rollup/sources.js'

export const DATASOURCE = { type: 'grafana-postgresql-datasource', uid: 'DS_POSTGRESQL' } as const

const SPAN = '$__timeTo()::timestamptz - $__timeFrom()::timestamptz'
const TIERS = [
  { table: 'ecoflow_measurements', when: `${SPAN} <= interval '14 days'` },
  { table: 'rollup_1h', when: `${SPAN} > interval '14 days' AND ${SPAN} <= interval '90 days'` },
  { table: 'rollup_6h', when: `${SPAN} > interval '90 days'` },
] as const

/**
 * One line of a chart. `expr` is SQL over EcoFlow columns written as `{column}`; in a time series each
 * stands for the column's average in the time bucket (so raw rows and rollups give the same thing), in a
 * latest-value stat for the newest poll's value. `skipZero` leaves out zero readings (a sensor or port that
 * reports 0 when absent).
 */
export type Series = { name: string; expr: string; skipZero?: boolean }

const COLUMN = /\{(\w+)\}/g

/** The EcoFlow columns `expr` reads; throws on a column paku does not store (or roll up). */
export function columnsOf(expr: string): string[] {
  const cols = [...new Set([...expr.matchAll(COLUMN)].map((m) => m[1] as string))]
  if (cols.length === 0) throw new Error(`no {column} in ${JSON.stringify(expr)}`)
  for (const c of cols)
    if (!(ECOFLOW_COLUMNS as readonly string[]).includes(c))
      throw new Error(`unknown EcoFlow column ${c}`)
  return cols
}

const quote = (s: string) => `'${s.replaceAll("'", "''")}'`

/**
 * A time series query (format time_series: time, metric, value) for one line of one device
 * (`$device_sn`), or of all devices together when `allDevices`.
 */
export function ecoflowSeriesSql(s: Series, opts: { allDevices?: boolean } = {}): string {
  const cols = columnsOf(s.expr)
  // One column: its rollup rows alone are read. Several: each column's rows are averaged apart (FILTER).
  const single = cols.length === 1
  const bare = s.expr.trim() === `{${cols[0]}}`
  const raw = s.expr.replace(COLUMN, (_, c: string) =>
    s.skipZero ? `AVG(NULLIF(${c}, 0))` : `AVG(${c})`,
  )
  const bucketAvg = (c: string) => {
    const avg = single
      ? 'SUM(sum) / NULLIF(SUM(n), 0)'
      : `SUM(sum) FILTER (WHERE metric = '${c}') / NULLIF(SUM(n) FILTER (WHERE metric = '${c}'), 0)`
    return s.skipZero ? `NULLIF(${avg}, 0)` : bare ? avg : `(${avg})`
  }
  const rolled = s.expr.replace(COLUMN, (_, c: string) => bucketAvg(c))
  const present =
    cols.length === 1
      ? s.skipZero
        ? `${cols[0]} <> 0`
        : `${cols[0]} IS NOT NULL`
      : `COALESCE(${cols.join(', ')}) IS NOT NULL`
  const metric = single ? `metric = '${cols[0]}'` : `metric IN (${cols.map(quote).join(', ')})`
  const [rawTier, ...rollupTiers] = TIERS
  const lines = [
    '-- Raw rows up to 14 days, hourly rollups up to 90 days, 6-hour beyond (one branch runs; the others are pruned at plan time).',
    `SELECT $__timeGroupAlias(ts, $__interval), ${quote(s.name)} AS metric, (${raw})::float8 AS value FROM ecoflow_measurements WHERE ${
      opts.allDevices ? '' : "device_sn = '$device_sn' AND "
    }$__timeFilter(ts) AND ${present} AND ${rawTier.when}`,
    'GROUP BY 1, 2',
  ]
  for (const tier of rollupTiers) {
    lines.push(
      'UNION ALL',
      `SELECT $__timeGroupAlias(bucket, $__interval), ${quote(s.name)} AS metric, (${rolled})::float8 AS value FROM ${tier.table} WHERE source = 'ecoflow' AND ${metric}${
        opts.allDevices ? '' : " AND device_id = '$device_sn'"
      } AND $__timeFilter(bucket) AND ${tier.when} GROUP BY 1, 2`,
    )
  }
  lines.push('ORDER BY 1')
  return lines.join('\n')
}

/** The newest poll's value of `expr` (row values, not averages), as a stat's (time, value). */
export function ecoflowLatestSql(expr: string): string {
  columnsOf(expr)
  const row = expr.replace(COLUMN, (_, c: string) => c)
  return `SELECT ts AS time, (${row})::float8 AS value FROM ecoflow_measurements WHERE device_sn = '$device_sn' AND (${row}) IS NOT NULL ORDER BY ts DESC LIMIT 1`
}

/** 1 when the device was polled in the last 5 minutes, else 0 (mapped to Online / Offline). */
export const ECOFLOW_ONLINE_SQL =
  "SELECT CASE WHEN MAX(ts) > NOW() - INTERVAL '5 minutes' THEN 1 ELSE 0 END AS value FROM ecoflow_measurements WHERE device_sn = '$device_sn'"

/** The `device_sn` variable: from rollup_series (a DISTINCT over a year of polls takes seconds), plus the newest polls. */
export const DEVICE_SN_VARIABLE = {
  name: 'device_sn',
  label: 'Device',
  type: 'query',
  datasource: DATASOURCE,
  refresh: 2,
  query:
    "SELECT DISTINCT device_sn FROM (SELECT device_id AS device_sn FROM rollup_series WHERE source = 'ecoflow' UNION SELECT device_sn FROM (SELECT device_sn FROM ecoflow_measurements ORDER BY ts DESC LIMIT 100) recent) d WHERE device_sn != '' ORDER BY 1",
  definition:
    "SELECT DISTINCT device_sn FROM (SELECT device_id AS device_sn FROM rollup_series WHERE source = 'ecoflow' UNION SELECT device_sn FROM (SELECT device_sn FROM ecoflow_measurements ORDER BY ts DESC LIMIT 100) recent) d WHERE device_sn != '' ORDER BY 1",
  multi: false,
  includeAll: false,
  sort: 1,
  description:
    'From rollup_series, which paku keeps current (a DISTINCT over a year of raw rows takes seconds), plus the newest rows.',
}

type Color = string
/** Threshold steps as [from, color]; the first one's `from` is null (everything below the next). */
export type Steps = Array<[number | null, Color]>
export type Mapping =
  | { type: 'value'; options: Record<string, { text: string; color?: Color }> }
  | {
      type: 'range'
      options: { from: number | null; to: number | null; result: { text: string; color?: Color } }
    }

/** A panel before layout: `w`/`h` in grid units (24 wide); ids and positions come from `layout`. */
export type PanelSpec = { w: number; h: number; panel: Record<string, unknown> }

const target = (refId: string, format: 'table' | 'time_series', rawSql: string) => ({
  refId,
  datasource: DATASOURCE,
  format,
  rawQuery: true,
  editorMode: 'code',
  rawSql,
})

export type ValueOptions = {
  unit?: string
  decimals?: number
  min?: number
  max?: number
  steps?: Steps
  mappings?: Mapping[]
  description?: string
}

function defaults(o: ValueOptions): Record<string, unknown> {
  const d: Record<string, unknown> = {}
  if (o.unit) d.unit = o.unit
  if (o.decimals !== undefined) d.decimals = o.decimals
  if (o.min !== undefined) d.min = o.min
  if (o.max !== undefined) d.max = o.max
  if (o.steps) {
    d.color = { mode: 'thresholds' }
    d.thresholds = { mode: 'absolute', steps: o.steps.map(([value, color]) => ({ color, value })) }
  }
  if (o.mappings) d.mappings = o.mappings
  return d
}

/** A stat or gauge over one table-format query (its `value` column, or every numeric column). */
export function valuePanel(
  o: ValueOptions & { type: 'stat' | 'gauge'; title: string; sql: string; w?: number; h?: number },
): PanelSpec {
  const options =
    o.type === 'gauge'
      ? {
          reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
          showThresholdLabels: false,
          showThresholdMarkers: true,
        }
      : {
          reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
          colorMode: 'value',
          graphMode: 'none',
          textMode: 'auto',
        }
  return {
    w: o.w ?? (o.type === 'gauge' ? 6 : 4),
    h: o.h ?? (o.type === 'gauge' ? 6 : 4),
    panel: {
      type: o.type,
      title: o.title,
      ...(o.description ? { description: o.description } : {}),
      datasource: DATASOURCE,
      fieldConfig: { defaults: defaults(o), overrides: [] },
      options,
      targets: [target('A', 'table', o.sql)],
    },
  }
}

/** A time series panel with one query per line. `overrides` are Grafana field overrides, passed through. */
export function chartPanel(o: {
  title: string
  unit?: string
  series: Series[]
  allDevices?: boolean
  description?: string
  custom?: Record<string, unknown>
  overrides?: unknown[]
  w?: number
  h?: number
}): PanelSpec {
  const d = defaults({ unit: o.unit })
  if (o.custom) d.custom = o.custom
  return {
    w: o.w ?? 12,
    h: o.h ?? 8,
    panel: {
      type: 'timeseries',
      title: o.title,
      ...(o.description ? { description: o.description } : {}),
      datasource: DATASOURCE,
      fieldConfig: { defaults: d, overrides: o.overrides ?? [] },
      options: { legend: { displayMode: 'list', placement: 'bottom' }, tooltip: { mode: 'multi' } },
      targets: o.series.map((s, i) =>
        target(
          String.fromCharCode(65 + i),
          'time_series',
          ecoflowSeriesSql(s, { allDevices: o.allDevices }),
        ),
      ),
    },
  }
}

/** A table over one table-format query. */
export function tablePanel(o: {
  title: string
  sql: string
  description?: string
  w?: number
  h?: number
}): PanelSpec {
  return {
    w: o.w ?? 24,
    h: o.h ?? 8,
    panel: {
      type: 'table',
      title: o.title,
      ...(o.description ? { description: o.description } : {}),
      datasource: DATASOURCE,
      fieldConfig: { defaults: {}, overrides: [] },
      options: { showHeader: true },
      targets: [target('A', 'table', o.sql)],
    },
  }
}

/**
 * Ids (1, 2, …) and grid positions: panels fill rows of 24 left to right in order, a row as high as its
 * highest panel, and a panel that does not fit starts the next row.
 */
export function layout(specs: PanelSpec[]): Array<Record<string, unknown>> {
  let x = 0
  let y = 0
  let rowH = 0
  return specs.map((s, i) => {
    if (x + s.w > 24) {
      y += rowH
      x = 0
      rowH = 0
    }
    const { type, title, ...rest } = s.panel
    const placed = { id: i + 1, type, title, gridPos: { h: s.h, w: s.w, x, y }, ...rest }
    x += s.w
    rowH = Math.max(rowH, s.h)
    return placed
  })
}
