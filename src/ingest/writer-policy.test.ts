import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  accepts,
  afterDurable,
  afterQueued,
  afterStep,
  backoffMs,
  BUSY_HOLD_MS,
  createCommitWindow,
  endsBacklog,
  isBurstBatch,
  isBusy,
  LEAVE,
  MAX_BACKOFF_MS,
  mayRelease,
  mayStart,
  mustWait,
  nextDelay,
  START_NOW,
  startDelay,
  stepKind,
  takeCount,
  writerLimits,
  type StepKind,
  type WriterLimits,
  type WriterState,
} from './writer-policy.js'

/** batchSize 100 (a fifth: 20), 2 s interval, two writers, a spool, waiting from 1,000 rows on. */
const L: WriterLimits = writerLimits({
  batchSize: 100,
  flushIntervalMs: 2000,
  concurrency: 2,
  highWaterRows: 1000,
  maxPendingRows: 5000,
  spool: true,
})
const noSpool: WriterLimits = { ...L, spool: false }

/** A commit window that would let rows wait `ms` more (0: closed). */
const windowOf = (ms: number) => ({ delay: () => ms })

/** An idle, healthy, running writer at time 10,000, with whatever `s` changes. */
const state = (s: Partial<WriterState> = {}): WriterState => ({
  pending: 0,
  pendingDurable: 0,
  pendingOrdered: 0,
  taken: 0,
  inFlight: 0,
  exclusive: false,
  failures: 0,
  retryAt: 0,
  spooled: false,
  spoolFull: false,
  backlogEnded: false,
  roomWaiting: false,
  running: true,
  timerArmed: false,
  timerDue: 0,
  arrivals: 0,
  burstBatchAt: -Infinity,
  window: windowOf(0),
  ...s,
})

const AT = 10_000

/** Loops a table of named cases into tests. */
function table<C extends { name: string }>(cases: C[], check: (c: C) => void) {
  for (const c of cases) it(c.name, () => check(c))
}

describe('writer policy: the limits', () => {
  it('derives a fifth of a batch (at least 1), one writer by default, no high-water mark by default', () => {
    const l = writerLimits({ batchSize: 4, flushIntervalMs: 10, maxPendingRows: 9, spool: false })
    assert.deepEqual(l, {
      batchSize: 4,
      flushIntervalMs: 10,
      concurrency: 1,
      eagerRows: 1,
      highWaterRows: Infinity,
      maxPendingRows: 9,
      spool: false,
    })
    assert.equal(L.eagerRows, 20)
    assert.equal(writerLimits({ ...L, concurrency: 0 }).concurrency, 1, 'at least one writer')
  })
})

describe('writer policy: what the next batch takes', () => {
  table(
    [
      { name: 'nothing from an empty queue', s: state(), want: 0 },
      { name: 'all of a queue shorter than a batch', s: state({ pending: 37 }), want: 37 },
      { name: 'exactly a batch', s: state({ pending: 100 }), want: 100 },
      { name: 'one batch of a longer queue', s: state({ pending: 250 }), want: 100 },
    ],
    (c) => assert.equal(takeCount(c.s, L), c.want),
  )
})

describe('writer policy: what a step does', () => {
  table<{ name: string; s: WriterState; want: StepKind }>(
    [
      { name: 'nothing with an empty queue', s: state(), want: 'idle' },
      { name: 'writes a batch when rows are queued', s: state({ pending: 1 }), want: 'write' },
      {
        name: 'replays the spool before writing new rows, so they reach the database in order',
        s: state({ pending: 5, spooled: true }),
        want: 'replay',
      },
      {
        name: 'spools the queue while backing off after a failure',
        s: state({ pending: 5, failures: 1, retryAt: AT + 1 }),
        want: 'spool',
      },
      {
        name: 'tries the database again once the back-off has passed (a replay first)',
        s: state({ pending: 5, failures: 3, retryAt: AT, spooled: true }),
        want: 'replay',
      },
      {
        name: 'tries the database again once the back-off has passed (a write with no spool)',
        s: state({ pending: 5, failures: 3, retryAt: AT - 1 }),
        want: 'write',
      },
    ],
    (c) => assert.equal(stepKind(c.s, AT), c.want),
  )
})

