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
}

const BUCKET_MS = 5 * 60_000
const HOUR_MS = 3_600_000
const SIX_HOURS_MS = 6 * HOUR_MS
/** Rows are found by created_at; a transaction that began before the last pass may commit after it. */
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

export type PassResult = { buckets: number; rows: number; ms: number; sources: Record<string, { buckets: number; ms: number }> }

/**
 * Keeps rollup_5m, rollup_1h and rollup_6h current: each pass finds the buckets that received rows
 * since the last one (by created_at, so late and replayed rows count), recomputes them from the raw rows
 * and then the coarser buckets from the finer ones. Recomputing is idempotent. Also applies retention.
 * A PostgreSQL advisory lock keeps it to one instance at a time when several share the database.
 */
export function createRollup(opts: RollupOptions) {
  const { config, log } = opts
  let timer: NodeJS.Timeout | undefined
  let running: Promise<unknown> | undefined
  let stopped = true
  /** Set by stop() only: a retention run in progress finishes its slice and leaves the rest for next time. */
  let stopping = false
  let lastPass: (PassResult & { at: string }) | null = null
  let lastError: string | null = null
  let lastRetention = 0

  /**
   * One source's catch-up, on one pinned connection holding a session advisory lock. Each statement
   * commits on its own (a year's backfill must not be one transaction of ten minutes); the watermark
   * moves only at the end, so a pass cut short (stop) is redone, idempotently, by the next one.
   */
  async function rollSource(db: Kysely<DB>, source: Source): Promise<{ buckets: number; rows: number }> {
    return db.connection().execute(async (conn) => {
      const key = sql`hashtext(${`paku.rollup.${source.name}`})`
      const locked = await sql<{ ok: boolean }>`SELECT pg_try_advisory_lock(${key}) AS ok`.execute(conn)
      if (!locked.rows[0]?.ok) return { buckets: 0, rows: 0 }
      try {
        return await catchUp(conn, source)
      } finally {
        await sql`SELECT pg_advisory_unlock(${key})`.execute(conn)
      }
    })
  }

  async function catchUp(conn: Kysely<DB>, source: Source): Promise<{ buckets: number; rows: number }> {
    const state = await sql<{ watermark: Date; now: Date }>`
      SELECT (SELECT watermark FROM rollup_state WHERE source = ${source.name}) AS watermark, statement_timestamp() AS now`.execute(conn)
    const { watermark, now } = state.rows[0] as { watermark: Date | null; now: Date }
    const step = source.fiveMinute ? BUCKET_MS : HOUR_MS
    const width = source.fiveMinute ? '5 minutes' : '1 hour'
    const dirty = await sql<{ b: Date }>`
      SELECT DISTINCT date_bin(${width}::interval, ts, TIMESTAMPTZ 'epoch') AS b FROM ${sql.table(source.table)}
      WHERE ${watermark === null ? sql`true` : sql`created_at > ${watermark}::timestamptz - ${OVERLAP}::interval`}
      ORDER BY 1`.execute(conn)
    let rows = 0
    const hours = new Set<number>()
    const upsert = (table: 'rollup_5m' | 'rollup_1h' | 'rollup_6h', select: RawBuilder<unknown>) => sql`
      INSERT INTO ${sql.table(table)} (source, site_id, system, device_id, metric, bucket, location, n, sum, min, max, last)
      SELECT ${source.name}, site_id, system, device_id, metric, bucket, location, n, sum, min, max, last FROM (${select}) a
      ON CONFLICT (source, site_id, system, device_id, metric, bucket) DO UPDATE SET location = EXCLUDED.location, n = EXCLUDED.n,
        sum = EXCLUDED.sum, min = EXCLUDED.min, max = EXCLUDED.max, last = EXCLUDED.last`
    const dirtyRanges = ranges(dirty.rows.map((r) => r.b.getTime()), step)
    const finest = source.fiveMinute ? 'rollup_5m' : 'rollup_1h'
    for (const [from, to] of dirtyRanges) {
      if (stopping) return { buckets: 0, rows }
      const r = await conn.transaction().execute(async (tx) => {
        // The planner takes jsonb_each for 100 rows a call and cannot tell how many metric keys there
        // are, so it expects millions of groups where there are hundreds: it would sort every sample
        // instead of hashing (sources.ts) and JIT-compile even a pass over a few rows (~0.6 s of CPU).
        // No parallel workers either: a background pass takes one core, not the ones ingest runs on.
        await sql`
          SELECT set_config('enable_sort', 'off', true), set_config('jit', 'off', true),
            set_config('max_parallel_workers_per_gather', '0', true)`.execute(tx)
        return upsert(finest, source.aggregate(new Date(from), new Date(to), width)).execute(tx)
      })
      rows += Number(r.numAffectedRows ?? 0)
      for (let h = Math.floor(from / HOUR_MS) * HOUR_MS; h < to; h += HOUR_MS) hours.add(h)
    }
    // Coarser tiers come from the finer ones: twelve or six rows each instead of every sample.
    const coarser: Array<{ table: 'rollup_1h' | 'rollup_6h'; from: 'rollup_5m' | 'rollup_1h'; width: string; ms: number; periods: Set<number> }> = []
    if (source.fiveMinute) coarser.push({ table: 'rollup_1h', from: 'rollup_5m', width: '1 hour', ms: HOUR_MS, periods: hours })
    const sixHours = new Set([...hours].map((h) => Math.floor(h / SIX_HOURS_MS) * SIX_HOURS_MS))
    coarser.push({ table: 'rollup_6h', from: 'rollup_1h', width: '6 hours', ms: SIX_HOURS_MS, periods: sixHours })
    for (const tier of coarser) {
      for (const [from, to] of ranges([...tier.periods].sort((a, b) => a - b), tier.ms)) {
        if (stopping) return { buckets: 0, rows }
        await upsert(tier.table, sql`
          SELECT site_id, system, device_id, metric, date_bin(${tier.width}::interval, bucket, TIMESTAMPTZ 'epoch') AS bucket,
            (array_agg(location ORDER BY bucket DESC))[1] AS location, sum(n)::int AS n, sum(sum) AS sum, min(min) AS min, max(max) AS max,
            (array_agg(last ORDER BY bucket DESC))[1] AS last
          FROM ${sql.table(tier.from)} WHERE source = ${source.name} AND bucket >= ${new Date(from)} AND bucket < ${new Date(to)}
          GROUP BY site_id, system, device_id, metric, 5`).execute(conn)
      }
    }
    if (dirtyRanges.length > 0) {
      await sql`
        INSERT INTO rollup_series (source, site_id, system, device_id, first_at, last_at)
        SELECT source, site_id, system, device_id, min(bucket), max(bucket) FROM ${sql.table(finest)}
        WHERE source = ${source.name} AND bucket >= ${new Date(dirtyRanges[0]?.[0] as number)} AND bucket < ${new Date(dirtyRanges[dirtyRanges.length - 1]?.[1] as number)}
        GROUP BY 1, 2, 3, 4
        ON CONFLICT (source, site_id, system, device_id) DO UPDATE SET first_at = LEAST(rollup_series.first_at, EXCLUDED.first_at),
          last_at = GREATEST(rollup_series.last_at, EXCLUDED.last_at)`.execute(conn)
    }
    await sql`
      INSERT INTO rollup_state (source, watermark) VALUES (${source.name}, ${now})
      ON CONFLICT (source) DO UPDATE SET watermark = EXCLUDED.watermark, updated_at = NOW()`.execute(conn)
    return { buckets: dirty.rows.length, rows }
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
            SELECT ctid FROM ${sql.table(table)} WHERE ${sql.ref(column)} < NOW() - make_interval(days => ${days}) LIMIT ${DELETE_SLICE}))`.execute(db)
        const n = Number(res.numAffectedRows ?? 0)
        total += n
        if (n < DELETE_SLICE || stopping) break
      }
      if (total > 0) deleted[table] = total
    }
    return deleted
  }

  async function tick(): Promise<void> {
    if (opts.leads && !opts.leads()) return
    try {
      const r = await pass()
      lastPass = { ...r, at: new Date().toISOString() }
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
    timer = setTimeout(() => {
      running = tick().finally(() => {
        running = undefined
        schedule()
      })
    }, config.intervalSeconds * 1000)
    timer.unref()
  }

  return {
    name: 'rollup',
    pass,
    applyRetention,
    async start(): Promise<void> {
      stopped = false
      stopping = false
      // The first pass (a backfill on an adopted database) runs in the background, not in start-up.
      running = tick().finally(() => {
        running = undefined
        schedule()
      })
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
    if (last && last[1] === s && s + step - last[0] <= Math.max(MAX_RANGE_MS, step)) last[1] = s + step
    else out.push([s, s + step])
  }
  return out
}

export type Rollup = ReturnType<typeof createRollup>
