import { PerformanceObserver } from 'node:perf_hooks'
import { createHistogram } from '../util/histogram.js'
import { histogramMetric, type Metric } from './metrics.js'

/** How often the event loop is asked to run a timer; a stall shows as that timer running late. */
const SAMPLE_MS = 20
/**
 * Upper bounds in seconds. A healthy loop answers within a few ms; a stall of 0.1 s and up delays every
 * PUBACK and HTTP answer by as much, which is what these histograms are for: telling paku's own stalls
 * apart from slow batch writes (paku_ingest_flush_duration_seconds) when latency spikes.
 */
const DELAY_BOUNDS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const GC_BOUNDS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]

/**
 * The process's own health for /metrics: CPU and memory under their standard Prometheus names, how late
 * the event loop ran (every message, PUBACK and request waits for it) and how long the garbage collector
 * paused it.
 */
export function createRuntimeMonitor() {
  const delay = createHistogram(DELAY_BOUNDS_S)
  const gc = createHistogram(GC_BOUNDS_S)
  let timer: NodeJS.Timeout | undefined
  let observer: PerformanceObserver | undefined

  return {
    name: 'runtime',
    async start(): Promise<void> {
      if (timer) return
      let last = performance.now()
      timer = setInterval(() => {
        const now = performance.now()
        delay.observe(Math.max(0, now - last - SAMPLE_MS) / 1000)
        last = now
      }, SAMPLE_MS)
      // Never the reason the process stays alive.
      timer.unref()
      observer = new PerformanceObserver((list) => {
        for (const entry of list.getEntries()) gc.observe(entry.duration / 1000)
      })
      observer.observe({ entryTypes: ['gc'] })
    },
    async stop(): Promise<void> {
      clearInterval(timer)
      timer = undefined
      observer?.disconnect()
      observer = undefined
    },
    metrics(): Metric[] {
      const cpu = process.cpuUsage()
      return [
        { name: 'process_cpu_seconds_total', help: 'User and system CPU time spent by paku.', type: 'counter', samples: [{ value: (cpu.user + cpu.system) / 1e6 }] },
        { name: 'process_resident_memory_bytes', help: 'Resident memory size of paku.', type: 'gauge', samples: [{ value: process.memoryUsage.rss() }] },
        histogramMetric('paku_event_loop_delay_seconds', `How late a timer due every ${SAMPLE_MS} ms ran: a stall of the event loop shows as one late run.`, delay.snapshot()),
        histogramMetric('paku_gc_pause_seconds', 'Pauses of the JavaScript garbage collector.', gc.snapshot()),
      ]
    },
  }
}

export type RuntimeMonitor = ReturnType<typeof createRuntimeMonitor>
