import { sql, type Kysely, type RawBuilder } from 'kysely'
import type { DB } from '../db/index.js'
import type { Source } from './sources.js'

export const BUCKET_MS = 5 * 60_000
export const HOUR_MS = 3_600_000
export const SIX_HOURS_MS = 6 * HOUR_MS
/**
 * How far before the last watermark the scan for new rows starts (created_at, BRIN): a row's created_at
 * is its transaction's start. The watermark waits for the transactions paku can see the start of (its
 * own role's); one of another role that was open for longer than this at a pass has its rows left out.
 */
export const OVERLAP = '2 minutes'
/** Backfill works through history a day at a time: bounded memory and statement size. */
const MAX_RANGE_MS = 24 * HOUR_MS

export type RollupTable = 'rollup_5m' | 'rollup_1h' | 'rollup_6h'

/**
 * Whether a raw row (alias `x`) was written by a transaction with an id below `xid` (an xid8 as text),
 * compared by age: right across the 32-bit wraparound of `xmin`, but only for rows written within the
 * last 2^31 transactions. A frozen row keeps its raw xmin, and the age of an older one wraps (it can even
 * read as negative, a transaction from the future), so callers decide such rows by created_at instead.
 */
export function below(xid: string): RawBuilder<unknown> {
  return sql`age(x.xmin) > age((${xid}::xid8::text::numeric % 4294967296)::text::xid)`
}

/**
 * Planner settings for a pass's aggregation, for the rest of its transaction. The planner takes
 * jsonb_each for 100 rows a call and cannot tell how many metric keys there are, so it expects millions
 * of groups where there are hundreds: for a hashed source (sources.ts) it would sort every sample instead,
 * and for any it JIT-compiles even a pass over a few rows (~0.6 s of CPU). No parallel workers either: a
 * background pass takes one core, not the ones ingest runs on.
 */
export async function plannerHints(tx: Kysely<DB>, source: Source): Promise<void> {
  await sql`
    SELECT set_config('enable_sort', ${source.hashed ? 'off' : 'on'}, true), set_config('jit', 'off', true),
      set_config('max_parallel_workers_per_gather', '0', true)`.execute(tx)
}

/** A bucket written again takes the new aggregates: they were computed from all of its rows. */
const REPLACE = sql`location = EXCLUDED.location, n = EXCLUDED.n, sum = EXCLUDED.sum, min = EXCLUDED.min, max = EXCLUDED.max,
  last = EXCLUDED.last, last_at = EXCLUDED.last_at`
/** A bucket written again adds the new rows' aggregates to its own; the newer last value wins. */
export const MERGE = sql`
  n = t.n + EXCLUDED.n,
  sum = CASE WHEN t.sum IS NULL THEN EXCLUDED.sum WHEN EXCLUDED.sum IS NULL THEN t.sum ELSE t.sum + EXCLUDED.sum END,
  min = LEAST(t.min, EXCLUDED.min),
  max = GREATEST(t.max, EXCLUDED.max),
  location = CASE WHEN t.last_at IS NULL OR EXCLUDED.last_at >= t.last_at THEN EXCLUDED.location ELSE t.location END,
  last = CASE WHEN t.last_at IS NULL OR EXCLUDED.last_at >= t.last_at THEN EXCLUDED.last ELSE t.last END,
  last_at = GREATEST(t.last_at, EXCLUDED.last_at)`

/**
 * Writes the aggregates that `select` yields into a rollup table (alias `t`); `set` says what a bucket
 * already there becomes (default: the new aggregates replace it).
 */
export function upsert(o: {
  source: Source
  table: RollupTable
  select: RawBuilder<unknown>
  set?: RawBuilder<unknown>
}) {
  return sql`
    INSERT INTO ${sql.table(o.table)} AS t (source, site_id, system, device_id, metric, bucket, location, n, sum, min, max, last, last_at)
    SELECT ${o.source.name}, site_id, system, device_id, metric, bucket, location, n, sum, min, max, last, last_at FROM (${o.select}) a
    ON CONFLICT (source, site_id, system, device_id, metric, bucket) DO UPDATE SET ${o.set ?? REPLACE}`
}

/** Widens rollup_series by (site_id, system, device_id, first_at, last_at) rows. */
export function upsertSeries(source: Source, select: RawBuilder<unknown>) {
  return sql`
    INSERT INTO rollup_series (source, site_id, system, device_id, first_at, last_at)
    SELECT ${source.name}, site_id, system, device_id, first_at, last_at FROM (${select}) s
    ON CONFLICT (source, site_id, system, device_id) DO UPDATE SET first_at = LEAST(rollup_series.first_at, EXCLUDED.first_at),
      last_at = GREATEST(rollup_series.last_at, EXCLUDED.last_at)`
}

/** A source's finest buckets: 5-minute for telemetry, hourly for the rest (sources.ts). */
export function finestTier(source: Source) {
  return source.fiveMinute
    ? { width: '5 minutes' as const, finest: 'rollup_5m' as const, step: BUCKET_MS }
    : { width: '1 hour' as const, finest: 'rollup_1h' as const, step: HOUR_MS }
}

/** Sorted bucket starts → [from, to) ranges of consecutive buckets, none longer than MAX_RANGE_MS. */
export function ranges(starts: readonly number[], step: number): Array<[number, number]> {
  const out: Array<[number, number]> = []
  for (const s of starts) {
    const last = out[out.length - 1]
    if (last && last[1] === s && s + step - last[0] <= Math.max(MAX_RANGE_MS, step))
      last[1] = s + step
    else out.push([s, s + step])
  }
  return out
}