describe('writer policy: whether one more step may start', () => {
  table(
    [
      { name: 'always when none is in progress', s: state(), want: true },
      {
        name: 'a second telemetry batch beside the first',
        s: state({ inFlight: 1, pending: 3 }),
        want: true,
      },
      {
        name: 'not beyond the concurrency',
        s: state({ inFlight: 2, pending: 3 }),
        want: false,
      },
      {
        name: 'not beside a step that must run alone',
        s: state({ inFlight: 1, pending: 3, exclusive: true }),
        want: false,
      },
      {
        name: 'not beside another while writes fail',
        s: state({ inFlight: 1, pending: 3, failures: 1 }),
        want: false,
      },
      {
        name: 'not beside another while the spool holds batches',
        s: state({ inFlight: 1, pending: 3, spooled: true }),
        want: false,
      },
      {
        name: 'not beside another with nothing queued for it',
        s: state({ inFlight: 1 }),
        want: false,
      },
      {
        name: 'not beside another when queued rows must keep their order (status, config, OTA)',
        s: state({ inFlight: 1, pending: 3, pendingOrdered: 1 }),
        want: false,
      },
    ],
    (c) => assert.equal(mayStart(c.s, L), c.want),
  )
})

describe('writer policy: when the next step starts', () => {
  table<{ name: string; s: WriterState; l?: WriterLimits; want: number }>(
    [
      { name: 'after the flush interval with nothing queued', s: state(), want: 2000 },
      {
        name: 'after the flush interval for rows whose producers do not wait',
        s: state({ pending: 10 }),
        want: 2000,
      },
      {
        name: 'at once for rows that wait, while the commit window is closed',
        s: state({ pending: 10, pendingDurable: 1 }),
        want: 0,
      },
      {
        name: 'at the end of the commit window for rows that wait, while it is open',
        s: state({ pending: 10, pendingDurable: 1, window: windowOf(7) }),
        want: 7,
      },
      {
        name: 'at once with a full batch queued',
        s: state({ pending: 100, window: windowOf(7) }),
        want: 0,
      },
      {
        name: 'at once while producers wait for room',
        s: state({ pending: 10, roomWaiting: true }),
        want: 0,
      },
      {
        name: 'at once for the rows a full batch left at the end of a backlog',
        s: state({ pending: 10, backlogEnded: true }),
        want: 0,
      },
      { name: 'at once while the spool holds batches', s: state({ spooled: true }), want: 0 },
      {
        name: 'failing: at once for rows that wait, to acknowledge them from the spool',
        s: state({ pending: 10, pendingDurable: 1, failures: 1, retryAt: AT + 5000 }),
        want: 0,
      },
      {
        name: 'failing with the spool full (its byte limit): rows that wait stay, tried again after the interval',
        s: state({
          pending: 10,
          pendingDurable: 1,
          failures: 1,
          retryAt: AT + 5000,
          spoolFull: true,
        }),
        want: 2000,
      },
      {
        name: 'failing with the spool full: at the retry when it comes before the interval',
        s: state({
          pending: 10,
          pendingDurable: 1,
          failures: 1,
          retryAt: AT + 300,
          spoolFull: true,
        }),
        want: 300,
      },
      {
        name: 'failing without a spool: at the retry, rows that wait or not',
        s: state({ pending: 10, pendingDurable: 1, failures: 2, retryAt: AT + 5000 }),
        l: noSpool,
        want: 5000,
      },
      {
        name: 'failing with nothing queued: at the retry',
        s: state({ failures: 2, retryAt: AT + 5000, spooled: true }),
        want: 5000,
      },
      {
        name: 'failing, past the retry: at once',
        s: state({ pending: 10, failures: 2, retryAt: AT - 1 }),
        l: noSpool,
        want: 0,
      },
    ],
    (c) => assert.equal(nextDelay(c.s, c.l ?? L, AT), c.want),
  )

  table(
    [
      { name: 'after a step: nothing scheduled with nothing left', s: state(), want: LEAVE },
      { name: 'after a step: as nextDelay with rows left', s: state({ pending: 1 }), want: 2000 },
      {
        name: 'after a step: at once with the spool to replay',
        s: state({ spooled: true }),
        want: 0,
      },
    ],
    (c) => assert.equal(afterStep(c.s, L, AT), c.want),
  )

  table(
    [
      { name: 'at start: after the flush interval', s: state(), want: 2000 },
      {
        name: 'at start: at once with an earlier run’s spool',
        s: state({ spooled: true }),
        want: 0,
      },
    ],
    (c) => assert.equal(startDelay(c.s, L), c.want),
  )
})

describe('writer policy: the schedule after a QoS 0 row is queued', () => {
  table<{ name: string; s: WriterState; want: number }>(
    [
      { name: 'the first row arms the flush interval', s: state({ pending: 1 }), want: 2000 },
      {
        name: 'the row that fills a batch starts it on the next tick',
        s: state({ pending: 100, timerArmed: true }),
        want: 0,
      },
      {
        name: 'the row that fills a batch waits while no writer is free',
        s: state({ pending: 100, timerArmed: true, inFlight: 2 }),
        want: LEAVE,
      },
      {
        name: 'a row beyond a full batch leaves the armed timer',
        s: state({ pending: 101, timerArmed: true }),
        want: LEAVE,
      },
      {
        name: 'no timer while a step is in progress (it reschedules itself)',
        s: state({ pending: 5, inFlight: 1 }),
        want: LEAVE,
      },
      {
        name: 'failing: the row that fills a batch waits for the retry',
        s: state({ pending: 100, failures: 1, retryAt: AT + 400 }),
        want: 400,
      },
      {
        name: 'failing, past the retry: at once',
        s: state({ pending: 3, failures: 1, retryAt: AT - 400 }),
        want: 0,
      },
    ],
    (c) => assert.equal(afterQueued(c.s, L, AT), c.want),
  )
})

