import { sql, type Kysely, type Nullable } from 'kysely'
import type { DB, Row } from '../db/index.js'
import type { Source } from './sources.js'
import {
  below,
  finestTier,
  HOUR_MS,
  MERGE,
  OVERLAP,
  plannerHints,
  ranges,
  SIX_HOURS_MS,
  upsert,
  upsertSeries,
  type RollupTable,
} from './statements.js'

export type Counted = { buckets: number; rows: number }

/**
 * One source's catch-up, on one pinned connection holding a session advisory lock (another instance
 * holding it means nothing to do here). Each statement commits on its own (a year's backfill must not
 * be one transaction of ten minutes); the watermark moves only at the end, so a pass cut short
 * (`stopping`) is redone, idempotently, by the next one.
 */
export async function rollSource(
  db: Kysely<DB>,
  source: Source,
  stopping: () => boolean,
): Promise<Counted> {
  return db.connection().execute(async (conn) => {
    const key = sql`hashtext(${`paku.rollup.${source.name}`})`
    const locked = await sql<{ ok: boolean }>`SELECT pg_try_advisory_lock(${key}) AS ok`.execute(
      conn,
    )
    if (!locked.rows[0]?.ok) return { buckets: 0, rows: 0 }
    try {
      return await catchUp(conn, source, stopping)
    } finally {
      await sql`SELECT pg_advisory_unlock(${key})`.execute(conn)
    }
  })
}

/**
 * A source's rollup_state (null columns before its first pass), the oldest transaction id still
 * running (`horizon`, an xid8 as text) and the time the next watermark is taken from.
 */
type PassState = Nullable<Row<'rollup_state', 'watermark' | 'counted_below'>> & {
  horizon: string
  now: Date
}

async function catchUp(
  conn: Kysely<DB>,
  source: Source,
  stopping: () => boolean,
): Promise<Counted> {
  // The next watermark: rows created (their transaction begun) before it are counted by this pass. A
  // transaction still open may write rows with an older created_at, so it is no later than the start
  // of the oldest one this role can see; the rows of those are found by the next pass's scan.
  const state = await sql<PassState>`
    SELECT s.watermark, s.counted_below::text, pg_snapshot_xmin(pg_current_snapshot())::text AS horizon,
      LEAST(statement_timestamp(), (SELECT min(xact_start) FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())) AS now
    FROM (SELECT 1) one LEFT JOIN rollup_state s ON s.source = ${source.name}`.execute(conn)
  const { watermark, counted_below: countedBelow, horizon, now } = state.rows[0] as PassState
  const save = (db: Kysely<DB>) =>
    db
      .insertInto('rollup_state')
      .values({ source: source.name, watermark: now, counted_below: sql<string>`${horizon}::xid8` })
      .onConflict((oc) =>
        oc.column('source').doUpdateSet((eb) => ({
          watermark: eb.ref('excluded.watermark'),
          counted_below: eb.ref('excluded.counted_below'),
          updated_at: sql<Date>`NOW()`,
        })),
      )
      .execute()
  if (countedBelow === null || watermark === null) {
    const done = await recompute(conn, { source, watermark, horizon, next: now, stopping })
    if (done === undefined) return { buckets: 0, rows: 0 }
    await save(conn)
    return done
  }
  return conn.transaction().execute(async (tx) => {
    const done = await merge(tx, { source, watermark, countedBelow, horizon })
    await save(tx)
    return done
  })
}

/**
 * The usual pass, in one transaction with the state it moves on: the rows of the transactions that
 * ended since the last pass (ids from the last horizon up to this one) are aggregated and merged into
 * their buckets, so each row is aggregated once; the coarser tiers of the hours they touched are
 * recomputed from the finer ones (twelve or six rows each).
 */
async function merge(
  tx: Kysely<DB>,
  o: { source: Source; watermark: Date; countedBelow: string; horizon: string },
): Promise<Counted> {
  const { source } = o
  const { width, finest } = finestTier(source)
  await plannerHints(tx, source)
  // created_at only narrows the scan (BRIN); which rows count is decided by their transaction's id.
  const where = sql`x.created_at > ${o.watermark}::timestamptz - ${OVERLAP}::interval AND NOT ${below(o.countedBelow)} AND ${below(o.horizon)}`
  const up = upsert({ source, table: finest, select: source.aggregate(where, width), set: MERGE })
  const touched = await sql<Row<RollupTable, 'bucket'> & { groups: number }>`
    WITH up AS (${up} RETURNING site_id, system, device_id, bucket),
    series AS (${upsertSeries(source, sql`SELECT site_id, system, device_id, min(bucket) AS first_at, max(bucket) AS last_at FROM up GROUP BY 1, 2, 3`)})
    SELECT bucket, count(*)::int AS groups FROM up GROUP BY bucket`.execute(tx)
  // The coarser tiers need their sort (the ORDER BY in their aggregates): with sorting off the planner
  // walked rollup_5m's whole primary key instead, 5 s for a steady pass on a year of rollups.
  await sql`RESET enable_sort`.execute(tx)
  const buckets = touched.rows.map((r) => r.bucket.getTime())
  await rollCoarser(tx, { source, buckets, stop: () => false })
  return { buckets: buckets.length, rows: touched.rows.reduce((n, r) => n + r.groups, 0) }
}

