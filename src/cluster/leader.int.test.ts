import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { defer, eventually, pgProxy, testDatabase, testLogger } from '../../scripts/test-helpers.js'
import { createLeader } from './leader.js'

const TASKS = ['rollouts', 'ecoflow'] as const

describe('leader election on PostgreSQL advisory locks', { timeout: 60_000 }, () => {
  it('takes every task at start, gives each to one instance, and hands them over when the lock connection is lost', async (t) => {
    const url = await testDatabase(t)
    const proxy = await pgProxy(t, url)
    const changes: string[] = []
    /** Tries to take the tasks so far, by instance. */
    const tries = new Map<string, number>()
    const make = (name: string, connectionString: string) => {
      const l = createLeader({
        connectionString: () => connectionString,
        log: testLogger(),
        tasks: TASKS,
        retryMs: 200,
        onChange: (task, leading) => changes.push(`${name} ${leading ? '+' : '-'}${task}`),
        onAttempt: () => tries.set(name, (tries.get(name) ?? 0) + 1),
      })
      defer(t, () => l.stop())
      return l
    }
    // a reaches PostgreSQL through a proxy the test can cut: a network failure, not a clean stop.
    const a = make('a', proxy.url)
    await a.start()
    assert.deepEqual(
      a.leaderOf(),
      ['ecoflow', 'rollouts'],
      'a single instance leads everything as soon as start() returns',
    )
    const b = make('b', url)
    await b.start()
    // Two more tries after the one in start(), each of which would take a free lock (as b's tries do
    // once a's locks are released, below).
    const started = tries.get('b') ?? 0
    await eventually(async () => (tries.get('b') ?? 0) >= started + 2, { what: "b's retries" })
    assert.deepEqual(b.leaderOf(), [], 'b stands by while a holds the locks')

    proxy.cut()
    // a notices at once (its connection errors) and stops; PostgreSQL releases the session's locks.
    await eventually(async () => a.leaderOf().length === 0, {
      timeoutMs: 3000,
      what: 'a stepping down',
    })
    await eventually(async () => b.leaderOf().length === 2, {
      timeoutMs: 5000,
      what: 'b taking over',
    })
    assert.ok(
      TASKS.every((task) => !(a.leads(task) && b.leads(task))),
      'never two leaders here',
    )

    // a retries while the database is unreachable, and stays standby once it is back: b holds the locks.
    await eventually(async () => a.health().lastError !== null, {
      timeoutMs: 3000,
      what: 'a failing to reach the database',
    })
    proxy.restore()
    // A try that reaches the database clears the error; it and the next two try every lock, which b holds.
    await eventually(async () => a.health().lastError === null, {
      timeoutMs: 5000,
      what: 'a reaching the database again',
    })
    const back = tries.get('a') ?? 0
    await eventually(async () => (tries.get('a') ?? 0) >= back + 2, { what: "a's retries" })
    assert.deepEqual(a.health(), { leaderOf: [], lastError: null })
    // A clean stop releases at once.
    await b.stop()
    await eventually(async () => a.leaderOf().length === 2, {
      timeoutMs: 3000,
      what: 'a taking over after b stopped',
    })
    assert.deepEqual(changes.slice(0, 2), ['a +rollouts', 'a +ecoflow'])
  })
})
