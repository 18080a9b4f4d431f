import { PerformanceObserver } from 'node:perf_hooks'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { createHistogram } from '../util/histogram.js'
import { histogramMetric, type Metric } from './metrics.js'

/** How often the event loop is asked to run a timer while it has work; a stall shows as that timer running late. */
const SAMPLE_MS = 20
/**
 * How often while it has next to none (idle, or a few devices' keep-alives): a 20 ms timer would be most of
 * an idle paku's wakeups. A stall then shows only when it holds up this timer, but there is no traffic
 * for it to hold up either.
 */
const IDLE_SAMPLE_MS = 1000
/** Event-loop work per second below which the loop counts as idle. */
const IDLE_ACTIVE_MS_PER_S = 5
/**
 * Upper bounds in seconds. A healthy loop answers within a few ms; a stall of 0.1 s and up delays every
 * PUBACK and HTTP answer by as much, which is what these histograms are for: telling paku's own stalls
 * apart from slow batch writes (paku_ingest_flush_duration_seconds) when latency spikes.
 */
const DELAY_BOUNDS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const GC_BOUNDS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]

/**
 * Memory a burst leaves behind is garbage V8 collects only when it next needs room, or when its memory
 * reducer notices the quiet (a minute and more after a burst, or never while a few devices keep the loop
 * ticking): until then the process keeps its peak. While the loop is idle and the heap and buffers, or
 * the resident memory, have grown this much since the last collection, one full collection hands it
 * back (with nothing waiting for the loop). Resident memory counts too: V8 keeps its grown young
 * generation and a pool of free pages, which its figures for the heap and buffers do not show, and a
 * 1M-message burst left 200 MiB resident a minute later without this (docs/performance.md, "Memory
 * after a burst").
 */
const RELEASE_GROWTH_BYTES = 32 * 1024 * 1024
/** Not more often than this, whatever the loop does. */
const RELEASE_EVERY_MS = 10_000

/**
 * A full garbage collection on demand (V8's gc(), without --expose-gc on the command line), of the
 * kind V8 runs when memory runs out: it also shrinks the young generation back (up to 32 MiB committed
 * after a burst, `--max-semi-space-size=16`) and hands back V8's pool of free pages, which a plain
 * full collection keeps.
 */
function fullCollection(): () => void {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as (opts?: object) => void
  return () => {
    gc({ type: 'major', execution: 'sync', flavor: 'last-resort' })
    // Then two plain ones: the buffers a collection finds dead are freed (and their memory counted as
    // gone) by a sweeper that a later collection finishes; Node 20's V8 needs both.
    gc()
    gc()
  }
}

/** The memory V8 holds for the heap and the buffers outside it (garbage included), and what of it is in use, in bytes. */
const held = () => {
  const m = process.memoryUsage()
  return { total: m.heapTotal + m.external, used: m.heapUsed + m.external }
}

/** The next sampling interval, from how much work the loop did (ms) in the last one (ms long). */
export function nextSampleMs(activeMs: number, elapsedMs: number): number {
  return activeMs > (IDLE_ACTIVE_MS_PER_S * elapsedMs) / 1000 ? SAMPLE_MS : IDLE_SAMPLE_MS
}

/**
 * The process's own health for /metrics: CPU and memory under their standard Prometheus names, how late
 * the event loop ran (every message, PUBACK and request waits for it) and how long the garbage collector
 * paused it.
 */
export type RuntimeOptions = {
  /** Whether nothing waits to be written (a collection while a burst drains would find it all alive). */
  quiet?: () => boolean
  /** The process's resident memory in bytes (tests give their own). */
  rss?: () => number
}

