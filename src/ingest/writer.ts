import type { Kysely } from 'kysely'
import type { DB } from '../db/index.js'
import { errorText, type Logger } from '../log/index.js'
import { createHistogram, type HistogramSnapshot } from '../util/histogram.js'
import type { Reject, Row } from './records.js'
import type { Spool } from './spool.js'
import { isDataError, type Store } from './store.js'

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

const MAX_BACKOFF_MS = 30_000
/**
 * How long the writer still counts as busy after it last took a burst-sized batch: the queue of a burst
 * can run dry for a moment between two reads (seen as a 10 s rollup pass in the middle of a 1M burst;
 * docs/performance.md, "Rollup passes: each row once, and out of bursts"), and background work asking
 * once a second must not take that for the burst's end.
 */
const BUSY_HOLD_MS = 1000
/**
 * Upper bounds in seconds of the batch-write duration histogram. A healthy batch commits in 1–50 ms;
 * a slow commit (fsync) or PostgreSQL's GIN merge shows as 0.1 s and up (docs/performance.md, "Where the
 * PUBACK tail comes from").
 */
const FLUSH_BOUNDS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/** Rows taken from the queue together, with the acknowledgements of those whose producer waits. */
type Batch = {
  rows: Row[]
  acks: Array<(() => void) | undefined>
  durable: number
  ordered: number
}

/** Measurements and rejects may be written in any order; every other kind keeps arrival order. */
const unordered = (row: Row) => row.kind === 'measurement' || row.kind === 'reject'

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
 */
