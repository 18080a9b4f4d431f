import { sql, type Kysely, type RawBuilder } from 'kysely'
import type { Config } from '../config/index.js'
import type { DB } from '../db/index.js'
import { errorText, type Logger } from '../log/index.js'
import { SOURCES, type Source } from './sources.js'

export type RollupOptions = {
  config: Config['rollup']
  retention: Config['retention']
  db: () => Kysely<DB>
  log: Logger
  /** With several instances, whether this one rolls up and applies retention now (docs/scaling.md). Default: always. */
  leads?: () => boolean
  /**
   * Whether ingest is catching up with a burst now. A pass that falls due meanwhile waits for it to end,
   * for up to one interval: a pass over a burst's rows takes seconds of PostgreSQL CPU, which the burst's
   * own writes (and their PUBACKs) would wait for on a small machine (docs/performance.md, "Rollup passes:
   * each row once, and out of bursts"). Default: never.
   */
  busy?: () => boolean
}

const BUCKET_MS = 5 * 60_000
const HOUR_MS = 3_600_000
const SIX_HOURS_MS = 6 * HOUR_MS
/**
 * How far before the last watermark the scan for new rows starts (created_at, BRIN): a row's created_at
 * is its transaction's start. The watermark waits for the transactions paku can see the start of (its
 * own role's); one of another role that was open for longer than this at a pass has its rows left out.
 */
const OVERLAP = '2 minutes'
/** Backfill works through history a day at a time: bounded memory and statement size. */
const MAX_RANGE_MS = 24 * HOUR_MS
/** Retention deletes in slices so no statement holds locks for long. */
const DELETE_SLICE = 10_000
/**
 * QoS 1/2 message ids kept for recognising redeliveries after a restart (ingest_dedup): a client
 * resends an unacknowledged message when it reconnects, within minutes; a week also covers a paku
 * that was down for days. Without it the table only grew, by every client id ever seen.
 */
const DEDUP_KEEP_DAYS = 7
/** How often a pass waiting for a burst to end looks again. */
const BUSY_RECHECK_MS = 1000

/**
 * Whether a raw row (alias `x`) was written by a transaction with an id below `xid` (an xid8 as text),
 * compared by age: right across the 32-bit wraparound of `xmin`, but only for rows written within the
 * last 2^31 transactions. A frozen row keeps its raw xmin, and the age of an older one wraps (it can even
 * read as negative, a transaction from the future), so callers decide such rows by created_at instead.
 */
function below(xid: string): RawBuilder<unknown> {
  return sql`age(x.xmin) > age((${xid}::xid8::text::numeric % 4294967296)::text::xid)`
}

/**
 * Planner settings for a pass's aggregation, for the rest of its transaction. The planner takes
 * jsonb_each for 100 rows a call and cannot tell how many metric keys there are, so it expects millions
 * of groups where there are hundreds: for a hashed source (sources.ts) it would sort every sample instead,
 * and for any it JIT-compiles even a pass over a few rows (~0.6 s of CPU). No parallel workers either: a
 * background pass takes one core, not the ones ingest runs on.
 */
async function plannerHints(tx: Kysely<DB>, source: Source): Promise<void> {
  await sql`
    SELECT set_config('enable_sort', ${source.hashed ? 'off' : 'on'}, true), set_config('jit', 'off', true),
      set_config('max_parallel_workers_per_gather', '0', true)`.execute(tx)
}

/** A bucket written again takes the new aggregates: they were computed from all of its rows. */
const REPLACE = sql`location = EXCLUDED.location, n = EXCLUDED.n, sum = EXCLUDED.sum, min = EXCLUDED.min, max = EXCLUDED.max,
  last = EXCLUDED.last, last_at = EXCLUDED.last_at`
