import type { Kysely } from 'kysely'
import type { DB } from '../db/index.js'
import { errorText, type Logger } from '../log/index.js'
import type { createHistogram } from '../util/histogram.js'
import type { Reject, Row } from './records.js'
import type { Spool } from './spool.js'
import { isDataError, type Store } from './store.js'
import type { Batch, Queue } from './writer-queue.js'
import {
  backoffMs,
  endsBacklog,
  isBurstBatch,
  mayRelease,
  stepKind,
  takeCount,
  type CommitWindow,
  type WriterLimits,
  type WriterState,
} from './writer-policy.js'

/** The writer's state as its executor changes it: the policy's view, writable, plus the outage's start. */
export type ExecutorState = {
  -readonly [K in Exclude<keyof WriterState, 'window'>]: WriterState[K]
} & {
  /** The commit window, which hears of every row that waits. */
  readonly window: CommitWindow
  /** When writes started failing; undefined while they succeed. */
  failingSince: Date | undefined
  /** toSpool() is moving rows; a second caller leaves it to the first. */
  spooling: boolean
  /** The flush timer, while armed. */
  timer: NodeJS.Timeout | undefined
  /** Resolved once queued rows fall to half the high-water mark (or writes start failing). */
  room: { promise: Promise<void>; release: () => void } | undefined
}

/** Counters for stats(). */
export type StepCounts = {
  written: number
  spooled: number
  replayed: number
  dropped: number
  flushes: number
  failedFlushes: number
  lastFlushMs: number
}

/** What the steps work with: the writer's options, state, queue and counters. */
export type StepContext = {
  db: () => Kysely<DB>
  store: Store
  log: Logger
  spool: Spool | undefined
  toReject: (row: Row, reason: string) => Reject
  limits: WriterLimits
  state: ExecutorState
  queue: Queue
  counts: StepCounts
  /** Durations of committed batch writes, in seconds. */
  flushDurations: ReturnType<typeof createHistogram>
  /** The policy's clock (ms). */
  now: () => number
  /** The steps in progress. */
  steps: Set<Promise<void>>
}

/** Lets the producers waiting on room() go. */
export function releaseRoom(s: ExecutorState): void {
  s.room?.release()
  s.room = undefined
}

/** Takes the next batch out of the queue. */
export function takeBatch(ctx: StepContext): Batch {
  ctx.state.backlogEnded = false
  return ctx.queue.take(takeCount(ctx.state, ctx.limits))
}

/** The batch is committed or spooled: its producers hear so, and those waiting on room() once it is time. */
function settle(ctx: StepContext, b: Batch): void {
  ctx.queue.settle(b)
  if (mayRelease(ctx.state, ctx.limits)) releaseRoom(ctx.state)
}

/** One step, as the policy decides: spool, replay a segment, or write a batch. Never rejects. */
export async function runStep(ctx: StepContext): Promise<void> {
  const s = ctx.state
  switch (stepKind(s, ctx.now())) {
    case 'spool':
      s.exclusive = true
      await toSpool(ctx)
      return
    case 'replay':
      // One segment per step, then new rows are spooled (and acknowledged) behind it: a long replay
      // never holds up acknowledgements.
      s.exclusive = true
      await replaySegment(ctx)
      if (ctx.queue.length > 0) await toSpool(ctx)
      return
    case 'write':
      await writeStep(ctx)
      return
    case 'idle':
      return
  }
}

/** Writes the next batch to the database; on failure it goes back to the queue (and the spool). */
async function writeStep(ctx: StepContext): Promise<void> {
  const s = ctx.state
  const batch = takeBatch(ctx)
  if (batch.ordered > 0) s.exclusive = true
  const t0 = performance.now()
  if (isBurstBatch(batch.rows.length, ctx.limits)) s.burstBatchAt = ctx.now()
  try {
    await writeWithIsolation(ctx, batch.rows)
    const seconds = (performance.now() - t0) / 1000
    ctx.counts.written += batch.rows.length
    ctx.counts.flushes++
    ctx.counts.lastFlushMs = Math.round(seconds * 10_000) / 10
    ctx.flushDurations.observe(seconds)
    recovered(ctx)
    settle(ctx, batch)
    if (endsBacklog(s, ctx.limits, batch)) s.backlogEnded = true
  } catch (err) {
    ctx.queue.putBack(batch)
    failed(ctx, err)
    if (ctx.spool) await toSpool(ctx)
  }
}

