import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import mqtt, { type MqttClient } from 'mqtt'
import { redisSkipReason, startRedis } from '../../scripts/cluster-kit.js'
import {
  defer,
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'

// CI installs redis-server (.ci/run); on a developer machine without it these tests are skipped, loudly.
const skip = await redisSkipReason()

const KEY = 'cluster-test-key-0123456789-padded-to-32-characters'

type T = Parameters<typeof testDatabase>[0]

/** Three paku instances in this process on one test database and one Redis (each on its own ports). */
async function cluster(t: T) {
  const url = await testDatabase(t)
  const redis = await startRedis()
  defer(t, () => redis.stop())
  const names = ['a', 'b', 'c']
  const nodes: Array<Awaited<ReturnType<typeof startApp>>> = []
  for (const name of names) {
    nodes.push(
      await startApp(
        t,
        testConfig({
          databaseUrl: url,
          http: { adminApiKey: KEY },
          cluster: { redisUrl: redis.url, instanceId: `test-${name}`, leaderRetrySeconds: 1 },
        }),
      ),
    )
  }
  const db = await sqlClient(t, url)
  const client = async (node: number, o: mqtt.IClientOptions = {}) => {
    const c = await mqtt.connectAsync(nodes[node]?.mqttUrl as string, { reconnectPeriod: 0, ...o })
    defer(t, () => c.endAsync(true))
    return c
  }
  return { url, redis, nodes, db, client }
}

/** Collects what a client receives, by topic. */
function inbox(c: MqttClient) {
  const got: Array<{ topic: string; payload: string; retain: boolean }> = []
  c.on('message', (topic, payload, packet) =>
    got.push({ topic, payload: payload.toString(), retain: packet.retain }),
  )
  return got
}

describe('three paku instances on one PostgreSQL and one Redis', { skip, timeout: 120_000 }, () => {
  it('a client on one instance receives what a client on another publishes (QoS 0 and 1), and each message is stored once', async (t) => {
    const { client, db } = await cluster(t)
    const subB = await client(1)
    const subC = await client(2, { clean: true })
    await subB.subscribeAsync('paku/sensors/+/data', { qos: 1 })
    await subC.subscribeAsync('paku/sensors/#', { qos: 0 })
    const b = inbox(subB)
    const c = inbox(subC)
    const pub = await client(0)
    for (const qos of [0, 1] as const) {
      await pub.publishAsync(
        `paku/sensors/x_${qos}/data`,
        JSON.stringify({ device_id: `x_${qos}`, metrics: { qos } }),
        { qos },
      )
    }
    await eventually(async () => b.length === 2 && c.length === 2, {
      what: () => `deliveries on b ${b.length}, c ${c.length}`,
    })
    assert.deepEqual(b.map((m) => m.topic).sort(), [
      'paku/sensors/x_0/data',
      'paku/sensors/x_1/data',
    ])
    // Stored by the instance that received them, once: the other two only delivered them.
    await eventually(
      async () =>
        Number(
          (
            await db.query(
              `SELECT count(*)::int AS n FROM measurements WHERE device_id LIKE 'x\\_%'`,
            )
          ).rows[0].n,
        ) >= 2,
    )
    // A marker through each instance, acknowledged once stored (QoS 1): each writer keeps order, so a
    // copy of x_0 or x_1 that any instance took in (all three had them: b and c delivered them) is
    // stored by then.
    for (const node of [0, 1, 2])
      await (
        await client(node)
      ).publishAsync(
        `paku/sensors/mark_${node}/data`,
        JSON.stringify({ device_id: `mark_${node}`, metrics: { n: 1 } }),
        { qos: 1 },
      )
    assert.equal(
      Number(
        (
          await db.query(
            `SELECT count(*)::int AS n FROM measurements WHERE device_id LIKE 'mark\\_%'`,
          )
        ).rows[0].n,
      ),
      3,
      'the markers are stored',
    )
    const rows = await db.query(
      `SELECT device_id, count(*)::int AS n FROM measurements WHERE device_id LIKE 'x\\_%' GROUP BY 1 ORDER BY 1`,
    )
    assert.deepEqual(rows.rows, [
      { device_id: 'x_0', n: 1 },
      { device_id: 'x_1', n: 1 },
    ])
  })

  it('a retained message set on A is delivered to a new subscriber on C', async (t) => {
    const { client } = await cluster(t)
    const pub = await client(0)
    const payload = JSON.stringify({ timing: { wake_interval_s: 300 } })
    await pub.publishAsync('paku/edge/ESP32-R/config/set', payload, { qos: 1, retain: true })
    type Inbox = ReturnType<typeof inbox>
    /**
     * Subscribes a new client on C to `topics` (one SUBSCRIBE) until one receives a retained message
     * on `until`, which it does once C holds it; returns what that client received.
     */
    const retainedOnC = async (topics: string[], until: string) => {
      const inboxes: Inbox[] = []
      let found: Inbox | undefined
      await eventually(
        async () => {
          found = inboxes.find((g) => g.some((m) => m.topic === until && m.retain))
          if (found) return true
          const sub = await client(2)
          inboxes.push(inbox(sub))
          await sub.subscribeAsync(topics, { qos: 1 })
          return false
        },
        { what: `a retained message on ${until} on C` },
      )
      return found as Inbox
    }
    // Shared through the Redis emitter: C holds it in memory (and A wrote it to PostgreSQL).
    const R = 'paku/edge/ESP32-R/config/set'
    const got = await retainedOnC([R], R)
    assert.deepEqual(got[0], { topic: R, payload, retain: true })
    // Cleared on B, gone on C too. B then sets another retained message, which C takes after the
    // clear (B's messages reach C in order); a new client on C subscribed to both gets R's first if
    // there is one (one SUBSCRIBE's retained messages come topic by topic, in its order).
    const S = 'paku/edge/ESP32-S/config/set'
    const b = await client(1)
    await b.publishAsync(R, '', { qos: 1, retain: true })
    await b.publishAsync(S, payload, { qos: 1, retain: true })
    const late = await retainedOnC([R, S], S)
    // A client whose SUBSCRIBE lands while the clear passes through C receives the clear itself, live
    // (empty, not retained): that is MQTT delivering it, not the old value coming back.
    assert.deepEqual(
      late.filter((m) => m.topic === R && (m.retain || m.payload !== '')),
      [],
    )
  })

  it('a persistent session made on A resumes on B with the QoS 1 message queued while it was away, delivered once', async (t) => {
    const { client, db, nodes } = await cluster(t)
    const first = await client(0, { clientId: 'ha-bridge', clean: false })
    await first.subscribeAsync('paku/edge/+/cmd/#', { qos: 1 })
    await first.endAsync()
    // Published on C while the session's client is offline, once C knows the session: A shares it
    // before a marker that A relays afterwards reaches a watcher on C (one Redis connection carries both).
    const pub = await client(2)
    const watcher = await client(2)
    const marks = inbox(watcher)
    await watcher.subscribeAsync('paku/edge/MARK/config/set', { qos: 1 })
    await (await client(0)).publishAsync('paku/edge/MARK/config/set', '{}', { qos: 1 })
    await eventually(async () => marks.length > 0, { what: "A's marker on C" })
    await pub.publishAsync('paku/edge/ESP32-Q/cmd/ota', '{"url":"u1"}', { qos: 1 })
    await eventually(
      async () =>
        Number(
          (
            await db.query(
              `SELECT count(*)::int AS n FROM mqtt_outgoing WHERE client_id = 'ha-bridge'`,
            )
          ).rows[0].n,
        ) === 1,
      { what: 'the queued row' },
    )
    const resumed = mqtt.connect(nodes[1]?.mqttUrl as string, {
      clientId: 'ha-bridge',
      clean: false,
      reconnectPeriod: 0,
    })
    defer(t, () => resumed.endAsync(true))
    const got = inbox(resumed)
    const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
      resumed.once('connect', (p) => resolve(p as never))
      resumed.once('error', reject)
      resumed.once('close', () => reject(new Error('closed before CONNACK')))
    })
    assert.equal(connack.sessionPresent, true, 'B knows the session made on A')
    await eventually(async () => got.length === 1, { what: 'the queued message on B' })
    assert.deepEqual(
      got.map((m) => m.payload),
      ['{"url":"u1"}'],
    )
    // Live delivery after resuming, and the acknowledged message leaves the queue everywhere.
    await pub.publishAsync('paku/edge/ESP32-Q/cmd/ota', '{"url":"u2"}', { qos: 1 })
    await eventually(async () => got.length === 2, { what: 'the live message on B' })
    await eventually(
      async () =>
        Number(
          (
            await db.query(
              `SELECT count(*)::int AS n FROM mqtt_outgoing WHERE client_id = 'ha-bridge'`,
            )
          ).rows[0].n,
        ) === 0,
      { what: 'an empty queue in PostgreSQL' },
    )
    await resumed.endAsync()
    // Back on A: nothing is delivered again (A's memory saw B take and acknowledge them).
    const again = await client(0, { clientId: 'ha-bridge', clean: false })
    const dup = inbox(again)
    // A new message reaches it after anything A still held for it (queued messages go out on connect).
    await pub.publishAsync('paku/edge/ESP32-Q/cmd/ota', '{"url":"u3"}', { qos: 1 })
    await eventually(async () => dup.length > 0, { what: 'the new message back on A' })
    assert.deepEqual(
      dup.map((m) => m.payload),
      ['{"url":"u3"}'],
    )
  })

  it("a command sent through one instance is closed by a device's acknowledgement that reaches another", async (t) => {
    const { nodes, client } = await cluster(t)
    // The device is on C; the command goes out through A, whose memory holds it open.
    const device = await client(2, { clientId: 'ESP32-CMD' })
    await device.publishAsync(
      'paku/edge/ESP32-CMD/status',
      JSON.stringify({ online: true, device_model: 'esp32-heater', firmware_version: '1.0.0' }),
      { qos: 1 },
    )
    await device.subscribeAsync('paku/edge/ESP32-CMD/config/set', { qos: 1 })
    device.on('message', (_topic, payload) => {
      const body = JSON.parse(payload.toString()) as Record<string, unknown>
      void device.publishAsync(
        'paku/edge/ESP32-CMD/config/report',
        JSON.stringify({ ...body, device_id: 'ESP32-CMD' }),
        { qos: 1 },
      )
    })
    const http = nodes[0]?.httpUrl as string
    const headers = { 'x-api-key': KEY, 'content-type': 'application/json' }
    const post = async () =>
      fetch(`${http}/api/v1/commands`, {
        method: 'POST',
        headers,
        body: JSON.stringify({
          device_id: 'ESP32-CMD',
          type: 'config',
          config: { timing: { wake_interval_s: 120 } },
        }),
      })
    const res = await eventually(
      async () => {
        const r = await post()
        return r.status === 202 ? r : undefined
      },
      { what: 'the command accepted (device known)' },
    )
    const { command } = (await res.json()) as { command: { id: string } }
    await eventually(
      async () => {
        const r = (await (
          await fetch(`${http}/api/v1/commands/${command.id}`, { headers })
        ).json()) as { command: { status: string } }
        return r.command.status === 'acknowledged'
      },
      { what: 'the command acknowledged' },
    )
  })

  it('each singleton task has exactly one leader, shown in /health; it moves when the leader stops', async (t) => {
    const { nodes } = await cluster(t)
    const health = async () =>
      Promise.all(
        nodes.map(
          async (n) =>
            (await (await fetch(`${n.httpUrl}/health`)).json()) as {
              cluster: { instanceId: string; leaderOf: string[]; redis: string }
            },
        ),
      )
    const hs = await health()
    assert.deepEqual(
      hs.map((h) => h.cluster.instanceId),
      ['test-a', 'test-b', 'test-c'],
    )
    assert.ok(hs.every((h) => h.cluster.redis === 'ok'))
    const leaders = (task: string, list: typeof hs) =>
      list.filter((h) => h.cluster.leaderOf.includes(task)).map((h) => h.cluster.instanceId)
    for (const task of ['rollouts', 'ecoflow', 'rollup'])
      assert.deepEqual(leaders(task, hs), ['test-a'], `${task}: the first instance took it`)
    await nodes[0]?.app.stop()
    await eventually(
      async () => {
        const rest = (
          await Promise.all(
            nodes
              .slice(1)
              .map(
                async (n) =>
                  (await (await fetch(`${n.httpUrl}/health`)).json()) as (typeof hs)[number],
              ),
          )
        ).map((h) => h)
        return ['rollouts', 'ecoflow', 'rollup'].every((task) => leaders(task, rest).length === 1)
      },
      { timeoutMs: 5000, what: 'a new leader for every task' },
    )
  })
})