export function createRuntimeMonitor(opts: RuntimeOptions = {}) {
  const delay = createHistogram(DELAY_BOUNDS_S)
  const gc = createHistogram(GC_BOUNDS_S)
  let timer: NodeJS.Timeout | undefined
  let running = false
  let observer: PerformanceObserver | undefined

  let collect: (() => void) | undefined
  const rss = opts.rss ?? (() => process.memoryUsage.rss())
  /**
   * What V8 held, and what was resident, after the last collection (at first: at start). Held, not in
   * use: V8 keeps room beyond the live size, which no collection gives back either.
   */
  let heldBaseline = held().total
  let rssBaseline = rss()
  let releasedAt = -Infinity
  let releases = 0
  /**
   * The loop is idle: a full collection if what V8 holds, or what is resident, grew enough beyond
   * what the last one left.
   */
  const release = (now: number) => {
    const grown =
      held().total - heldBaseline >= RELEASE_GROWTH_BYTES ||
      rss() - rssBaseline >= RELEASE_GROWTH_BYTES
    if (now - releasedAt < RELEASE_EVERY_MS || !grown || !(opts.quiet?.() ?? true)) return
    collect ??= fullCollection()
    collect()
    releases++
    releasedAt = now
    // Whatever stays (V8's room, code, a fragmented malloc heap) is the new floor: no collection
    // every RELEASE_EVERY_MS for memory no collection can give back.
    heldBaseline = held().total
    rssBaseline = rss()
  }

  return {
    name: 'runtime',
    async start(): Promise<void> {
      if (running) return
      running = true
      let elu = performance.eventLoopUtilization()
      const sample = (interval: number) => {
        const last = performance.now()
        timer = setTimeout(() => {
          const now = performance.now()
          delay.observe(Math.max(0, now - last - interval) / 1000)
          const since = performance.eventLoopUtilization(elu)
          elu = performance.eventLoopUtilization()
          const next = nextSampleMs(since.active, now - last)
          if (next === IDLE_SAMPLE_MS) release(now)
          if (running) sample(next)
        }, interval)
        // Never the reason the process stays alive.
        timer.unref()
      }
      sample(SAMPLE_MS)
      observer = new PerformanceObserver((list) => {
        for (const entry of list.getEntries()) gc.observe(entry.duration / 1000)
      })
      observer.observe({ entryTypes: ['gc'] })
    },
    async stop(): Promise<void> {
      running = false
      clearTimeout(timer)
      timer = undefined
      observer?.disconnect()
      observer = undefined
    },
    /** Process memory in MiB for /health: RSS is what the 1–2 GB VMs care about; the heap split shows where it goes. */
    memory(): Record<string, number> {
      const m = process.memoryUsage()
      const mib = (b: number) => Math.round((b / 1048576) * 10) / 10
      return {
        rssMiB: mib(m.rss),
        heapUsedMiB: mib(m.heapUsed),
        heapTotalMiB: mib(m.heapTotal),
        externalMiB: mib(m.external),
      }
    },
    metrics(): Metric[] {
      const cpu = process.cpuUsage()
      return [
        {
          name: 'process_cpu_seconds_total',
          help: 'User and system CPU time spent by paku.',
          type: 'counter',
          samples: [{ value: (cpu.user + cpu.system) / 1e6 }],
        },
        {
          name: 'process_resident_memory_bytes',
          help: 'Resident memory size of paku.',
          type: 'gauge',
          samples: [{ value: process.memoryUsage.rss() }],
        },
        histogramMetric(
          'paku_event_loop_delay_seconds',
          `How late a timer due every ${SAMPLE_MS} ms (every ${IDLE_SAMPLE_MS} ms while idle) ran: a stall of the event loop shows as one late run.`,
          delay.snapshot(),
        ),
        histogramMetric(
          'paku_gc_pause_seconds',
          'Pauses of the JavaScript garbage collector.',
          gc.snapshot(),
        ),
        {
          name: 'paku_memory_releases_total',
          help: 'Full collections run when the event loop went idle after a burst, to hand its memory back.',
          type: 'counter',
          samples: [{ value: releases }],
        },
      ]
    },
  }
}

export type RuntimeMonitor = ReturnType<typeof createRuntimeMonitor>
