/**
 * The batch writer's decisions, apart from the timers, transactions and spool that carry them out
 * (writer.ts): what the next step is, when the next flush starts, when producers wait, how long to
 * back off after a failure. Every function here reads its inputs and returns a number or a flag: no
 * I/O, no clock (the caller passes the time, in the clock of `WriterState`), nothing allocated, since
 * push() asks on every message.
 */

/** The writer's settings, fixed at creation. */
export type WriterLimits = {
  /** Rows per batch at most. */
  batchSize: number
  /** How long rows whose producers do not wait (QoS 0) may wait for more (ms). */
  flushIntervalMs: number
  /** Telemetry-only batches written at the same time (at least 1). */
  concurrency: number
  /** A fifth of a batch: this many waiting rows start a free writer at once, and make the writer busy. */
  eagerRows: number
  /** From this many queued rows on, producers that need no acknowledgement wait (Infinity: never). */
  highWaterRows: number
  /** Rows beyond this many queued are dropped unless their producer waits for durability. */
  maxPendingRows: number
  /** Whether there is a spool to take batches while PostgreSQL is unreachable. */
  spool: boolean
}

/** What the writer has at a moment, as the policy reads it. Times are in one monotonic clock (ms). */
export type WriterState = {
  /** Rows queued and not yet taken by a step. */
  readonly pending: number
  /** Of those, rows whose producer waits for durability (QoS 1/2, EcoFlow). */
  readonly pendingDurable: number
  /** Of those, rows that must keep arrival order (all but measurements and rejects). */
  readonly pendingOrdered: number
  /** Rows taken by steps in progress and not yet durable. */
  readonly taken: number
  /** Steps (writes, spooling, replays) in progress. */
  readonly inFlight: number
  /** A step that must run alone is in progress. */
  readonly exclusive: boolean
  /** Failed writes in a row; 0 while the database takes writes. */
  readonly failures: number
  /** While failing, the database is tried again only from this time on. */
  readonly retryAt: number
  /** The spool holds batches not yet replayed. */
  readonly spooled: boolean
  /** The spool refused the last append (full). */
  readonly spoolFull: boolean
  /** A full batch ended a backlog and left rows behind. */
  readonly backlogEnded: boolean
  /** Producers wait on room(). */
  readonly roomWaiting: boolean
  /** Between start() and stop(). */
  readonly running: boolean
  /** A flush timer is armed, and when it fires. */
  readonly timerArmed: boolean
  readonly timerDue: number
  /** Rows queued so far: a batch that saw none arrive while it was written knows the input went quiet. */
  readonly arrivals: number
  /** When a step last took a burst-sized batch (isBurstBatch). */
  readonly burstBatchAt: number
  /** How long rows whose producer waits may still wait for others (commit window, see there). */
  readonly window: { delay(at: number): number }
}

/** What the next step does. */
export type StepKind = 'spool' | 'replay' | 'write' | 'idle'

/** A schedule decision that leaves the timer as it is. */
export const LEAVE = -1
/** A schedule decision that starts as many flushes as may run, now, without a timer. */
export const START_NOW = -2

/** The longest back-off between database attempts while writes fail. */
export const MAX_BACKOFF_MS = 30_000
/**
 * How long the writer still counts as busy after it last took a burst-sized batch: the queue of a burst
 * can run dry for a moment between two reads (seen as a 10 s rollup pass in the middle of a 1M burst;
 * docs/performance.md, "Rollup passes: each row once, and out of bursts"), and background work asking
 * once a second must not take that for the burst's end.
 */
export const BUSY_HOLD_MS = 1000

/** Derives the limits from the writer's options. */
export function writerLimits(opts: {
  batchSize: number
  flushIntervalMs: number
  concurrency?: number | undefined
  highWaterRows?: number | undefined
  maxPendingRows: number
  spool: boolean
}): WriterLimits {
  return {
    batchSize: opts.batchSize,
    flushIntervalMs: opts.flushIntervalMs,
    concurrency: Math.max(1, opts.concurrency ?? 1),
    eagerRows: Math.max(1, Math.floor(opts.batchSize / 5)),
    highWaterRows: opts.highWaterRows ?? Infinity,
    maxPendingRows: opts.maxPendingRows,
    spool: opts.spool,
  }
}

/** Rows in memory that are not durable yet: queued, or in a step in progress. */
export const queued = (s: WriterState): number => s.pending + s.taken

/** How many queued rows the next batch takes: the oldest, at most a batch. */
export const takeCount = (s: WriterState, l: WriterLimits): number =>
  Math.min(s.pending, l.batchSize)

/**
 * The wait before database attempt number `failures` + 1: the flush interval (at least 100 ms), doubled
 * per failure, at most MAX_BACKOFF_MS.
 */
export const backoffMs = (failures: number, l: WriterLimits): number =>
  Math.min(MAX_BACKOFF_MS, Math.max(100, l.flushIntervalMs) * 2 ** Math.min(failures - 1, 16))

/**
 * Whether a row is queued: a row whose producer needs no acknowledgement is dropped once
 * maxPendingRows are in memory; one whose producer waits always is.
 */
export const accepts = (s: WriterState, l: WriterLimits, durable: boolean): boolean =>
  durable || queued(s) < l.maxPendingRows

/** Whether one more step may start now, beside those in progress. */
export function mayStart(s: WriterState, l: WriterLimits): boolean {
  if (s.inFlight === 0) return true
  // Only telemetry-only batches run side by side: they may commit in either order.
  return (
    s.inFlight < l.concurrency &&
    !s.exclusive &&
    s.failures === 0 &&
    !s.spooled &&
    s.pending > 0 &&
    s.pendingOrdered === 0
  )
}

