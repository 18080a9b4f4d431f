import type { Kysely } from 'kysely'
import type { DB } from '../db/index.js'
import { errorText, type Logger } from '../log/index.js'
import type { Reject, Row } from './records.js'
import type { Spool } from './spool.js'
import { isDataError, writeBatch, writeIsolated, writeSpooled } from './store.js'

export type WriterOptions = {
  db: () => Kysely<DB>
  log: Logger
  batchSize: number
  flushIntervalMs: number
  /** In-memory bound: rows beyond it are dropped (counted) unless a producer waits for durability. */
  maxPendingRows: number
  /** From this many pending rows on, room() asks producers to wait (see there). */
  highWaterRows?: number
  /** Where batches go while PostgreSQL is unreachable; without one they wait in memory. */
  spool?: Spool
  /** Called for rows PostgreSQL refused on their data, turned into rejects. */
  toReject: (row: Row, reason: string) => Reject
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

const MAX_BACKOFF_MS = 30_000

/**
 * The batch writer. Rows wait in memory and are written as one transaction per batch. A row whose
 * producer waits for durability (a QoS 1/2 PUBACK) makes the next flush start at once (group commit):
 * low latency when idle, big batches under load. QoS 0-only batches wait up to flushIntervalMs.
 *
 * "Durable" means committed in PostgreSQL, or fsynced to the spool when PostgreSQL is unreachable.
 * While the spool holds anything, new batches go to the spool too, so rows reach the database in
 * arrival order; the spool is replayed first. One flush at a time; failures back off exponentially
 * and only the transitions are logged.
 */
export function createWriter(opts: WriterOptions) {
  const { log, spool } = opts
  let pending: Row[] = []
  /** Sequence number of the first row in `pending`; rows before it are durable. */
  let durableSeq = 0
  let waiters: Array<{ seq: number; resolve: () => void }> = []
  let timer: NodeJS.Timeout | undefined
  let running = false
  let inFlight: Promise<void> | undefined
  let failures = 0
  let failingSince: Date | undefined
  /** While failing, the database is tried again only from this time on; the spool meanwhile. */
  let retryAt = 0
  let spoolFull = false
  let droppedSinceLog = 0
  const highWater = opts.highWaterRows ?? Infinity
  /** Resolved once pending rows fall to half the high-water mark (or writes start failing). */
  let room: { promise: Promise<void>; release: () => void } | undefined
  const releaseRoom = () => {
    room?.release()
    room = undefined
  }
  const stats = { written: 0, spooled: 0, replayed: 0, dropped: 0, flushes: 0, failedFlushes: 0, lastFlushMs: 0 }

  const schedule = (delayMs: number) => {
    if (!running) return
    clearTimeout(timer)
    timer = setTimeout(() => {
      timer = undefined
      void flush()
    }, delayMs)
    timer.unref?.()
  }

  const backoff = () => Math.min(MAX_BACKOFF_MS, Math.max(100, opts.flushIntervalMs) * 2 ** Math.min(failures - 1, 16))

  /** Marks the first n pending rows durable and wakes the producers waiting on them. */
  const advance = (n: number) => {
    pending.splice(0, n)
    durableSeq += n
    let i = 0
    while (i < waiters.length && (waiters[i] as { seq: number }).seq < durableSeq) (waiters[i++] as { resolve: () => void }).resolve()
    if (i > 0) waiters = waiters.slice(i)
    if (room && pending.length <= highWater / 2) releaseRoom()
  }

  const nextDelay = () => {
    if (failures > 0) {
      // Acknowledge waiting producers from the spool now; try the database when the backoff ends.
      const untilRetry = Math.max(0, retryAt - Date.now())
      return spool && waiters.length > 0 && !spoolFull ? 0 : spool && pending.length > 0 ? Math.min(opts.flushIntervalMs, untilRetry) : untilRetry
    }
    if (spool && !spool.empty) return 0
    return waiters.length > 0 || pending.length >= opts.batchSize ? 0 : opts.flushIntervalMs
  }

  /** Runs one step (replay or write); resolves when done, never rejects. */
  function flush(): Promise<void> {
    if (inFlight) return inFlight
    inFlight = step().finally(() => {
      inFlight = undefined
      if (pending.length > 0 || (spool && !spool.empty)) schedule(nextDelay())
    })
    return inFlight
  }

  async function step(): Promise<void> {
    if (failures > 0 && Date.now() < retryAt) {
      await toSpool()
      return
    }
    if (spool && !spool.empty) {
      // One segment per step, then new rows are spooled (and acknowledged) behind it: a long replay
      // never holds up acknowledgements.
      await replaySegment()
      if (pending.length > 0) await toSpool()
      return
    }
    if (pending.length === 0) return
    const batch = pending.slice(0, opts.batchSize)
    const t0 = performance.now()
    try {
      await writeWithIsolation(batch)
      stats.written += batch.length
      stats.flushes++
      stats.lastFlushMs = Math.round((performance.now() - t0) * 10) / 10
      recovered()
      advance(batch.length)
    } catch (err) {
      failed(err)
      if (spool) await toSpool()
    }
  }

  /** A batch in one transaction; if PostgreSQL refuses a row's data, the others still go in. */
  async function writeWithIsolation(batch: readonly Row[], batchId?: string): Promise<void> {
    try {
      await writeBatch(opts.db(), batch, batchId)
    } catch (err) {
      if (!isDataError(err)) throw err
      const failedRows = await writeIsolated(opts.db(), batch, batchId)
      const rejects = failedRows.map((f) => opts.toReject(f.row, `database refused the row: ${f.error.message}`))
      if (rejects.length > 0) {
        await writeBatch(opts.db(), rejects)
        log.warn('rows refused by the database', { count: rejects.length, reason: rejects[0]?.reason })
      }
    }
  }

  /** Moves pending rows into the spool (fsynced) and acknowledges them; stops (rows stay pending) when it is full. */
  async function toSpool(): Promise<void> {
    if (!spool) return
    while (pending.length > 0) {
      const batch = pending.slice(0, opts.batchSize)
      let ok: boolean
      try {
        ok = await spool.append(batch)
      } catch (err) {
        log.error('spool write failed; holding rows in memory', { err: errorText(err) })
        return
      }
      if (!ok) {
        if (!spoolFull) log.error('spool full: no longer acknowledging QoS 1/2 until the database is back', { bytes: spool.bytes })
        spoolFull = true
        return
      }
      if (spoolFull) log.info('spool has room again; acknowledging')
      spoolFull = false
      stats.spooled += batch.length
      advance(batch.length)
    }
  }

  /** Replays the oldest spool segment, many spooled batches per transaction. */
  async function replaySegment(): Promise<void> {
    if (!spool) return
    const head = await spool.head()
    if (!head) return
    try {
      for (const group of groupBatches(head.batches, opts.batchSize)) {
        try {
          stats.replayed += await writeSpooled(opts.db(), group)
        } catch (err) {
          if (!isDataError(err)) throw err
          // A refused row: fall back to one batch at a time, isolating it.
          for (const b of group) {
            await writeWithIsolation(b.rows, b.id)
            stats.replayed += b.rows.length
          }
        }
      }
    } catch (err) {
      failed(err)
      return
    }
    await spool.drop(head.segment)
    recovered()
  }

  function failed(err: unknown) {
    // While the database is away rows go to the spool (or are dropped when it is full): holding
    // publishers back would only stall the devices.
    releaseRoom()
    stats.failedFlushes++
    failures++
    retryAt = Date.now() + backoff()
    if (!failingSince) {
      failingSince = new Date()
      log.error(spool ? 'database writes failing; spooling to disk and retrying' : 'database writes failing; keeping rows in memory and retrying', {
        err: errorText(err),
        pending: pending.length,
      })
    }
  }

  function recovered() {
    if (failingSince) {
      log.info('database writes recovered', { failedForMs: Date.now() - failingSince.getTime(), retries: failures, spoolBytes: spool?.bytes ?? 0 })
    }
    failures = 0
    failingSince = undefined
  }

  return {
    /**
     * Queues a row. With `durable`, returns a promise that resolves once the row is committed or
     * spooled; without, returns undefined, or false when the in-memory bound dropped the row.
     */
    push(row: Row, durable = false): Promise<void> | undefined | false {
      if (!durable && pending.length >= opts.maxPendingRows) {
        stats.dropped++
        if (droppedSinceLog++ === 0) log.error('pending rows at the limit; dropping new QoS 0 rows', { limit: opts.maxPendingRows })
        return false
      }
      droppedSinceLog = 0
      pending.push(row)
      const seq = durableSeq + pending.length - 1
      if (!durable) {
        if (pending.length === opts.batchSize && !inFlight && failures === 0) schedule(0)
        // A flush in progress reschedules itself when it ends; otherwise make sure a timer is armed.
        else if (!timer && !inFlight) schedule(failures > 0 ? Math.max(0, retryAt - Date.now()) : opts.flushIntervalMs)
        return undefined
      }
      const done = new Promise<void>((resolve) => waiters.push({ seq, resolve }))
      // Group commit: start now if idle; a flush in progress reschedules itself at 0 when it ends.
      if (!inFlight && (failures === 0 || spool)) schedule(0)
      return done
    },
    /**
     * Backpressure for producers that need no acknowledgement (QoS 0): undefined while fewer than
     * highWaterRows rows wait, else a promise that resolves once the writer has caught up to half of
     * that. The broker stops reading the publishing connection until it resolves (packet-guard hold()),
     * so TCP slows the publisher down, instead of rows piling up in memory until maxPendingRows drops them.
     * Not while writes fail: then the spool takes the rows.
     */
    room(): Promise<void> | undefined {
      if (pending.length < highWater || failures > 0 || !running) return undefined
      if (!room) {
        let release = () => {}
        const promise = new Promise<void>((resolve) => (release = resolve))
        room = { promise, release }
        // Someone is waiting now: do not let a partial batch sit out the flush interval.
        if (!inFlight) schedule(0)
      }
      return room.promise
    },
    /** Writes now, skipping any backoff: an explicit request means "try the database now". */
    flush(): Promise<void> {
      retryAt = 0
      return flush()
    },
    start(): void {
      running = true
      schedule(spool && !spool.empty ? 0 : opts.flushIntervalMs)
    },
    /** Stops the timer and writes everything still pending, to the database or else the spool. */
    async stop(deadlineMs = 10_000): Promise<void> {
      running = false
      releaseRoom()
      clearTimeout(timer)
      const until = Date.now() + deadlineMs
      if (inFlight) await inFlight
      while ((pending.length > 0 || (spool && !spool.empty && failures === 0)) && Date.now() < until) {
        const before = stats.written + stats.spooled + stats.replayed
        inFlight = step().finally(() => (inFlight = undefined))
        await inFlight
        if (stats.written + stats.spooled + stats.replayed === before) {
          if (spool) await toSpool()
          if (pending.length === 0) break
          await new Promise((r) => setTimeout(r, Math.min(500, Math.max(0, until - Date.now()))))
        }
      }
      if (pending.length > 0) {
        log.error('stopped with rows not written', { rows: pending.length })
        stats.dropped += pending.length
        pending = []
      }
    },
    stats(): WriterStats {
      return {
        ...stats,
        pending: pending.length,
        waiting: waiters.length,
        spoolBytes: spool?.bytes ?? 0,
        failingSince: failingSince?.toISOString() ?? null,
      }
    },
    get failing(): boolean {
      return failingSince !== undefined
    },
    /** Degraded: writes failing, or acknowledged rows still only in the spool. */
    get degraded(): boolean {
      return failingSince !== undefined || (spool !== undefined && !spool.empty)
    },
  }
}

export type Writer = ReturnType<typeof createWriter>

/** Consecutive batches grouped up to about `size` rows each, order kept. */
function groupBatches<B extends { rows: readonly unknown[] }>(batches: readonly B[], size: number): B[][] {
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
