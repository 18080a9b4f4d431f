import type { Kysely } from 'kysely'
import type { DB } from '../db/index.js'
import { errorText, type Logger } from '../log/index.js'
import type { Reject, Row } from './records.js'
import { isDataError, writeBatch, writeIsolated } from './store.js'

export type WriterOptions = {
  db: () => Kysely<DB>
  log: Logger
  batchSize: number
  flushIntervalMs: number
  maxPendingRows: number
  /** Called for rows PostgreSQL refused on their data, turned into rejects. */
  toReject: (row: Row, reason: string) => Reject
}

export type WriterStats = {
  written: number
  dropped: number
  pending: number
  flushes: number
  failedFlushes: number
  lastFlushMs: number
  failingSince: string | null
}

const MAX_BACKOFF_MS = 30_000

/**
 * The batch writer: rows wait in memory and are written as one transaction per batch, when a batch is
 * full or flushIntervalMs after the last flush. One flush at a time; a failed flush keeps its rows and
 * retries with exponential backoff, logging only the ok→failing and failing→ok transitions.
 */
export function createWriter(opts: WriterOptions) {
  const { log } = opts
  let pending: Row[] = []
  let timer: NodeJS.Timeout | undefined
  let running = false
  let inFlight: Promise<void> | undefined
  let failures = 0
  let failingSince: Date | undefined
  let droppedSinceLog = 0
  const stats = { written: 0, dropped: 0, flushes: 0, failedFlushes: 0, lastFlushMs: 0 }

  const schedule = (delayMs: number) => {
    if (!running) return
    clearTimeout(timer)
    timer = setTimeout(() => void flush(), delayMs)
    timer.unref?.()
  }

  const nextDelay = () =>
    failures > 0 ? Math.min(MAX_BACKOFF_MS, opts.flushIntervalMs * 2 ** Math.min(failures, 16)) : opts.flushIntervalMs

  /** Writes one batch; resolves when done (never rejects: failures keep the rows for the next try). */
  function flush(): Promise<void> {
    if (inFlight) return inFlight
    if (pending.length === 0) {
      schedule(opts.flushIntervalMs)
      return Promise.resolve()
    }
    inFlight = flushOnce().finally(() => {
      inFlight = undefined
      schedule(failures === 0 && pending.length >= opts.batchSize ? 0 : nextDelay())
    })
    return inFlight
  }

  async function flushOnce(): Promise<void> {
    const batch = pending.slice(0, opts.batchSize)
    const t0 = performance.now()
    try {
      try {
        await writeBatch(opts.db(), batch)
      } catch (err) {
        if (!isDataError(err)) throw err
        // One poisoned row must not hold back the rest: write row by row and reject what PostgreSQL refuses.
        const failed = await writeIsolated(opts.db(), batch)
        const rejects = failed.map((f) => opts.toReject(f.row, `database refused the row: ${f.error.message}`))
        if (rejects.length > 0) {
          await writeBatch(opts.db(), rejects)
          log.warn('rows refused by the database', { count: rejects.length, reason: rejects[0]?.reason })
        }
      }
      pending.splice(0, batch.length)
      stats.written += batch.length
      stats.flushes++
      stats.lastFlushMs = Math.round((performance.now() - t0) * 10) / 10
      if (failingSince) {
        log.info('database writes recovered', {
          failedForMs: Date.now() - failingSince.getTime(),
          retries: failures,
          pending: pending.length,
        })
      }
      failures = 0
      failingSince = undefined
    } catch (err) {
      stats.failedFlushes++
      failures++
      if (!failingSince) {
        failingSince = new Date()
        log.error('database writes failing; keeping rows in memory and retrying', { err: errorText(err), pending: pending.length })
      }
    }
  }

  return {
    /** Queues a row; false when the in-memory bound is reached and the row was dropped (counted). */
    push(row: Row): boolean {
      if (pending.length >= opts.maxPendingRows) {
        stats.dropped++
        if (droppedSinceLog++ === 0) log.error('pending rows at the limit; dropping new rows', { limit: opts.maxPendingRows })
        return false
      }
      droppedSinceLog = 0
      pending.push(row)
      if (pending.length === opts.batchSize && !inFlight && failures === 0) schedule(0)
      return true
    },
    flush,
    start(): void {
      running = true
      schedule(opts.flushIntervalMs)
    },
    /** Stops the timer and writes everything still pending; gives up (and says how much) if the database is down. */
    async stop(deadlineMs = 10_000): Promise<void> {
      running = false
      clearTimeout(timer)
      const until = Date.now() + deadlineMs
      if (inFlight) await inFlight
      while (pending.length > 0 && Date.now() < until) {
        const before = failures
        inFlight = flushOnce().finally(() => (inFlight = undefined))
        await inFlight
        if (failures > before) await new Promise((r) => setTimeout(r, Math.min(1000, Math.max(0, until - Date.now()))))
      }
      if (pending.length > 0) {
        log.error('stopped with rows not written', { rows: pending.length })
        stats.dropped += pending.length
        pending = []
      }
    },
    stats(): WriterStats {
      return { ...stats, pending: pending.length, failingSince: failingSince?.toISOString() ?? null }
    },
    get failing(): boolean {
      return failingSince !== undefined
    },
  }
}

export type Writer = ReturnType<typeof createWriter>
