import { HTTPException } from 'hono/http-exception'
import * as v from 'valibot'
import { validate } from '../util/validate.js'
import { validFilter } from './live.js'

/**
 * Query-string schemas of /api/v1. Strict objects: an unknown or misspelt parameter is a 400, not a
 * silently ignored filter that returns more than the caller asked for.
 */

/**
 * Each parameter carries its description (`v.description`), from which the OpenAPI document is
 * generated together with the rules (util/openapi.ts).
 */

/** A topic segment as ingest stores it: no MQTT separators or wildcards, no control characters. */
export const SEGMENT = /^[^/+#\u0000-\u001f]{1,128}$/
const segment = (name: string, description: string) =>
  v.optional(
    v.pipe(
      v.string(),
      v.regex(SEGMENT, `${name} must be 1–128 characters without / + # or control characters`),
      v.description(description),
    ),
  )

/** ISO 8601 with a date and, when a time is given, an offset or Z: `2026-01-15`, `2026-01-15T14:03:22Z`. */
const ISO = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2}))?$/
const instant = (name: string, description: string) =>
  v.optional(
    v.pipe(
      v.string(),
      v.regex(ISO, `${name} must be an ISO 8601 time such as 2026-01-15T14:03:22Z`),
      v.description(description),
      v.transform((s) => new Date(s)),
      v.check((d) => Number.isFinite(d.getTime()), `${name} is not a valid date`),
    ),
  )

/**
 * A non-negative integer in the query string. The pipe names the number it becomes (`toNumber`, then
 * `number`), and the document shows that number with its bounds (util/openapi.ts).
 */
export const intParam = (
  name: string,
  bounds: { min: number; max: number; digits: number },
  description: string,
) =>
  v.optional(
    v.pipe(
      v.string(),
      v.regex(new RegExp(`^\\d{1,${bounds.digits}}$`), `${name} must be an integer`),
      v.toNumber(),
      v.number(),
      v.integer(`${name} must be an integer`),
      v.minValue(bounds.min, `${name} must be at least ${bounds.min}`),
      v.maxValue(bounds.max, `${name} must be at most ${bounds.max}`),
      v.description(description),
    ),
  )

export const MAX_PAGE = 10_000
export const BUCKETS = {
  '1m': 60_000,
  '5m': 300_000,
  '1h': 3_600_000,
  '6h': 21_600_000,
  '1d': 86_400_000,
} as const
export type Bucket = keyof typeof BUCKETS
export const AGGS = ['avg', 'min', 'max', 'last'] as const
export type Agg = (typeof AGGS)[number]
/** Points per series a downsampled query may ask for (range ÷ bucket): 1m covers ~7 days, 5m ~34 days, 1h ~14 months. */
export const MAX_POINTS = 10_000

const common = {
  site_id: segment('site_id', 'Site, e.g. paku'),
  system: segment('system', 'System, e.g. sensors, heater'),
  device_id: segment('device_id', 'Device id'),
  format: v.optional(
    v.pipe(
      v.picklist(['json', 'csv'], 'format must be json or csv'),
      v.description('json (default) or csv; `Accept: text/csv` also selects CSV'),
    ),
  ),
}
const page = {
  limit: intParam(
    'limit',
    { min: 1, max: MAX_PAGE, digits: 9 },
    `Page size, 1–${MAX_PAGE} (default 1000)`,
  ),
  cursor: v.optional(
    v.pipe(
      v.string(),
      v.maxLength(512, 'cursor is too long'),
      v.description('The `next` of the previous page (CSV: the X-Next-Cursor header)'),
    ),
  ),
}
const range = {
  from: instant('from', 'Start, ISO 8601 (default: a day before `to`)'),
  to: instant('to', 'End, exclusive, ISO 8601 (default: now)'),
}

export const ListQuery = v.strictObject({
  ...common,
  ...page,
  metric: segment('metric', 'Only rows that have this metric; adds its `value`'),
  ...range,
  order: v.optional(
    v.pipe(
      v.picklist(['asc', 'desc'], 'order must be asc or desc'),
      v.description('desc (newest first, default) or asc'),
    ),
  ),
})
/** Metrics one series request may name. */
export const MAX_METRICS = 32
const METRIC_NAME = '[^/+#,\\u0000-\\u001f]{1,128}'
const METRIC_LIST = new RegExp(`^${METRIC_NAME}(,${METRIC_NAME}){0,${MAX_METRICS - 1}}$`)

/** What a series is read from: telemetry (measurements), EcoFlow polls, or edge devices' status readings. */
export const SOURCES = ['measurements', 'ecoflow', 'status'] as const
export type SeriesSource = (typeof SOURCES)[number]