/**
 * The first pass (on an adopted database, or after the upgrade that brought merging): every bucket that
 * got rows since the watermark (all, without one) is computed from all of its rows that no merge will
 * read: those of transactions below the horizon, and those created before `next` (the watermark this
 * pass saves) less the overlap. Each range commits on its own, as a year's backfill must not be one
 * transaction of ten minutes; a pass cut short (undefined) leaves the state as it was and the next one
 * starts over.
 */
async function recompute(
  conn: Kysely<DB>,
  o: {
    source: Source
    watermark: Date | null
    horizon: string
    next: Date
    stopping: () => boolean
  },
): Promise<Counted | undefined> {
  const { source, stopping } = o
  const { width, finest, step } = finestTier(source)
  const dirty = await sql<{ b: Date }>`
    SELECT DISTINCT date_bin(${width}::interval, ts, TIMESTAMPTZ 'epoch') AS b FROM ${sql.table(source.table)}
    WHERE ${o.watermark === null ? sql`true` : sql`created_at > ${o.watermark}::timestamptz - ${OVERLAP}::interval`}
    ORDER BY 1`.execute(conn)
  const dirtyRanges = ranges(
    dirty.rows.map((r) => r.b.getTime()),
    step,
  )
  // A row created before the next watermark less the overlap is never read by a merge, and its
  // transaction has ended: it counts whatever its xmin says. An adopted database's history may be
  // older than 2^31 transactions (the old collector committed every message), which below() misreads.
  const counted = sql`(x.created_at <= ${o.next}::timestamptz - ${OVERLAP}::interval OR ${below(o.horizon)})`
  let rows = 0
  for (const [from, to] of dirtyRanges) {
    if (stopping()) return undefined
    const r = await conn.transaction().execute(async (tx) => {
      await plannerHints(tx, source)
      const where = sql`x.ts >= ${new Date(from)} AND x.ts < ${new Date(to)} AND ${counted}`
      return upsert({ source, table: finest, select: source.aggregate(where, width) }).execute(tx)
    })
    rows += Number(r.numAffectedRows ?? 0)
  }
  const buckets = dirty.rows.map((r) => r.b.getTime())
  if (stopping()) return undefined
  await rollCoarser(conn, { source, buckets, stop: stopping })
  for (const [from, to] of dirtyRanges) {
    await upsertSeries(
      source,
      sql`
      SELECT site_id, system, device_id, min(bucket) AS first_at, max(bucket) AS last_at FROM ${sql.table(finest)}
      WHERE source = ${source.name} AND bucket >= ${new Date(from)} AND bucket < ${new Date(to)} GROUP BY 1, 2, 3`,
    ).execute(conn)
  }
  return stopping() ? undefined : { buckets: buckets.length, rows }
}

/** Recomputes the coarser tiers of the periods that the given finest buckets fall in, unless told to stop. */
async function rollCoarser(
  db: Kysely<DB>,
  o: { source: Source; buckets: readonly number[]; stop: () => boolean },
): Promise<void> {
  const { source } = o
  const hours = [...new Set(o.buckets.map((b) => Math.floor(b / HOUR_MS) * HOUR_MS))].sort(
    (a, b) => a - b,
  )
  const sixHours = [...new Set(hours.map((h) => Math.floor(h / SIX_HOURS_MS) * SIX_HOURS_MS))]
  const tiers: Array<{
    table: 'rollup_1h' | 'rollup_6h'
    from: Exclude<RollupTable, 'rollup_6h'>
    width: string
    ms: number
    periods: number[]
  }> = []
  if (source.fiveMinute)
    tiers.push({
      table: 'rollup_1h',
      from: 'rollup_5m',
      width: '1 hour',
      ms: HOUR_MS,
      periods: hours,
    })
  tiers.push({
    table: 'rollup_6h',
    from: 'rollup_1h',
    width: '6 hours',
    ms: SIX_HOURS_MS,
    periods: sixHours,
  })
  for (const tier of tiers) {
    for (const [from, to] of ranges(tier.periods, tier.ms)) {
      if (o.stop()) return
      await upsert({
        source,
        table: tier.table,
        select: sql`
        SELECT site_id, system, device_id, metric, date_bin(${tier.width}::interval, bucket, TIMESTAMPTZ 'epoch') AS bucket,
          (array_agg(location ORDER BY bucket DESC))[1] AS location, sum(n)::int AS n, sum(sum) AS sum, min(min) AS min, max(max) AS max,
          (array_agg(last ORDER BY bucket DESC))[1] AS last, max(last_at) AS last_at
        FROM ${sql.table(tier.from)} WHERE source = ${source.name} AND bucket >= ${new Date(from)} AND bucket < ${new Date(to)}
        GROUP BY site_id, system, device_id, metric, 5`,
      }).execute(db)
    }
  }
}
