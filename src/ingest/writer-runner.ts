import { createHistogram } from '../util/histogram.js'
import type { WriterOptions } from './writer.js'
import {
  afterStep,
  createCommitWindow,
  LEAVE,
  mayStart,
  START_NOW,
  writerLimits,
} from './writer-policy.js'
import { createQueue } from './writer-queue.js'
import { runStep, toSpool, type ExecutorState, type StepContext } from './writer-steps.js'

/**
 * Upper bounds in seconds of the batch-write duration histogram. A healthy batch commits in 1–50 ms;
 * a slow commit (fsync) or PostgreSQL's GIN merge shows as 0.1 s and up (docs/performance.md, "Where the
 * PUBACK tail comes from").
 */
const FLUSH_BOUNDS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/**
 * The writer's queue, state and counters. The state reads the queue, the steps in progress, the
 * spool and the timer through getters, so the policy always sees them as they are.
 */
export function createStepContext(opts: WriterOptions): StepContext {
  const { spool } = opts
  const queue = createQueue()
  const steps = new Set<Promise<void>>()
  const state: ExecutorState = {
    get pending() {
      return queue.length
    },
    get pendingDurable() {
      return queue.durable
    },
    get pendingOrdered() {
      return queue.ordered
    },
    get taken() {
      return queue.taken
    },
    get arrivals() {
      return queue.arrivals
    },
    get inFlight() {
      return steps.size
    },
    get spooled() {
      return spool !== undefined && !spool.empty
    },
    get roomWaiting() {
      return state.room !== undefined
    },
    get timerArmed() {
      return state.timer !== undefined
    },
    exclusive: false,
    failures: 0,
    retryAt: 0,
    spoolFull: false,
    backlogEnded: false,
    running: false,
    timerDue: 0,
    burstBatchAt: -Infinity,
    window: createCommitWindow(opts.commitWindowMs ?? 0),
    failingSince: undefined,
    spooling: false,
    timer: undefined,
    room: undefined,
  }
  return {
    db: opts.db,
    store: opts.store,
    log: opts.log,
    toReject: opts.toReject,
    spool,
    limits: writerLimits({ ...opts, spool: spool !== undefined }),
    state,
    queue,
    steps,
    counts: {
      written: 0,
      spooled: 0,
      replayed: 0,
      dropped: 0,
      flushes: 0,
      failedFlushes: 0,
      lastFlushMs: 0,
    },
    flushDurations: createHistogram(FLUSH_BOUNDS_S),
    now: opts.now ?? (() => performance.now()),
  }
}

/**
 * Runs the steps: arms the one flush timer, starts steps (up to the policy's limit), and reschedules
 * after each as the policy says.
 */
export function createRunner(ctx: StepContext) {
  const { state, limits, steps, queue, now } = ctx

  /** Carries out a schedule decision (writer-policy.ts: a delay in ms, LEAVE or START_NOW). */
  const schedule = (decision: number): void => {
    if (decision === START_NOW) return pump()
    if (decision === LEAVE || !state.running) return
    clearTimeout(state.timer)
    state.timerDue = now() + decision
    state.timer = setTimeout(() => {
      state.timer = undefined
      pump()
    }, decision)
    state.timer.unref?.()
  }

  /** Starts one step; resolves when it is done, never rejects. */
  function start(): Promise<void> {
    const p: Promise<void> = runStep(ctx).finally(() => {
      steps.delete(p)
      if (steps.size === 0) state.exclusive = false
      schedule(afterStep(state, limits, now()))
    })
    steps.add(p)
    return p
  }

  /** The timer's work: as many steps as may run, while there are rows for them. */
  function pump(): void {
    if (steps.size === 0) void start()
    while (queue.length > 0 && mayStart(state, limits)) void start()
  }

  return {
    schedule,
    /** Starts a step if one may start; resolves when it (or, if none may, those in progress) end. */
    flush(): Promise<void> {
      if (mayStart(state, limits)) return start()
      return Promise.all(steps).then(() => undefined)
    },
    /**
     * After stop(): writes what is still queued (and replays the spool while the database answers),
     * to the database or else the spool, until `deadlineMs` (wall clock) passes; returns the rows left.
     */
    async drain(deadlineMs: number): Promise<number> {
      const { spool, counts } = ctx
      const until = Date.now() + deadlineMs
      await Promise.all(steps)
      while ((queue.length > 0 || (state.spooled && state.failures === 0)) && Date.now() < until) {
        const before = counts.written + counts.spooled + counts.replayed
        await start()
        if (counts.written + counts.spooled + counts.replayed === before) {
          if (spool) await toSpool(ctx)
          if (queue.length === 0) break
          await new Promise((r) => setTimeout(r, Math.min(500, Math.max(0, until - Date.now()))))
        }
      }
      return queue.length
    },
  }
}