export const SeriesQuery = v.strictObject({
  ...common,
  source: v.optional(
    v.pipe(
      v.picklist(SOURCES, 'source must be measurements, ecoflow or status'),
      v.description(
        'measurements (default, telemetry), ecoflow (EcoFlow polls: no site, system ecoflow, device_id the serial number) or status (edge device status, system edge)',
      ),
    ),
    'measurements',
  ),
  metric: segment(
    'metric',
    'The metric, e.g. temperature_c (source ecoflow: a column such as soc_percent; status: signal_strength_dbm, uptime_seconds, heater_status); this or `metrics`',
  ),
  // Several metrics of the same devices in one request (a device page's charts): comma-separated.
  metrics: v.optional(
    v.pipe(
      v.string(),
      v.regex(
        METRIC_LIST,
        `metrics must be 1–${MAX_METRICS} comma-separated metric names (each 1–128 characters without , / + # or control characters)`,
      ),
      v.description(
        `Several metrics at once, comma-separated (at most ${MAX_METRICS}): one series per device and metric`,
      ),
    ),
  ),
  ...range,
  bucket: v.optional(
    v.pipe(
      v.picklist(Object.keys(BUCKETS) as Bucket[], 'bucket must be 1m, 5m, 1h, 6h or 1d'),
      v.description(
        `1m (raw rows), 5m (rollup_5m), 1h (default; rollup_1h), 6h or 1d (rollup_6h); at most ${MAX_POINTS} buckets per query`,
      ),
    ),
    '1h',
  ),
  agg: v.optional(
    v.pipe(
      v.picklist(AGGS, 'agg must be avg, min, max or last'),
      v.description('avg (default), min, max or last'),
    ),
    'avg',
  ),
})
export const LatestQuery = v.strictObject({ ...common, ...page })
export const DevicesQuery = v.strictObject({
  site_id: segment('site_id', 'Site'),
  format: common.format,
  ...page,
})
export const FleetQuery = v.strictObject({
  site_id: segment('site_id', 'Site (EcoFlow stations have none)'),
  system: segment(
    'system',
    'A system the device reports under, e.g. sensors, heater, edge, ecoflow',
  ),
  device_id: segment('device_id', 'Device id'),
  q: v.optional(
    v.pipe(
      v.string(),
      v.maxLength(128, 'q must be at most 128 characters'),
      v.description(
        'Text in the id, location, model, kind, site or gateway (at most 128 characters)',
      ),
    ),
  ),
})
export const HistoryQuery = v.strictObject({
  site_id: segment('site_id', "Site (default: the device's, else paku)"),
  limit: intParam('limit', { min: 1, max: 500, digits: 9 }, 'Status messages, 1–500 (default 50)'),
})

const LIVE_TOPIC = 'topic must be an MQTT topic filter (+ and # wildcards), at most 256 characters'

/** Parses a query string against a schema; repeated parameters are an error (one value each). */
export function parseQuery<S extends v.GenericSchema>(
  schema: S,
  queries: Record<string, string[]>,
): v.InferOutput<S> {
  const flat: Record<string, string> = {}
  for (const [k, vals] of Object.entries(queries)) {
    if (vals.length !== 1) throw new HTTPException(400, { message: `${k}: give it once` })
    flat[k] = vals[0] as string
  }
  return validate(schema, flat)
}

/** The [from, to) window: to defaults to now, from to a day before to; from must be before to. */
export function timeRange(
  q: { from?: Date | undefined; to?: Date | undefined },
  now = new Date(),
): { from: Date; to: Date } {
  const to = q.to ?? now
  const from = q.from ?? new Date(to.getTime() - 86_400_000)
  if (from.getTime() >= to.getTime())
    throw new HTTPException(400, { message: 'from must be before to' })
  return { from, to }
}

/** Keyset cursors are opaque to clients: base64url JSON of the last row's sort key. */
export function encodeCursor(key: readonly string[]): string {
  return Buffer.from(JSON.stringify(key)).toString('base64url')
}

export function decodeCursor(cursor: string | undefined, parts: number): string[] | undefined {
  if (cursor === undefined) return undefined
  try {
    const key = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown
    if (
      Array.isArray(key) &&
      key.length === parts &&
      key.every((x) => typeof x === 'string' && x.length <= 256)
    )
      return key as string[]
  } catch {
    // falls through to the 400
  }
  throw new HTTPException(400, { message: 'cursor: not a cursor this API returned' })
}

/** The response format: `format=` wins, then `Accept: text/csv`. */
export function wantsCsv(format: string | undefined, accept: string | undefined): boolean {
  if (format) return format === 'csv'
  return /\btext\/csv\b/i.test(accept ?? '')
}

/**
 * The live stream's query. A plain object: other parameters are ignored, and the route reads one
 * `topic` (the first, when repeated) and answers a bad one with the check's message alone.
 */
export const LiveQuery = v.object({
  topic: v.optional(
    v.pipe(
      v.string(),
      v.maxLength(256, LIVE_TOPIC),
      v.check(validFilter, LIVE_TOPIC),
      v.description('MQTT topic filter (+ and # wildcards), default #'),
    ),
    '#',
  ),
})