/** A batch in one transaction; if PostgreSQL refuses a row's data, the others still go in. */
async function writeWithIsolation(
  ctx: StepContext,
  batch: readonly Row[],
  batchId?: string,
): Promise<void> {
  try {
    await ctx.store.writeBatch(ctx.db(), batch, batchId)
  } catch (err) {
    if (!isDataError(err)) throw err
    const failedRows = await ctx.store.writeIsolated(ctx.db(), batch, batchId)
    const rejects = failedRows.map((f) =>
      ctx.toReject(f.row, `database refused the row: ${f.error.message}`),
    )
    if (rejects.length > 0) {
      await ctx.store.writeBatch(ctx.db(), rejects)
      ctx.log.warn('rows refused by the database', {
        count: rejects.length,
        reason: rejects[0]?.reason,
      })
    }
  }
}

/** Moves queued rows into the spool (fsynced) and acknowledges them; stops (rows stay queued) when it is full. */
export async function toSpool(ctx: StepContext): Promise<void> {
  const { spool, state: s, log } = ctx
  if (!spool || s.spooling) return
  s.spooling = true
  try {
    while (ctx.queue.length > 0) {
      // Taken out of the queue while the append runs: a concurrent flush that fails puts its rows
      // back at the head meanwhile, and they must not be mistaken for these.
      const batch = takeBatch(ctx)
      let ok: boolean
      try {
        ok = await spool.append(batch.rows)
      } catch (err) {
        ctx.queue.putBack(batch)
        log.error('spool write failed; holding rows in memory', { err: errorText(err) })
        return
      }
      if (!ok) {
        ctx.queue.putBack(batch)
        if (!s.spoolFull)
          log.error('spool full: no longer acknowledging QoS 1/2 until the database is back', {
            bytes: spool.bytes,
          })
        s.spoolFull = true
        return
      }
      if (s.spoolFull) log.info('spool has room again; acknowledging')
      s.spoolFull = false
      ctx.counts.spooled += batch.rows.length
      settle(ctx, batch)
    }
  } finally {
    s.spooling = false
  }
}

/** Replays the oldest spool segment, many spooled batches per transaction. */
async function replaySegment(ctx: StepContext): Promise<void> {
  const { spool } = ctx
  if (!spool) return
  const head = await spool.head()
  if (!head) return
  try {
    for (const group of groupBatches(head.batches, ctx.limits.batchSize)) {
      try {
        ctx.counts.replayed += await ctx.store.writeSpooled(ctx.db(), group)
      } catch (err) {
        if (!isDataError(err)) throw err
        // A refused row: fall back to one batch at a time, isolating it.
        for (const b of group) {
          await writeWithIsolation(ctx, b.rows, b.id)
          ctx.counts.replayed += b.rows.length
        }
      }
    }
  } catch (err) {
    failed(ctx, err)
    return
  }
  await spool.drop(head.segment)
  recovered(ctx)
}

/** A write or replay failed: back off, and log the transition to failing. */
function failed(ctx: StepContext, err: unknown): void {
  const s = ctx.state
  // While the database is away rows go to the spool (or are dropped when it is full): holding
  // publishers back would only stall the devices.
  releaseRoom(s)
  ctx.counts.failedFlushes++
  s.failures++
  s.retryAt = ctx.now() + backoffMs(s.failures, ctx.limits)
  if (!s.failingSince) {
    s.failingSince = new Date()
    ctx.log.error(
      ctx.spool
        ? 'database writes failing; spooling to disk and retrying'
        : 'database writes failing; keeping rows in memory and retrying',
      {
        err: errorText(err),
        pending: ctx.queue.length + ctx.queue.taken,
      },
    )
  }
}

/** A write or replay committed: log the transition back, and stop backing off. */
function recovered(ctx: StepContext): void {
  const s = ctx.state
  if (s.failingSince) {
    ctx.log.info('database writes recovered', {
      failedForMs: Date.now() - s.failingSince.getTime(),
      retries: s.failures,
      spoolBytes: ctx.spool?.bytes ?? 0,
    })
  }
  s.failures = 0
  s.failingSince = undefined
}

/** Consecutive batches grouped up to about `size` rows each, order kept. */
function groupBatches<B extends { rows: readonly unknown[] }>(
  batches: readonly B[],
  size: number,
): B[][] {
  const groups: B[][] = []
  let current: B[] = []
  let rows = 0
  for (const b of batches) {
    if (current.length > 0 && rows + b.rows.length > size) {
      groups.push(current)
      current = []
      rows = 0
    }
    current.push(b)
    rows += b.rows.length
  }
  if (current.length > 0) groups.push(current)
  return groups
}