/**
 * What a step starting at `at` does: spool the queue while backing off, replay the spool while it holds
 * anything (rows reach the database in arrival order), else write a batch if there is one.
 */
export function stepKind(s: WriterState, at: number): StepKind {
  if (s.failures > 0 && at < s.retryAt) return 'spool'
  if (s.spooled) return 'replay'
  return s.pending > 0 ? 'write' : 'idle'
}

/** How long after `at` the next step should start, given what is queued. */
export function nextDelay(s: WriterState, l: WriterLimits, at: number): number {
  if (s.failures > 0) {
    // Acknowledge waiting producers from the spool now; try the database when the backoff ends.
    const untilRetry = Math.max(0, s.retryAt - at)
    if (l.spool && s.pendingDurable > 0 && !s.spoolFull) return 0
    return l.spool && s.pending > 0 ? Math.min(l.flushIntervalMs, untilRetry) : untilRetry
  }
  if (s.spooled || s.backlogEnded) return 0
  if (s.pending >= l.batchSize || s.roomWaiting) return 0
  return s.pendingDurable > 0 ? s.window.delay(at) : l.flushIntervalMs
}

/** When the next step starts after one ended at `at` (LEAVE: nothing left for one). */
export const afterStep = (s: WriterState, l: WriterLimits, at: number): number =>
  s.pending > 0 || s.spooled ? nextDelay(s, l, at) : LEAVE

/** When the first step starts, at start(): a spool from an earlier run is replayed at once. */
export const startDelay = (s: WriterState, l: WriterLimits): number =>
  s.spooled ? 0 : l.flushIntervalMs

/**
 * The schedule after a row whose producer needs no acknowledgement was queued at `at`: the row that
 * fills a batch starts a flush on the next tick; otherwise a timer is armed if none is and no step is
 * in progress (a step in progress reschedules itself when it ends).
 */
export function afterQueued(s: WriterState, l: WriterLimits, at: number): number {
  if (s.pending === l.batchSize && s.failures === 0 && mayStart(s, l)) return 0
  if (s.timerArmed || s.inFlight > 0) return LEAVE
  return s.failures > 0 ? Math.max(0, s.retryAt - at) : l.flushIntervalMs
}

/**
 * The schedule after a row whose producer waits was queued at `at` (group commit). A step that may
 * start is scheduled for the next tick, so the messages of this turn share it, or for the end of the
 * commit window; one in progress reschedules itself when it ends. Once a fifth of a batch waits, a free
 * writer starts at once instead: PostgreSQL writes those rows while paku is still reading the rest of a
 * burst (100 devices' worth of QoS 1 messages arrive in one turn, and would otherwise make one batch
 * that PostgreSQL waits for and paku then waits on). Starting it at half a batch made no measurable
 * difference (docs/performance.md, "Two writers").
 */
export function afterDurable(s: WriterState, l: WriterLimits, at: number): number {
  if ((s.failures > 0 && !l.spool) || !mayStart(s, l)) return LEAVE
  if (s.pendingDurable >= l.eagerRows && s.running) return START_NOW
  const delay = s.window.delay(at)
  if (delay === 0) return 0
  // The window's end is fixed by its first row: later ones must not push it further out.
  return !s.timerArmed || s.timerDue > at + delay ? delay : LEAVE
}

/**
 * Whether producers that need no acknowledgement should wait (room()): from highWaterRows queued rows
 * on, while running and while writes succeed (when they fail, the spool takes the rows: holding
 * publishers back would only stall the devices).
 */
export const mustWait = (s: WriterState, l: WriterLimits): boolean =>
  queued(s) >= l.highWaterRows && s.failures === 0 && s.running

/** Whether producers waiting on room() may go: the writer has caught up to half the mark. */
export const mayRelease = (s: WriterState, l: WriterLimits): boolean =>
  queued(s) <= l.highWaterRows / 2

/**
 * Whether the rows a just-written batch left behind are the end of a backlog (a burst that is over), to
 * be written at once: the batch was full, and nothing arrived while it was written (`arrivals` as it was
 * taken), so the flush interval would gather nothing more for them.
 */
export const endsBacklog = (
  s: WriterState,
  l: WriterLimits,
  batch: { readonly rows: { readonly length: number }; readonly arrivals: number },
): boolean => batch.rows.length === l.batchSize && batch.arrivals === s.arrivals && s.pending > 0

/** Whether a batch of `rows` counts as burst-sized (it keeps the writer busy for BUSY_HOLD_MS). */
export const isBurstBatch = (rows: number, l: WriterLimits): boolean => rows >= l.eagerRows

/**
 * Rows are arriving faster than they are written, at `at`: a fifth of a batch or more is in memory and
 * not yet durable, or a burst-sized batch was taken within BUSY_HOLD_MS before.
 */
export const isBusy = (s: WriterState, l: WriterLimits, at: number): boolean =>
  queued(s) >= l.eagerRows || at - s.burstBatchAt < BUSY_HOLD_MS

/**
 * PostgreSQL's commit_delay, on paku's side: each commit of a QoS 1/2 row costs a WAL flush (about
 * 0.4 ms of PostgreSQL CPU and a few ms of disk on a small VM), so at a steady thousand messages a second
 * committing every row as soon as it can costs more than the rows. The first row that waits opens a
 * window; the rows arriving in it share its commit. Only while rows arrive often enough for at least two
 * more to share it: a lone row waits for nothing. Times are passed in (ms, one monotonic clock).
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

export type CommitWindow = ReturnType<typeof createCommitWindow>
