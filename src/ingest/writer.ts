import type { Kysely } from 'kysely'
import type { DB } from '../db/index.js'
import type { Logger } from '../log/index.js'
import type { HistogramSnapshot } from '../util/histogram.js'
import type { Reject, Row } from './records.js'
import type { Spool } from './spool.js'
import type { Store } from './store.js'
import {
  accepts,
  afterDurable,
  afterQueued,
  isBusy,
  mayStart,
  mustWait,
  queued,
  startDelay,
} from './writer-policy.js'
import { createRunner, createStepContext } from './writer-runner.js'
import { releaseRoom } from './writer-steps.js'

export { createCommitWindow } from './writer-policy.js'

export type WriterOptions = {
  db: () => Kysely<DB>
  /** The statements that write a batch (createStore: with OTA's writes for status and OTA rows). */
  store: Store
  log: Logger
  batchSize: number
  flushIntervalMs: number
  /**
   * Telemetry batches written at the same time, each on its own pool connection (default 1). One
   * writer leaves PostgreSQL idle while paku builds the next statement and waits for the commit; a
   * second one keeps it busy. Batches with status, config or OTA rows are always written alone.
   */
  concurrency?: number
  /** In-memory bound: rows beyond it are dropped (counted) unless a producer waits for durability. */
  maxPendingRows: number
  /** From this many pending rows on, room() asks producers to wait (see there). */
  highWaterRows?: number
  /** Where batches go while PostgreSQL is unreachable; without one they wait in memory. */
  spool?: Spool
  /** Called for rows PostgreSQL refused on their data, turned into rejects. */
  toReject: (row: Row, reason: string) => Reject
  /**
   * How long a row whose producer waits (QoS 1/2) may wait for others to share its commit, when they
   * arrive often enough to (at least two more expected in the window); 0 or rarer rows: at once.
   */
  commitWindowMs?: number
  /** Monotonic clock in ms (tests); performance.now by default. */
  now?: () => number
}

export type WriterStats = {
  written: number
  spooled: number
  replayed: number
  dropped: number
  pending: number
  waiting: number
  spoolBytes: number
  flushes: number
  failedFlushes: number
  lastFlushMs: number
  failingSince: string | null
}

/**
 * The batch writer. Rows wait in memory and are written as one transaction per batch. A row whose
 * producer waits for durability (a QoS 1/2 PUBACK) makes the next flush start at once (group commit):
 * low latency when idle, big batches under load. QoS 0-only batches wait up to flushIntervalMs.
 *
 * "Durable" means committed in PostgreSQL, or fsynced to the spool when PostgreSQL is unreachable.
 * While the spool holds anything, new batches go to the spool too, so rows reach the database in
 * arrival order; the spool is replayed first. Up to `concurrency` telemetry-only batches are written
 * at once (they may commit in either order: measurements carry their own time); anything else —
 * a batch with status, config or OTA rows, the spool, a replay — runs alone. Failures back off
 * exponentially and only the transitions are logged.
 *
 * writer-policy.ts decides; this function and writer-runner.ts carry the decisions out (timer, steps
 * in progress, the promises producers wait on), and writer-steps.ts holds the steps themselves.
 */
export function createWriter(opts: WriterOptions) {
  const { log, spool } = opts
  const ctx = createStepContext(opts)
  const { state, limits, queue, counts, now } = ctx
  const runner = createRunner(ctx)
  const { schedule } = runner
  let droppedSinceLog = 0

  return {
    /**
     * Queues a row. With `durable`, returns a promise that resolves once the row is committed or
     * spooled; without, returns undefined, or false when the in-memory bound dropped the row.
     */
    push(row: Row, durable = false): Promise<void> | undefined | false {
      if (!accepts(state, limits, durable)) {
        counts.dropped++
        if (droppedSinceLog++ === 0)
          log.error('pending rows at the limit; dropping new QoS 0 rows', {
            limit: opts.maxPendingRows,
          })
        return false
      }
      droppedSinceLog = 0
      const at = now()
      if (!durable) {
        queue.push(row, undefined)
        schedule(afterQueued(state, limits, at))
        return undefined
      }
      state.window.arrived(at, queue.durable === 0)
      const ack = new Promise<void>((resolve) => queue.push(row, resolve))
      schedule(afterDurable(state, limits, at))
      return ack
    },
    /**
     * Backpressure for producers that need no acknowledgement (QoS 0): undefined while fewer than
     * highWaterRows rows wait, else a promise that resolves once the writer has caught up to half of
     * that. The broker stops reading the publishing connection until it resolves (packet-guard hold()),
     * so TCP slows the publisher down, instead of rows piling up in memory until maxPendingRows drops them.
     * Not while writes fail: then the spool takes the rows.
     */
    room(): Promise<void> | undefined {
      if (!mustWait(state, limits)) return undefined
      if (!state.room) {
        let release = () => {}
        const promise = new Promise<void>((resolve) => (release = resolve))
        state.room = { promise, release }
        // Someone is waiting now: do not let a partial batch sit out the flush interval.
        if (mayStart(state, limits)) schedule(0)
      }
      return state.room.promise
    },
    /** Writes now, skipping any backoff: an explicit request means "try the database now". */
    flush(): Promise<void> {
      state.retryAt = 0
      return runner.flush()
    },
    start(): void {
      state.running = true
      schedule(startDelay(state, limits))
    },
    /** Stops the timer and writes everything still pending, to the database or else the spool. */
    async stop(deadlineMs = 10_000): Promise<void> {
      state.running = false
      releaseRoom(state)
      clearTimeout(state.timer)
      const left = await runner.drain(deadlineMs)
      if (left > 0) {
        queue.clear()
        log.error('stopped with rows not written', { rows: left })
        counts.dropped += left
      }
    },
    stats(): WriterStats {
      return {
        ...counts,
        pending: queued(state),
        waiting: queue.durable + queue.takenDurable,
        spoolBytes: spool?.bytes ?? 0,
        failingSince: state.failingSince?.toISOString() ?? null,
      }
    },
    /**
     * How long the committed batch writes took, for a histogram: what a QoS 1 PUBACK waits for besides
     * the batch before it. `lastFlushMs` alone hides the rare slow one between two scrapes.
     */
    flushDurations(): HistogramSnapshot {
      return ctx.flushDurations.snapshot()
    },
    get failing(): boolean {
      return state.failingSince !== undefined
    },
    /**
     * Rows are arriving faster than they are written: a fifth of a batch or more is in memory and not
     * yet durable (at a steady 1,000 msg/s a handful are; in a burst, the whole of the senders' window),
     * or a flush took that many within the last BUSY_HOLD_MS (writer-policy.ts).
     */
    get busy(): boolean {
      return isBusy(state, limits, now())
    },
    /** Degraded: writes failing, or acknowledged rows still only in the spool. */
    get degraded(): boolean {
      return state.failingSince !== undefined || state.spooled
    },
  }
}

export type Writer = ReturnType<typeof createWriter>