/** A bucket written again adds the new rows' aggregates to its own; the newer last value wins. */
const MERGE = sql`
  n = t.n + EXCLUDED.n,
  sum = CASE WHEN t.sum IS NULL THEN EXCLUDED.sum WHEN EXCLUDED.sum IS NULL THEN t.sum ELSE t.sum + EXCLUDED.sum END,
  min = LEAST(t.min, EXCLUDED.min),
  max = GREATEST(t.max, EXCLUDED.max),
  location = CASE WHEN t.last_at IS NULL OR EXCLUDED.last_at >= t.last_at THEN EXCLUDED.location ELSE t.location END,
  last = CASE WHEN t.last_at IS NULL OR EXCLUDED.last_at >= t.last_at THEN EXCLUDED.last ELSE t.last END,
  last_at = GREATEST(t.last_at, EXCLUDED.last_at)`

/** Writes aggregates into a rollup table (alias `t`); `set` says what a bucket already there becomes. */
function upsert(
  source: Source,
  table: 'rollup_5m' | 'rollup_1h' | 'rollup_6h',
  select: RawBuilder<unknown>,
  set: RawBuilder<unknown> = REPLACE,
) {
  return sql`
    INSERT INTO ${sql.table(table)} AS t (source, site_id, system, device_id, metric, bucket, location, n, sum, min, max, last, last_at)
    SELECT ${source.name}, site_id, system, device_id, metric, bucket, location, n, sum, min, max, last, last_at FROM (${select}) a
    ON CONFLICT (source, site_id, system, device_id, metric, bucket) DO UPDATE SET ${set}`
}

/** Widens rollup_series by (site_id, system, device_id, first_at, last_at) rows. */
function upsertSeries(source: Source, select: RawBuilder<unknown>) {
  return sql`
    INSERT INTO rollup_series (source, site_id, system, device_id, first_at, last_at)
    SELECT ${source.name}, site_id, system, device_id, first_at, last_at FROM (${select}) s
    ON CONFLICT (source, site_id, system, device_id) DO UPDATE SET first_at = LEAST(rollup_series.first_at, EXCLUDED.first_at),
      last_at = GREATEST(rollup_series.last_at, EXCLUDED.last_at)`
}

/** A source's finest buckets: 5-minute for telemetry, hourly for the rest (sources.ts). */
function finestTier(source: Source) {
  return source.fiveMinute
    ? { width: '5 minutes' as const, finest: 'rollup_5m' as const, step: BUCKET_MS }
    : { width: '1 hour' as const, finest: 'rollup_1h' as const, step: HOUR_MS }
}

export { ECOFLOW_COLUMNS } from './sources.js'

export type PassResult = {
  buckets: number
  rows: number
  ms: number
  sources: Record<string, { buckets: number; ms: number }>
}

/**
 * Keeps rollup_5m, rollup_1h and rollup_6h current. Each pass adds the rows that became visible since
 * the last one (late and replayed rows too) to their buckets exactly once: the rows of the transactions
 * with ids from the last pass's horizon (the oldest transaction then running) up to this pass's, so a
 * row committed after a pass is in the next one and never in two. The coarser buckets are recomputed
 * from the finer ones. Also applies retention. A PostgreSQL advisory lock keeps it to one instance at a
 * time when several share the database.
 */
