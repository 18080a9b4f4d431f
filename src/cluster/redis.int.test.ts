import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import mqtt from 'mqtt'
import { freePort, redisSkipReason, startRedis } from '../../scripts/cluster-kit.js'
import {
  defer,
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
  testLogger,
} from '../../scripts/test-helpers.js'
import { createClusterEmitter } from './emitter.js'

// CI installs redis-server (.ci/run); on a developer machine without it these tests are skipped, loudly.
const skip = await redisSkipReason()

describe('Redis trouble', { timeout: 60_000 }, () => {
  it('start-up fails with a clear error, and no password, when Redis cannot be reached', async () => {
    const port = await freePort()
    const emitter = createClusterEmitter({
      url: `redis://:hunter2@127.0.0.1:${port}/0`,
      log: testLogger(),
      connectTimeoutMs: 500,
    })
    const err = await emitter.start().then(
      () => undefined,
      (e: Error) => e,
    )
    assert.ok(err, 'start() fails')
    assert.match(
      err.message,
      new RegExp(
        `^cluster: cannot reach Redis at redis://:\\*\\*\\*@127\\.0\\.0\\.1:${port}/0 .*ECONNREFUSED.* check PAKU_CLUSTER_REDIS_URL$`,
      ),
    )
    assert.doesNotMatch(err.message, /hunter2/)
    await emitter.stop()
  })

  it(
    'Redis going away: ingest goes on, /health says degraded, fan-out resumes when Redis is back',
    { skip },
    async (t) => {
      const url = await testDatabase(t)
      let redis = await startRedis()
      defer(t, () => redis.stop())
      const node = async (name: string) =>
        startApp(
          t,
          testConfig({
            databaseUrl: url,
            cluster: { redisUrl: redis.url, instanceId: `redis-${name}`, leaderRetrySeconds: 1 },
          }),
        )
      const a = await node('a')
      const b = await node('b')
      const db = await sqlClient(t, url)
      const sub = await mqtt.connectAsync(b.mqttUrl, { reconnectPeriod: 0 })
      defer(t, () => sub.endAsync(true))
      const got: string[] = []
      sub.on('message', (_t, p) => got.push(p.toString()))
      await sub.subscribeAsync('paku/sensors/+/data', { qos: 1 })
      const pub = await mqtt.connectAsync(a.mqttUrl, { reconnectPeriod: 0 })
      defer(t, () => pub.endAsync(true))
      const msg = (seq: number) => JSON.stringify({ device_id: 'away', metrics: { seq } })

      await redis.stop()
      const health = async () =>
        (await (await fetch(`${a.httpUrl}/health`)).json()) as {
          status: string
          cluster: { redis: string }
        }
      await eventually(async () => (await health()).cluster.redis === 'down', {
        what: 'health: redis down',
      })
      assert.equal((await health()).status, 'degraded')
      // Stored by the instance that received it (the acknowledgement waits for Redis: see docs/scaling.md).
      void pub.publishAsync('paku/sensors/away/data', msg(1), { qos: 1 }).catch(() => undefined)
      await eventually(
        async () =>
          Number(
            (await db.query(`SELECT count(*)::int AS n FROM measurements WHERE device_id = 'away'`))
              .rows[0].n,
          ) === 1,
        { what: 'the row, with Redis away' },
      )

      redis = await startRedis({ port: redis.port })
      await eventually(async () => (await health()).cluster.redis === 'ok', {
        timeoutMs: 10_000,
        what: 'health: redis ok again',
      })
      await pub.publishAsync('paku/sensors/away/data', msg(2), { qos: 1 })
      await eventually(async () => got.includes(msg(2)), { what: 'fan-out after Redis returned' })
      assert.equal(
        Number(
          (await db.query(`SELECT count(*)::int AS n FROM measurements WHERE device_id = 'away'`))
            .rows[0].n,
        ),
        2,
        'each message stored once',
      )
    },
  )
})
