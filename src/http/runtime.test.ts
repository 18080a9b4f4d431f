import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { eventually } from '../../scripts/test-helpers.js'
import { renderMetrics } from './metrics.js'
import { createRuntimeMonitor, nextSampleMs } from './runtime.js'

/** The value of one series in Prometheus text, e.g. `paku_gc_pause_seconds_count`. */
function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  assert.ok(line, `${series} in\n${text}`)
  return Number(line.slice(series.length + 1))
}

const turn = () => new Promise((r) => setImmediate(r))

describe('runtime monitor', () => {
  it('counts a blocked event loop as one late timer run of about that length', async () => {
    const monitor = createRuntimeMonitor()
    await monitor.start()
    try {
      // Work for the loop, as traffic would be: the monitor samples every 20 ms while there is some.
      const busyUntil = performance.now() + 100
      while (performance.now() < busyUntil) await turn()
      const before = renderMetrics(monitor.metrics())
      const until = performance.now() + 300
      while (performance.now() < until) {
        // Blocks the loop, as a long synchronous piece of work would.
      }
      // The first run after the block is the late one.
      const runs = (t: string) => value(t, 'paku_event_loop_delay_seconds_count')
      await eventually(async () => runs(renderMetrics(monitor.metrics())) > runs(before), {
        timeoutMs: 2000,
        what: 'the sampling timer to run after the block',
      })
      const after = renderMetrics(monitor.metrics())
      /** Late runs over `le` seconds between the two readings (compared, so a busy test machine's own stalls before cannot count). */
      const over = (le: string) => {
        const n = (t: string) =>
          value(t, 'paku_event_loop_delay_seconds_bucket{le="+Inf"}') -
          value(t, `paku_event_loop_delay_seconds_bucket{le="${le}"}`)
        return n(after) - n(before)
      }
      assert.ok(over('0.25') >= 1, 'the 300 ms block is one late run over 0.25 s')
      assert.equal(over('1'), 0, 'not added up into more than it was')
      assert.ok(
        value(after, 'paku_event_loop_delay_seconds_sum') -
          value(before, 'paku_event_loop_delay_seconds_sum') >=
          0.25,
      )
      assert.ok(
        value(after, 'paku_event_loop_delay_seconds_count') >
          value(before, 'paku_event_loop_delay_seconds_count'),
      )
    } finally {
      await monitor.stop()
    }
  })

  it('samples every 20 ms while the loop has work, once a second while it has next to none', () => {
    const cases: Array<[string, number, number, number]> = [
      ['a busy loop', 15, 20, 20],
      ['1 % busy over 20 ms', 0.2, 20, 20],
      ['idle over 20 ms', 0.05, 20, 1000],
      ['keep-alives of 100 devices over a second', 2, 1000, 1000],
      ['traffic arriving after an idle second', 40, 1000, 20],
    ]
    for (const [name, active, elapsed, want] of cases)
      assert.equal(nextSampleMs(active, elapsed), want, name)
  })

  it('counts garbage-collector pauses', async () => {
    const monitor = createRuntimeMonitor()
    await monitor.start()
    try {
      let kept: unknown[] = []
      for (
        let round = 0;
        round < 50 && value(renderMetrics(monitor.metrics()), 'paku_gc_pause_seconds_count') === 0;
        round++
      ) {
        // Short-lived garbage: enough of it makes V8 scavenge the young generation.
        for (let i = 0; i < 200_000; i++) kept.push({ i, s: `x${i}` })
        kept = []
        await turn()
      }
      const text = renderMetrics(monitor.metrics())
      assert.ok(value(text, 'paku_gc_pause_seconds_count') > 0)
      assert.ok(value(text, 'paku_gc_pause_seconds_sum') > 0)
      assert.equal(
        value(text, 'paku_gc_pause_seconds_bucket{le="+Inf"}'),
        value(text, 'paku_gc_pause_seconds_count'),
      )
    } finally {
      await monitor.stop()
    }
  })

  it(
    'hands the memory of a burst back once the loop is idle and nothing waits to be written',
    { timeout: 30_000 },
    async () => {
      let quiet = false
      const monitor = createRuntimeMonitor({ quiet: () => quiet })
      await monitor.start()
      try {
        const series = (name: string) => value(renderMetrics(monitor.metrics()), name)
        // A burst's garbage: buffers no longer referenced, which only a collection frees. Made and dropped
        // in a function of its own, so no register of this suspended test holds on to them.
        const burst: { buffers?: Buffer[] } = {}
        ;((b: typeof burst) => {
          b.buffers = Array.from({ length: 64 }, () => Buffer.alloc(1024 * 1024, 1))
        })(burst)
        delete burst.buffers
        const external = () => process.memoryUsage().external
        assert.ok(external() > 64 * 1024 * 1024)
        // Idle, but rows still wait: no collection while samples go by.
        const samples = series('paku_event_loop_delay_seconds_count')
        await eventually(
          async () => series('paku_event_loop_delay_seconds_count') >= samples + 2 || undefined,
          { timeoutMs: 10_000, what: 'two samples' },
        )
        assert.equal(series('paku_memory_releases_total'), 0)
        assert.ok(external() > 64 * 1024 * 1024, 'the buffers are still held')
        // Nothing waits any more: the same idle loop collects, once.
        quiet = true
        await eventually(async () => series('paku_memory_releases_total') === 1 || undefined, {
          timeoutMs: 10_000,
          what: 'a release',
        })
        // Freed buffers are swept off the loop, just after the collection.
        await eventually(async () => external() < 16 * 1024 * 1024 || undefined, {
          timeoutMs: 10_000,
          what: () => `external ${external()} down after the release`,
        })
      } finally {
        await monitor.stop()
      }
    },
  )

  it(
    'collects when resident memory grew though V8 reports none of it, and not again for the same memory',
    { timeout: 30_000 },
    async () => {
      // Resident memory V8 does not count (its page pool, a malloc heap) is the process's to measure:
      // here a given figure, 40 MiB above the start, with the heap and buffers unchanged.
      let resident = 100 * 1024 * 1024
      const monitor = createRuntimeMonitor({ rss: () => resident })
      await monitor.start()
      try {
        const series = (name: string) => value(renderMetrics(monitor.metrics()), name)
        const samples = () => series('paku_event_loop_delay_seconds_count')
        resident += 40 * 1024 * 1024
        await eventually(async () => series('paku_memory_releases_total') === 1 || undefined, {
          timeoutMs: 10_000,
          what: 'a release for resident memory alone',
        })
        // The collection gave none of it back: that is the new floor. Idle samples go by past the
        // 10 s between releases (the monitor's clock is performance.now()) without another collection.
        const releasedAt = performance.now()
        const after = samples()
        await eventually(
          async () =>
            (performance.now() - releasedAt > 11_000 && samples() >= after + 3) || undefined,
          { timeoutMs: 20_000, what: 'samples 11 s after the release' },
        )
        assert.equal(series('paku_memory_releases_total'), 1)
      } finally {
        await monitor.stop()
      }
    },
  )

  it('reports CPU and resident memory under their standard names, and stops its timer', async (t) => {
    // The sampling timer runs on mocked time: a tick shows whether it is still set.
    t.mock.timers.enable({ apis: ['setTimeout'] })
    const monitor = createRuntimeMonitor()
    await monitor.start()
    const text = renderMetrics(monitor.metrics())
    assert.match(text, /^# TYPE process_cpu_seconds_total counter$/m)
    assert.ok(value(text, 'process_cpu_seconds_total') > 0)
    assert.ok(value(text, 'process_resident_memory_bytes') > 10 * 1024 * 1024)
    const runs = () =>
      value(renderMetrics(monitor.metrics()), 'paku_event_loop_delay_seconds_count')
    const started = runs()
    // Running, 2 s of mocked time (two idle intervals) make its timer run.
    t.mock.timers.tick(2000)
    assert.ok(runs() > started, 'a running monitor samples when its time comes')
    await monitor.stop()
    const count = runs()
    // Stopped, the same 2 s do not.
    t.mock.timers.tick(2000)
    assert.equal(runs(), count, 'a stopped monitor does not')
  })
})
