import type { Kysely } from 'kysely'
import type { Config } from '../config/index.js'
import type { DB } from '../db/index.js'
import { errorText, type Logger } from '../log/index.js'
import { rollSource } from './catch-up.js'
import { applyRetention } from './retention.js'
import { SOURCES } from './sources.js'
import { HOUR_MS } from './statements.js'

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

/** How often a pass waiting for a burst to end looks again. */
const BUSY_RECHECK_MS = 1000

export { ECOFLOW_COLUMNS } from './sources.js'
export { ranges } from './statements.js'

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

  /** One pass over every source; returns what it recomputed. */
  async function pass(): Promise<PassResult> {
    const t0 = performance.now()
    let buckets = 0
    let rows = 0
    const sources: PassResult['sources'] = {}
    for (const source of SOURCES) {
      const s0 = performance.now()
      const r = await rollSource(opts.db(), source, () => stopping)
      sources[source.name] = { buckets: r.buckets, ms: Math.round(performance.now() - s0) }
      buckets += r.buckets
      rows += r.rows
    }
    return { buckets, rows, ms: Math.round(performance.now() - t0), sources }
  }

  /** Deletes the rows past their retention now (retention.ts); stop() cuts it short. */
  function retention(): Promise<Record<string, number>> {
    return applyRetention(opts.db(), opts.retention, () => stopping)
  }

  async function tick(waitedMs: number): Promise<void> {
    if (opts.leads && !opts.leads()) return
    try {
      const r = await pass()
      lastPass = { ...r, at: new Date().toISOString(), waitedMs }
      if (r.buckets > 100) log.info('rolled up', { buckets: r.buckets, rows: r.rows, ms: r.ms })
      if (Date.now() - lastRetention > HOUR_MS) {
        lastRetention = Date.now()
        const deleted = await retention()
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
    applyRetention: retention,
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

export type Rollup = ReturnType<typeof createRollup>