describe('writer policy: the schedule after a row that waits is queued (group commit)', () => {
  table<{ name: string; s: WriterState; l?: WriterLimits; want: number }>(
    [
      {
        name: 'the next tick, with the commit window closed',
        s: state({ pending: 1, pendingDurable: 1 }),
        want: 0,
      },
      {
        name: 'the end of an open commit window',
        s: state({ pending: 1, pendingDurable: 1, window: windowOf(12) }),
        want: 12,
      },
      {
        name: 'an earlier armed timer is left alone (the window ends with its first row)',
        s: state({
          pending: 2,
          pendingDurable: 2,
          window: windowOf(12),
          timerArmed: true,
          timerDue: AT + 5,
        }),
        want: LEAVE,
      },
      {
        name: 'a later armed timer (the flush interval) is brought forward',
        s: state({
          pending: 2,
          pendingDurable: 1,
          window: windowOf(12),
          timerArmed: true,
          timerDue: AT + 2000,
        }),
        want: 12,
      },
      {
        name: 'a fifth of a batch waiting starts a free writer at once',
        s: state({ pending: 20, pendingDurable: 20, window: windowOf(12) }),
        want: START_NOW,
      },
      {
        name: 'not at once before start(): a timer instead',
        s: state({ pending: 20, pendingDurable: 20, running: false }),
        want: 0,
      },
      {
        name: 'nothing while no writer is free (the step in progress reschedules)',
        s: state({ pending: 20, pendingDurable: 20, inFlight: 2 }),
        want: LEAVE,
      },
      {
        name: 'failing with a spool: the next tick, to acknowledge from the spool',
        s: state({ pending: 1, pendingDurable: 1, failures: 1, retryAt: AT + 1000 }),
        want: 0,
      },
      {
        name: 'failing without a spool: nothing (the retry timer stays)',
        s: state({ pending: 1, pendingDurable: 1, failures: 1, retryAt: AT + 1000 }),
        l: noSpool,
        want: LEAVE,
      },
    ],
    (c) => assert.equal(afterDurable(c.s, c.l ?? L, AT), c.want),
  )
})

describe('writer policy: the back-off after failures', () => {
  table(
    [
      { name: 'the first retry after the flush interval', failures: 1, interval: 2000, want: 2000 },
      { name: 'doubles with the second failure', failures: 2, interval: 2000, want: 4000 },
      { name: 'doubles again with the third', failures: 3, interval: 2000, want: 8000 },
      { name: 'at most MAX_BACKOFF_MS', failures: 5, interval: 2000, want: MAX_BACKOFF_MS },
      {
        name: 'at most MAX_BACKOFF_MS after very many',
        failures: 500,
        interval: 2000,
        want: MAX_BACKOFF_MS,
      },
      { name: 'from at least 100 ms with a short interval', failures: 1, interval: 10, want: 100 },
      { name: 'doubling from 100 ms', failures: 4, interval: 10, want: 800 },
      {
        name: 'reaches the cap from 100 ms too',
        failures: 20,
        interval: 0,
        want: MAX_BACKOFF_MS,
      },
    ],
    (c) => assert.equal(backoffMs(c.failures, { ...L, flushIntervalMs: c.interval }), c.want),
  )
})

describe('writer policy: memory bound and backpressure', () => {
  table(
    [
      {
        name: 'queues a QoS 0 row below the bound',
        s: state({ pending: 4999 }),
        d: false,
        want: true,
      },
      {
        name: 'drops a QoS 0 row at the bound (taken rows count)',
        s: state({ pending: 4000, taken: 1000 }),
        d: false,
        want: false,
      },
      {
        name: 'queues a row that waits whatever the bound',
        s: state({ pending: 9000 }),
        d: true,
        want: true,
      },
    ],
    (c) => assert.equal(accepts(c.s, L, c.d), c.want),
  )

  table(
    [
      { name: 'no waiting below the mark', s: state({ pending: 999 }), want: false },
      { name: 'waiting at the mark', s: state({ pending: 900, taken: 100 }), want: true },
      {
        name: 'no waiting while writes fail (the spool takes the rows)',
        s: state({ pending: 2000, failures: 1 }),
        want: false,
      },
      { name: 'no waiting when stopped', s: state({ pending: 2000, running: false }), want: false },
    ],
    (c) => assert.equal(mustWait(c.s, L), c.want),
  )

  it('has no mark by default: nobody waits', () => {
    assert.equal(mustWait(state({ pending: 1e9 }), { ...L, highWaterRows: Infinity }), false)
  })

  table(
    [
      {
        name: 'keeps producers waiting above half the mark',
        s: state({ pending: 501 }),
        want: false,
      },
      { name: 'lets them go at half the mark', s: state({ pending: 400, taken: 100 }), want: true },
      { name: 'lets them go with nothing queued', s: state(), want: true },
    ],
    (c) => assert.equal(mayRelease(c.s, L), c.want),
  )
})