export function createRollup(opts: RollupOptions) {
  const { config, log } = opts
  let timer: NodeJS.Timeout | undefined
  let running: Promise<unknown> | undefined
  let stopped = true
  /** Set by stop() only: a retention run in progress finishes its slice and leaves the rest for next time. */
  let stopping = false
  let lastPass: (PassResult & { at: string; waitedMs: number }) | null = null
  let lastError: string | null = null
  let lastRetention = 0

  /**
   * One source's catch-up, on one pinned connection holding a session advisory lock. Each statement
   * commits on its own (a year's backfill must not be one transaction of ten minutes); the watermark
   * moves only at the end, so a pass cut short (stop) is redone, idempotently, by the next one.
   */
  async function rollSource(
    db: Kysely<DB>,
    source: Source,
  ): Promise<{ buckets: number; rows: number }> {
    return db.connection().execute(async (conn) => {
      const key = sql`hashtext(${`paku.rollup.${source.name}`})`
      const locked = await sql<{ ok: boolean }>`SELECT pg_try_advisory_lock(${key}) AS ok`.execute(
        conn,
      )
      if (!locked.rows[0]?.ok) return { buckets: 0, rows: 0 }
      try {
        return await catchUp(conn, source)
      } finally {
        await sql`SELECT pg_advisory_unlock(${key})`.execute(conn)
      }
    })
  }

  async function catchUp(
    conn: Kysely<DB>,
    source: Source,
  ): Promise<{ buckets: number; rows: number }> {
    // The next watermark: rows created (their transaction begun) before it are counted by this pass. A
    // transaction still open may write rows with an older created_at, so it is no later than the start
    // of the oldest one this role can see; the rows of those are found by the next pass's scan.
    const state = await sql<{
      watermark: Date | null
      counted_below: string | null
      horizon: string
      now: Date
    }>`
      SELECT s.watermark, s.counted_below::text, pg_snapshot_xmin(pg_current_snapshot())::text AS horizon,
        LEAST(statement_timestamp(), (SELECT min(xact_start) FROM pg_stat_activity
          WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())) AS now
      FROM (SELECT 1) one LEFT JOIN rollup_state s ON s.source = ${source.name}`.execute(conn)
    const {
      watermark,
      counted_below: countedBelow,
      horizon,
      now,
    } = state.rows[0] as {
      watermark: Date | null
      counted_below: string | null
      horizon: string
      now: Date
    }
    const save = (db: Kysely<DB>) =>
      sql`
      INSERT INTO rollup_state (source, watermark, counted_below) VALUES (${source.name}, ${now}, ${horizon}::xid8)
      ON CONFLICT (source) DO UPDATE SET watermark = EXCLUDED.watermark, counted_below = EXCLUDED.counted_below, updated_at = NOW()`.execute(
        db,
      )
    if (countedBelow === null || watermark === null) {
      const done = await recompute(conn, source, watermark, horizon, now)
      if (done === undefined) return { buckets: 0, rows: 0 }
      await save(conn)
      return done
    }
    return conn.transaction().execute(async (tx) => {
      const done = await merge(tx, source, watermark, countedBelow, horizon)
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
    source: Source,
    watermark: Date,
    countedBelow: string,
    horizon: string,
  ) {
    const { width, finest } = finestTier(source)
    await plannerHints(tx, source)
    // created_at only narrows the scan (BRIN); which rows count is decided by their transaction's id.
    const where = sql`x.created_at > ${watermark}::timestamptz - ${OVERLAP}::interval AND NOT ${below(countedBelow)} AND ${below(horizon)}`
    const touched = await sql<{ bucket: Date; groups: number }>`
      WITH up AS (${upsert(source, finest, source.aggregate(where, width), MERGE)} RETURNING site_id, system, device_id, bucket),
      series AS (${upsertSeries(source, sql`SELECT site_id, system, device_id, min(bucket) AS first_at, max(bucket) AS last_at FROM up GROUP BY 1, 2, 3`)})
      SELECT bucket, count(*)::int AS groups FROM up GROUP BY bucket`.execute(tx)
    // The coarser tiers need their sort (the ORDER BY in their aggregates): with sorting off the planner
    // walked rollup_5m's whole primary key instead, 5 s for a steady pass on a year of rollups.
    await sql`RESET enable_sort`.execute(tx)
    const buckets = touched.rows.map((r) => r.bucket.getTime())
    await rollCoarser(tx, source, buckets, () => false)
    return { buckets: buckets.length, rows: touched.rows.reduce((n, r) => n + r.groups, 0) }
  }

  /**
   * The first pass (on an adopted database, or after the upgrade that brought merging): every bucket that
   * got rows since the watermark (all, without one) is computed from all of its rows that no merge will
   * read: those of transactions below the horizon, and those created before `next` (the watermark this
   * pass saves) less the overlap. Each range commits on its own, as a year's backfill must not be one
   * transaction of ten minutes; a pass cut short leaves the state as it was and the next one starts over.
   */
  async function recompute(
    conn: Kysely<DB>,
    source: Source,
    watermark: Date | null,
    horizon: string,
    next: Date,
  ) {
    const { width, finest, step } = finestTier(source)
    const dirty = await sql<{ b: Date }>`
      SELECT DISTINCT date_bin(${width}::interval, ts, TIMESTAMPTZ 'epoch') AS b FROM ${sql.table(source.table)}
      WHERE ${watermark === null ? sql`true` : sql`created_at > ${watermark}::timestamptz - ${OVERLAP}::interval`}
      ORDER BY 1`.execute(conn)
    const dirtyRanges = ranges(
      dirty.rows.map((r) => r.b.getTime()),
      step,
    )
    // A row created before the next watermark less the overlap is never read by a merge, and its
    // transaction has ended: it counts whatever its xmin says. An adopted database's history may be
    // older than 2^31 transactions (the old collector committed every message), which below() misreads.
    const counted = sql`(x.created_at <= ${next}::timestamptz - ${OVERLAP}::interval OR ${below(horizon)})`
    let rows = 0
    for (const [from, to] of dirtyRanges) {
      if (stopping) return undefined
      const r = await conn.transaction().execute(async (tx) => {
        await plannerHints(tx, source)
        const where = sql`x.ts >= ${new Date(from)} AND x.ts < ${new Date(to)} AND ${counted}`
        return upsert(source, finest, source.aggregate(where, width)).execute(tx)
      })
      rows += Number(r.numAffectedRows ?? 0)
    }
    const buckets = dirty.rows.map((r) => r.b.getTime())
    if (stopping) return undefined
    await rollCoarser(conn, source, buckets, () => stopping)
    for (const [from, to] of dirtyRanges) {
      await upsertSeries(
        source,
        sql`
        SELECT site_id, system, device_id, min(bucket) AS first_at, max(bucket) AS last_at FROM ${sql.table(finest)}
        WHERE source = ${source.name} AND bucket >= ${new Date(from)} AND bucket < ${new Date(to)} GROUP BY 1, 2, 3`,
      ).execute(conn)
    }
    return stopping ? undefined : { buckets: buckets.length, rows }
  }

  /** Recomputes the coarser tiers of the periods that the given finest buckets fall in, unless told to stop. */
  async function rollCoarser(
    db: Kysely<DB>,
    source: Source,
    buckets: readonly number[],
    stop: () => boolean,
  ): Promise<void> {
    const hours = [...new Set(buckets.map((b) => Math.floor(b / HOUR_MS) * HOUR_MS))].sort(
      (a, b) => a - b,
    )
    const sixHours = [...new Set(hours.map((h) => Math.floor(h / SIX_HOURS_MS) * SIX_HOURS_MS))]
    const tiers: Array<{
      table: 'rollup_1h' | 'rollup_6h'
      from: 'rollup_5m' | 'rollup_1h'
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
        if (stop()) return
        await upsert(
          source,
          tier.table,
          sql`
          SELECT site_id, system, device_id, metric, date_bin(${tier.width}::interval, bucket, TIMESTAMPTZ 'epoch') AS bucket,
            (array_agg(location ORDER BY bucket DESC))[1] AS location, sum(n)::int AS n, sum(sum) AS sum, min(min) AS min, max(max) AS max,
            (array_agg(last ORDER BY bucket DESC))[1] AS last, max(last_at) AS last_at
          FROM ${sql.table(tier.from)} WHERE source = ${source.name} AND bucket >= ${new Date(from)} AND bucket < ${new Date(to)}
          GROUP BY site_id, system, device_id, metric, 5`,
        ).execute(db)
      }
    }
  }

  /** One pass over every source; returns what it recomputed. */
  async function pass(): Promise<PassResult> {
    const t0 = performance.now()
    let buckets = 0
    let rows = 0
    const sources: PassResult['sources'] = {}
    for (const source of SOURCES) {
      const s0 = performance.now()
      const r = await rollSource(opts.db(), source)
      sources[source.name] = { buckets: r.buckets, ms: Math.round(performance.now() - s0) }
      buckets += r.buckets
      rows += r.rows
    }
    return { buckets, rows, ms: Math.round(performance.now() - t0), sources }
  }

  /**
   * Deletes raw rows older than their configured retention, in slices; rollups outlive them. Old
   * redelivery ids go too, whatever the configuration.
   */
  async function applyRetention(): Promise<Record<string, number>> {
    const db = opts.db()
    const r = opts.retention
    const rules: Array<[string, string, number]> = [
      ['measurements', 'ts', r.measurementsDays],
      ['edge_device_status', 'ts', r.statusDays],
      ['ecoflow_measurements', 'ts', r.ecoflowDays],
      ['ingest_rejects', 'received_at', r.rejectsDays],
      ['rollup_5m', 'bucket', r.rollup5mDays],
      ['ingest_dedup', 'seen_at', DEDUP_KEEP_DAYS],
    ]
    const deleted: Record<string, number> = {}
    for (const [table, column, days] of rules) {
      if (days <= 0) continue
      let total = 0
      for (;;) {
        const res = await sql`
          DELETE FROM ${sql.table(table)} WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM ${sql.table(table)} WHERE ${sql.ref(column)} < NOW() - make_interval(days => ${days}) LIMIT ${DELETE_SLICE}))`.execute(
          db,
        )
        const n = Number(res.numAffectedRows ?? 0)
        total += n
        if (n < DELETE_SLICE || stopping) break
      }
      if (total > 0) deleted[table] = total
    }
    return deleted
  }

  async function tick(waitedMs: number): Promise<void> {
    if (opts.leads && !opts.leads()) return
    try {
      const r = await pass()
      lastPass = { ...r, at: new Date().toISOString(), waitedMs }
      if (r.buckets > 100) log.info('rolled up', { buckets: r.buckets, rows: r.rows, ms: r.ms })
      if (Date.now() - lastRetention > HOUR_MS) {
        lastRetention = Date.now()
        const deleted = await applyRetention()
        if (Object.keys(deleted).length > 0) log.info('retention applied', deleted)
      }
      if (lastError) log.info('rollup recovered')
      lastError = null
    } catch (err) {
      if (!lastError) log.warn('rollup failing', { err: errorText(err) })
      lastError = errorText(err)
    }
  }

  function schedule(): void {
    if (stopped) return
    timer = setTimeout(() => due(Date.now()), config.intervalSeconds * 1000)
    timer.unref()
  }

  /** A pass is due (since `since`): it runs now, unless ingest is busy and it has waited less than an interval. */
  function due(since: number): void {
    if (stopped) return
    const waited = Date.now() - since
    if (opts.busy?.() && waited < config.intervalSeconds * 1000) {
      timer = setTimeout(() => due(since), BUSY_RECHECK_MS)
      timer.unref()
      return
    }
    running = tick(waited).finally(() => {
      running = undefined
      schedule()
    })
  }

  return {
    name: 'rollup',
    pass,
    applyRetention,
    async start(): Promise<void> {
      stopped = false
      stopping = false
      // The first pass (a backfill on an adopted database) runs in the background, not in start-up.
      due(Date.now())
    },
    async stop(): Promise<void> {
      stopped = true
      stopping = true
      clearTimeout(timer)
      await running?.catch(() => undefined)
    },
    health(): { lastPass: typeof lastPass; lastError: string | null } {
      return { lastPass, lastError }
    },
  }
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

export type Rollup = ReturnType<typeof createRollup>