export function createWriter(opts: WriterOptions) {
  const { log, spool } = opts
  const concurrency = Math.max(1, opts.concurrency ?? 1)
  const eagerRows = Math.max(1, Math.floor(opts.batchSize / 5))
  const now = opts.now ?? (() => performance.now())
  const window = createCommitWindow(opts.commitWindowMs ?? 0)
  /** Rows not yet taken by a flush, oldest first, with the acknowledgement of each (parallel array). */
  let pending: Row[] = []
  let pendingAcks: Array<(() => void) | undefined> = []
  /** How many of the pending rows have a producer waiting, and how many must keep their order. */
  let pendingDurable = 0
  let pendingOrdered = 0
  /** Rows pushed so far: a flush that saw none arrive while it wrote knows the input has gone quiet. */
  let arrivals = 0
  /** A full batch ended a backlog and left rows behind: they go now, not after the flush interval. */
  let backlogEnded = false
  /** When a flush last took a fifth of a batch or more (performance.now()). */
  let burstBatchAt = -Infinity
  /** Rows taken by flushes in progress and not yet durable. */
  let takenRows = 0
  let takenDurable = 0
  let timer: NodeJS.Timeout | undefined
  /** When the armed timer fires (now() time). */
  let timerDue = 0
  let running = false
  const steps = new Set<Promise<void>>()
  /** A step that must run alone (spool, replay, a batch with ordered rows) is in progress. */
  let exclusive = false
  /** toSpool() is moving rows; a second caller leaves it to the first. */
  let spooling = false
  let failures = 0
  let failingSince: Date | undefined
  /** While failing, the database is tried again only from this time on; the spool meanwhile. */
  let retryAt = 0
  let spoolFull = false
  let droppedSinceLog = 0
  const highWater = opts.highWaterRows ?? Infinity
  /** Resolved once queued rows fall to half the high-water mark (or writes start failing). */
  let room: { promise: Promise<void>; release: () => void } | undefined
  const releaseRoom = () => {
    room?.release()
    room = undefined
  }
  const stats = {
    written: 0,
    spooled: 0,
    replayed: 0,
    dropped: 0,
    flushes: 0,
    failedFlushes: 0,
    lastFlushMs: 0,
  }
  /** How long the committed batch writes took, in seconds. */
  const flushDurations = createHistogram(FLUSH_BOUNDS_S)

  /** Rows in memory that are not durable yet: waiting, or in a flush in progress. */
  const queued = () => pending.length + takenRows

  const schedule = (delayMs: number) => {
    if (!running) return
    clearTimeout(timer)
    timerDue = now() + delayMs
    timer = setTimeout(() => {
      timer = undefined
      pump()
    }, delayMs)
    timer.unref?.()
  }

  const backoff = () =>
    Math.min(MAX_BACKOFF_MS, Math.max(100, opts.flushIntervalMs) * 2 ** Math.min(failures - 1, 16))

  /** Takes the oldest pending rows (at most one batch) out of the queue. */
  function take(): Batch {
    const n = Math.min(pending.length, opts.batchSize)
    const rows = pending.splice(0, n)
    const acks = pendingAcks.splice(0, n)
    let durable = 0
    let ordered = 0
    for (let i = 0; i < n; i++) {
      if (acks[i]) durable++
      if (!unordered(rows[i] as Row)) ordered++
    }
    pendingDurable -= durable
    pendingOrdered -= ordered
    backlogEnded = false
    takenRows += n
    takenDurable += durable
    return { rows, acks, durable, ordered }
  }

  /** A taken batch that did not become durable goes back to the head of the queue. */
  function putBack(b: Batch): void {
    pending = b.rows.concat(pending)
    pendingAcks = b.acks.concat(pendingAcks)
    pendingDurable += b.durable
    pendingOrdered += b.ordered
    takenRows -= b.rows.length
    takenDurable -= b.durable
  }

  /** The batch is committed or spooled: its producers hear so. */
  function done(b: Batch): void {
    takenRows -= b.rows.length
    takenDurable -= b.durable
    if (b.durable > 0) for (const ack of b.acks) ack?.()
    if (room && queued() <= highWater / 2) releaseRoom()
  }

  const nextDelay = () => {
    if (failures > 0) {
      // Acknowledge waiting producers from the spool now; try the database when the backoff ends.
      const untilRetry = Math.max(0, retryAt - Date.now())
      return spool && pendingDurable > 0 && !spoolFull
        ? 0
        : spool && pending.length > 0
          ? Math.min(opts.flushIntervalMs, untilRetry)
          : untilRetry
    }
    if (spool && !spool.empty) return 0
    if (backlogEnded) return 0
    if (pending.length >= opts.batchSize || room) return 0
    return pendingDurable > 0 ? window.delay(now()) : opts.flushIntervalMs
  }

  /** Whether one more flush may start now, beside those in progress. */
  function mayStart(): boolean {
    if (steps.size === 0) return true
    return (
      steps.size < concurrency &&
      !exclusive &&
      failures === 0 &&
      (!spool || spool.empty) &&
      pending.length > 0 &&
      pendingOrdered === 0
    )
  }

  /** Starts one step (replay, spool or write); resolves when it is done, never rejects. */
  function start(): Promise<void> {
    const p: Promise<void> = step().finally(() => {
      steps.delete(p)
      if (steps.size === 0) exclusive = false
      if (pending.length > 0 || (spool && !spool.empty)) schedule(nextDelay())
    })
    steps.add(p)
    return p
  }

  /** The timer's work: as many flushes as may run, while there are rows for them. */
  function pump(): void {
    if (steps.size === 0) void start()
    while (pending.length > 0 && mayStart()) void start()
  }

  /** Starts a step if one may start; resolves when it (or, if none may, those in progress) end. */
  function flush(): Promise<void> {
    if (mayStart()) return start()
    return Promise.all(steps).then(() => undefined)
  }

  async function step(): Promise<void> {
    if (failures > 0 && Date.now() < retryAt) {
      exclusive = true
      await toSpool()
      return
    }
    if (spool && !spool.empty) {
      // One segment per step, then new rows are spooled (and acknowledged) behind it: a long replay
      // never holds up acknowledgements.
      exclusive = true
      await replaySegment()
      if (pending.length > 0) await toSpool()
      return
    }
    if (pending.length === 0) return
    const batch = take()
    const arrivedBefore = arrivals
    if (batch.ordered > 0) exclusive = true
    const t0 = performance.now()
    if (batch.rows.length >= eagerRows) burstBatchAt = t0
    try {
      await writeWithIsolation(batch.rows)
      const seconds = (performance.now() - t0) / 1000
      stats.written += batch.rows.length
      stats.flushes++
      stats.lastFlushMs = Math.round(seconds * 10_000) / 10
      flushDurations.observe(seconds)
      recovered()
      done(batch)
      // The rows a full batch left behind, with nothing new arriving while it was written, are the end
      // of a backlog (a burst that is over): the flush interval would gather nothing more for them.
      if (batch.rows.length === opts.batchSize && arrivals === arrivedBefore && pending.length > 0)
        backlogEnded = true
    } catch (err) {
      putBack(batch)
      failed(err)
      if (spool) await toSpool()
    }
  }

  /** A batch in one transaction; if PostgreSQL refuses a row's data, the others still go in. */
  async function writeWithIsolation(batch: readonly Row[], batchId?: string): Promise<void> {
    try {
      await opts.store.writeBatch(opts.db(), batch, batchId)
    } catch (err) {
      if (!isDataError(err)) throw err
      const failedRows = await opts.store.writeIsolated(opts.db(), batch, batchId)
      const rejects = failedRows.map((f) =>
        opts.toReject(f.row, `database refused the row: ${f.error.message}`),
      )
      if (rejects.length > 0) {
        await opts.store.writeBatch(opts.db(), rejects)
        log.warn('rows refused by the database', {
          count: rejects.length,
          reason: rejects[0]?.reason,
        })
      }
    }
  }

  /** Moves pending rows into the spool (fsynced) and acknowledges them; stops (rows stay pending) when it is full. */
  async function toSpool(): Promise<void> {
    if (!spool || spooling) return
    spooling = true
    try {
      while (pending.length > 0) {
        // Taken out of the queue while the append runs: a concurrent flush that fails puts its rows
        // back at the head meanwhile, and they must not be mistaken for these.
        const batch = take()
        let ok: boolean
        try {
          ok = await spool.append(batch.rows)
        } catch (err) {
          putBack(batch)
          log.error('spool write failed; holding rows in memory', { err: errorText(err) })
          return
        }
        if (!ok) {
          putBack(batch)
          if (!spoolFull)
            log.error('spool full: no longer acknowledging QoS 1/2 until the database is back', {
              bytes: spool.bytes,
            })
          spoolFull = true
          return
        }
        if (spoolFull) log.info('spool has room again; acknowledging')
        spoolFull = false
        stats.spooled += batch.rows.length
        done(batch)
      }
    } finally {
      spooling = false
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
          stats.replayed += await opts.store.writeSpooled(opts.db(), group)
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
      log.error(
        spool
          ? 'database writes failing; spooling to disk and retrying'
          : 'database writes failing; keeping rows in memory and retrying',
        {
          err: errorText(err),
          pending: queued(),
        },
      )
    }
  }

  function recovered() {
    if (failingSince) {
      log.info('database writes recovered', {
        failedForMs: Date.now() - failingSince.getTime(),
        retries: failures,
        spoolBytes: spool?.bytes ?? 0,
      })
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
      if (!durable && queued() >= opts.maxPendingRows) {
        stats.dropped++
        if (droppedSinceLog++ === 0)
          log.error('pending rows at the limit; dropping new QoS 0 rows', {
            limit: opts.maxPendingRows,
          })
        return false
      }
      droppedSinceLog = 0
      arrivals++
      pending.push(row)
      if (!unordered(row)) pendingOrdered++
      if (!durable) {
        pendingAcks.push(undefined)
        if (pending.length === opts.batchSize && failures === 0 && mayStart()) schedule(0)
        // A flush in progress reschedules itself when it ends; otherwise make sure a timer is armed.
        else if (!timer && steps.size === 0)
          schedule(failures > 0 ? Math.max(0, retryAt - Date.now()) : opts.flushIntervalMs)
        return undefined
      }
      window.arrived(now(), pendingDurable === 0)
      pendingDurable++
      const ack = new Promise<void>((resolve) => pendingAcks.push(resolve))
      // Group commit: a flush that may start is scheduled for the next timer tick, so the messages of
      // this turn share it; one in progress reschedules itself at 0 when it ends. Once a fifth of a
      // batch waits, a free writer starts at once instead: PostgreSQL writes those rows while paku is
      // still reading the rest of a burst (100 devices' worth of QoS 1 messages arrive in one turn, and
      // would otherwise make one batch that PostgreSQL waits for and paku then waits on). Starting it
      // at half a batch made no measurable difference (docs/performance.md, "Two writers").
      if ((failures === 0 || spool) && mayStart()) {
        const delay = window.delay(now())
        if (pendingDurable >= eagerRows && running) pump()
        else if (delay === 0) schedule(0)
        // The window's end is fixed by its first row: later ones must not push it further out.
        else if (!timer || timerDue > now() + delay) schedule(delay)
      }
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
      if (queued() < highWater || failures > 0 || !running) return undefined
      if (!room) {
        let release = () => {}
        const promise = new Promise<void>((resolve) => (release = resolve))
        room = { promise, release }
        // Someone is waiting now: do not let a partial batch sit out the flush interval.
        if (mayStart()) schedule(0)
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
      await Promise.all(steps)
      while (
        (pending.length > 0 || (spool && !spool.empty && failures === 0)) &&
        Date.now() < until
      ) {
        const before = stats.written + stats.spooled + stats.replayed
        await start()
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
        pendingAcks = []
        pendingDurable = 0
        pendingOrdered = 0
      }
    },
    stats(): WriterStats {
      return {
        ...stats,
        pending: queued(),
        waiting: pendingDurable + takenDurable,
        spoolBytes: spool?.bytes ?? 0,
        failingSince: failingSince?.toISOString() ?? null,
      }
    },
    /**
     * How long the committed batch writes took, for a histogram: what a QoS 1 PUBACK waits for besides
     * the batch before it. `lastFlushMs` alone hides the rare slow one between two scrapes.
     */
    flushDurations(): HistogramSnapshot {
      return flushDurations.snapshot()
    },
    get failing(): boolean {
      return failingSince !== undefined
    },
    /**
     * Rows are arriving faster than they are written: a fifth of a batch or more is in memory and not
     * yet durable (at a steady 1,000 msg/s a handful are; in a burst, the whole of the senders' window),
     * or a flush took that many within the last BUSY_HOLD_MS.
     */
    get busy(): boolean {
      return queued() >= eagerRows || performance.now() - burstBatchAt < BUSY_HOLD_MS
    },
    /** Degraded: writes failing, or acknowledged rows still only in the spool. */
    get degraded(): boolean {
      return failingSince !== undefined || (spool !== undefined && !spool.empty)
    },
  }
}

export type Writer = ReturnType<typeof createWriter>

/**
 * PostgreSQL's commit_delay, on paku's side: each commit of a QoS 1/2 row costs a WAL flush (about
 * 0.4 ms of PostgreSQL CPU and a few ms of disk on a small VM), so at a steady thousand messages a second
 * committing every row as soon as it can costs more than the rows. The first row that waits opens a
 * window; the rows arriving in it share its commit. Only while rows arrive often enough for at least two
 * more to share it: a lone row waits for nothing.
 */
export function createCommitWindow(windowMs: number) {
  /** Mean gap between rows that wait, exponentially weighted (ms). */
  let gap = Infinity
  let last = -Infinity
  /** When the oldest row that waits arrived. */
  let opened = 0
  return {
    /** A row that waits arrived at `at`; `first`: no other row waits before it. */
    arrived(at: number, first: boolean): void {
      // A pause longer than a second says nothing about the rate that follows it.
      const g = Math.min(1000, at - last)
      gap = gap === Infinity ? g : gap * 0.9 + g * 0.1
      last = at
      if (first) opened = at
    },
    /** How long the rows that wait may still wait for others, at `at`. */
    delay(at: number): number {
      if (windowMs <= 0 || windowMs < 2 * gap) return 0
      return Math.max(0, opened + windowMs - at)
    },
  }
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