describe('writer policy: bursts', () => {
  table(
    [
      {
        name: 'a full batch with nothing new arriving while it was written ends a backlog',
        s: state({ pending: 50, arrivals: 150 }),
        b: { rows: { length: 100 }, arrivals: 150 },
        want: true,
      },
      {
        name: 'not when rows arrived while it was written (the burst goes on)',
        s: state({ pending: 51, arrivals: 151 }),
        b: { rows: { length: 100 }, arrivals: 150 },
        want: false,
      },
      {
        name: 'not after a partial batch',
        s: state({ pending: 50, arrivals: 150 }),
        b: { rows: { length: 99 }, arrivals: 150 },
        want: false,
      },
      {
        name: 'not with nothing left behind',
        s: state({ arrivals: 100 }),
        b: { rows: { length: 100 }, arrivals: 100 },
        want: false,
      },
    ],
    (c) => assert.equal(endsBacklog(c.s, L, c.b), c.want),
  )

  table(
    [
      { name: 'a batch of a fifth of batchSize is burst-sized', rows: 20, want: true },
      { name: 'a smaller one is not', rows: 19, want: false },
    ],
    (c) => assert.equal(isBurstBatch(c.rows, L), c.want),
  )

  table(
    [
      { name: 'idle: not busy', s: state(), want: false },
      {
        name: 'busy with a fifth of a batch in memory',
        s: state({ pending: 5, taken: 15 }),
        want: true,
      },
      { name: 'not busy with less', s: state({ pending: 19 }), want: false },
      {
        name: 'busy just after a burst-sized batch',
        s: state({ burstBatchAt: AT - BUSY_HOLD_MS + 1 }),
        want: true,
      },
      {
        name: 'not busy BUSY_HOLD_MS after it',
        s: state({ burstBatchAt: AT - BUSY_HOLD_MS }),
        want: false,
      },
    ],
    (c) => assert.equal(isBusy(c.s, L, AT), c.want),
  )
})

describe('writer policy: the commit window follows the rate of rows that wait', () => {
  /** Feeds arrivals (time, first) into a window and returns its delay after each. */
  function run(windowMs: number, arrivals: Array<[at: number, first: boolean]>): number[] {
    const w = createCommitWindow(windowMs)
    return arrivals.map(([at, first]) => {
      w.arrived(at, first)
      return w.delay(at)
    })
  }
  const every = (from: number, gap: number, n: number, firstAt = 0): Array<[number, boolean]> =>
    Array.from({ length: n }, (_, i) => [from + i * gap, i === firstAt])

  /** 60 rows a millisecond apart (from 0): the estimate has caught up with 1,000 a second. */
  const warm = every(0, 1, 60)

  /** Each case's `want`: the delays after its last arrivals. */
  table<{ name: string; windowMs: number; arrivals: Array<[number, boolean]>; want: number[] }>(
    [
      {
        name: 'closed for the first row: the rate is not known yet',
        windowMs: 20,
        arrivals: [[1000, true]],
        want: [0],
      },
      {
        name: 'closed while rows arrive less often than half the window',
        windowMs: 20,
        arrivals: every(0, 11, 60),
        want: Array<number>(60).fill(0),
      },
      {
        name: 'opens once the rate is known, ending window ms after its first row whatever arrives later',
        windowMs: 20,
        arrivals: [...warm, [100, true], [101, false], [110, false], [125, false]],
        want: [20, 19, 10, 0],
      },
      {
        name: 'closes once the rate drops (the mean gap passes half the window)',
        windowMs: 20,
        arrivals: [...warm, [100, true], [101, false], [150, true], [200, true]],
        want: [20, 19, 0, 0],
      },
      {
        name: 'a pause counts as one second at most: the next fast row reopens it',
        windowMs: 200,
        arrivals: [...warm, [100_000, true], [100_001, false]],
        want: [0, 199],
      },
      {
        name: 'never open with a window of 0',
        windowMs: 0,
        arrivals: [...warm, [100, true], [101, false]],
        want: Array<number>(62).fill(0),
      },
    ],
    (c) => assert.deepEqual(run(c.windowMs, c.arrivals).slice(-c.want.length), c.want),
  )
})
