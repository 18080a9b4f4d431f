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
    const make = (name: string, connectionString: string) => {
      const l = createLeader({
        connectionString: () => connectionString,
        log: testLogger(),
        tasks: TASKS,
        retryMs: 200,
        onChange: (task, leading) => changes.push(`${name} ${leading ? '+' : '-'}${task}`),
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
    await new Promise((r) => setTimeout(r, 500))
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
    proxy.restore()
    await new Promise((r) => setTimeout(r, 800))
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
