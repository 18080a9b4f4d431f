import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import mqtt, { type MqttClient } from 'mqtt'
import {
  redisSkipReason,
  startInstance,
  startRedis,
  type Instance,
} from '../../scripts/cluster-kit.js'
import { defer, eventually, sqlClient, testDatabase } from '../../scripts/test-helpers.js'
import { startFakeOpenApi } from '../../scripts/test-support/fake-ecoflow-api.js'
import { espImage } from '../../scripts/test-support/esp-image.js'

// CI installs redis-server (.ci/run); on a developer machine without it these tests are skipped, loudly.
const skip = await redisSkipReason()

type T = Parameters<typeof testDatabase>[0]
const KEY = 'failover-test-key-0123456789-padded-to-32-characters'

/** Three paku processes (killable with SIGKILL) on one test database and one Redis. */
async function processes(
  t: T,
  o: { env?: Record<string, string>; config?: Record<string, unknown> } = {},
) {
  const url = await testDatabase(t)
  const redis = await startRedis()
  defer(t, () => redis.stop())
  const nodes: Instance[] = []
  // One after the other: the first takes every singleton task, which makes the failover visible.
  for (const name of ['a', 'b', 'c']) {
    const node = await startInstance({
      name,
      databaseUrl: url,
      redisUrl: redis.url,
      env: { PAKU_ADMIN_API_KEY: KEY, ...o.env },
      config: o.config,
    })
    defer(t, () => node.stop())
    nodes.push(node)
  }
  const db = await sqlClient(t, url)
  return { url, nodes, db }
}

const leaderOf = async (n: Instance): Promise<string[]> =>
  ((await n.health()).cluster as { leaderOf: string[] }).leaderOf

describe('several paku processes: failures', { skip, timeout: 120_000 }, () => {
  it('killing an instance mid-load: its clients reconnect to the others, nothing acknowledged is lost, nothing is stored twice', async (t) => {
    const { nodes, db } = await processes(t)
    const servers = nodes.map((n) => ({ host: '127.0.0.1', port: n.mqttPort }))
    const PUBLISHERS = 6
    const acked = new Map<string, Set<number>>()
    const clients: MqttClient[] = []
    for (let i = 0; i < PUBLISHERS; i++) {
      // Each client's list starts at another instance, like devices spread by a load balancer.
      const mine = [...servers.slice(i % 3), ...servers.slice(0, i % 3)]
      const c = await mqtt.connectAsync({
        servers: mine,
        clientId: `kill-${i}`,
        clean: true,
        reconnectPeriod: 100,
        connectTimeout: 2000,
        keepalive: 5,
      })
      defer(t, () => c.endAsync(true))
      clients.push(c)
      acked.set(`kill_${i}`, new Set())
    }
    let stop = false
    const sent = new Map<string, number>()
    const publisher = async (i: number) => {
      const c = clients[i] as MqttClient
      const device = `kill_${i}`
      for (let seq = 0; !stop; seq++) {
        sent.set(device, seq + 1)
        try {
          // mqtt.js keeps an unacknowledged QoS 1 message and sends it again after reconnecting.
          await c.publishAsync(
            `paku/sensors/${device}/data`,
            JSON.stringify({ device_id: device, metrics: { seq } }),
            { qos: 1 },
          )
          acked.get(device)?.add(seq)
        } catch {
          // Not acknowledged: it may or may not be stored, but never twice (checked below).
        }
      }
    }
    const running = Array.from({ length: PUBLISHERS }, (_, i) => publisher(i))
    // Killed mid-load: once every publisher has had some messages acknowledged.
    await eventually(async () => [...acked.values()].every((s) => s.size >= 10), {
      timeoutMs: 10_000,
      what: 'ten acknowledged messages from every publisher',
    })
    const before = [...acked.values()].reduce((n, s) => n + s.size, 0)
    await nodes[0]?.kill()
    const killedAt = Date.now()
    // The clients of the dead instance come back on the others and go on publishing.
    await eventually(
      async () =>
        [0, 3].every(
          (i) =>
            (clients[i] as MqttClient).connected &&
            (clients[i]?.options.port as number) !== nodes[0]?.mqttPort,
        ),
      {
        timeoutMs: 10_000,
        what: 'the dead instance clients reconnected elsewhere',
      },
    )
    const reconnectMs = Date.now() - killedAt
    const mark = new Map([...acked].map(([d, s]) => [d, s.size]))
    await eventually(async () => [...acked].every(([d, s]) => s.size > (mark.get(d) ?? 0) + 20), {
      timeoutMs: 15_000,
      what: 'publishing to go on after the kill',
    })
    stop = true
    await Promise.all(running)
    const total = [...acked.values()].reduce((n, s) => n + s.size, 0)
    assert.ok(
      before > 0 && total > before,
      `acknowledged ${before} before the kill, ${total} in all`,
    )
    // Every acknowledged message is a row, once; no message is a row twice.
    await eventually(
      async () => {
        const r = await db.query(
          `SELECT count(DISTINCT (device_id, metrics->>'seq'))::int AS n FROM measurements WHERE device_id LIKE 'kill\\_%'`,
        )
        return Number(r.rows[0].n) >= total
      },
      { timeoutMs: 10_000, what: 'every acknowledged message stored' },
    )
    const rows = await db.query<{ device_id: string; seq: number; n: number }>(
      `SELECT device_id, (metrics->>'seq')::int AS seq, count(*)::int AS n FROM measurements WHERE device_id LIKE 'kill\\_%' GROUP BY 1, 2`,
    )
    const stored = new Map<string, Set<number>>()
    for (const r of rows.rows)
      stored.set(r.device_id, (stored.get(r.device_id) ?? new Set()).add(r.seq))
    const duplicated = rows.rows.filter((r) => r.n > 1)
    assert.deepEqual(duplicated, [], 'no message stored twice')
    for (const [device, seqs] of acked) {
      const missing = [...seqs].filter((s) => !stored.get(device)?.has(s))
      assert.deepEqual(missing, [], `${device}: acknowledged but not stored`)
    }
    t.diagnostic(
      `acknowledged ${total} (${before} before the kill), ${rows.rows.length} rows, reconnected after ${reconnectMs} ms`,
    )
  })

  it('EcoFlow polling and rollout progression run on exactly one instance and move within seconds when it is killed', async (t) => {
    const SN = 'DCABZ8ZE1234567'
    const MODEL = 'esp32-failover'
    const fake = await startFakeOpenApi({
      accessKey: 'AK',
      secretKey: 'SK',
      devices: [{ sn: SN, productName: 'DELTA Pro', fixture: 'delta-pro-quota.json' }],
    })
    defer(t, () => fake.close())
    const { nodes, db } = await processes(t, {
      env: {
        PAKU_ECOFLOW_ACCESS_KEY: 'AK',
        PAKU_ECOFLOW_SECRET_KEY: 'SK',
        PAKU_ECOFLOW_API_URL: fake.url,
        PAKU_ECOFLOW_DEVICES: SN,
        PAKU_ECOFLOW_POLL_SECONDS: '5',
      },
      config: { ota: { rolloutTickSeconds: 1 }, cluster: { leaderRetrySeconds: 1 } },
    })
    const [a, b, c] = nodes as [Instance, Instance, Instance]
    for (const task of ['rollouts', 'ecoflow', 'rollup']) {
      const leaders = (
        await Promise.all(
          nodes.map(async (n) => ((await leaderOf(n)).includes(task) ? n.name : undefined)),
        )
      ).filter(Boolean)
      assert.deepEqual(leaders, ['a'], `${task}: one leader, the first instance`)
    }
    assert.deepEqual(
      await Promise.all(
        [b, c].map(async (n) => ((await n.health()).ecoflow as { state: string }).state),
      ),
      ['standby', 'standby'],
    )

    // One poller: one row per poll (one device) every 5 s, so three polls in a row span 10 s; two or
    // three pollers, each polling once in any 5 s, would fit three polls into 5 s. Between the two
    // lies a margin of 2.5 s either way for a poll's own time; the polls of the first seconds, slower
    // by up to a second, are left out.
    const t0 = (await db.query(`SELECT now()::text AS t`)).rows[0].t as string
    const polls = async () =>
      (
        await db.query<{ ms: number }>(
          `SELECT (extract(epoch FROM ts) * 1000)::float8 AS ms FROM ecoflow_measurements WHERE ts > $1::timestamptz ORDER BY ts`,
          [t0],
        )
      ).rows.map((r) => r.ms)
    const times = await eventually(
      async () => {
        const p = await polls()
        return p.length >= 3 ? p : null
      },
      {
        timeoutMs: 20_000,
        what: 'three more polls',
      },
    )
    const gaps = times.slice(1).map((ms, i) => ms - (times[i] as number))
    const spans = gaps.slice(1).map((g, i) => g + (gaps[i] as number))
    assert.ok(
      spans.every((span) => span >= 7500),
      `one instance polls, every 5 s: ${gaps.map((g) => Math.round(g)).join(', ')} ms between polls`,
    )

    // A rollout that takes in devices as they appear, created through a standby instance.
    const api = (n: Instance, path: string, init: RequestInit = {}) =>
      fetch(`${n.httpUrl}${path}`, {
        ...init,
        headers: { 'x-api-key': KEY, 'content-type': 'application/json', ...init.headers },
      })
    const up = await api(b, `/api/admin/firmware/${MODEL}/1.1.0`, {
      method: 'PUT',
      body: espImage({ size: 4096, version: '1.1.0' }),
      headers: { 'content-type': 'application/octet-stream' },
    })
    assert.equal(up.status, 201, await up.text())
    const created = await api(b, '/api/admin/rollouts', {
      method: 'POST',
      body: JSON.stringify({
        name: 'failover',
        firmware_version: '1.1.0',
        device_model: MODEL,
        target_type: 'all',
      }),
    })
    assert.equal(created.status, 200, await created.text())

    const rows = async (since: string) =>
      Number(
        (
          await db.query(
            `SELECT count(*)::int AS n FROM ecoflow_measurements WHERE created_at > $1::timestamptz`,
            [since],
          )
        ).rows[0].n,
      )
    // Kill the leader (SIGKILL: no goodbye; PostgreSQL ends its session when the socket closes).
    const killSql = (await db.query(`SELECT now()::text AS t`)).rows[0].t as string
    await a.kill()
    const killedAt = Date.now()
    await eventually(
      async () => {
        const held = (await Promise.all([b, c].map(leaderOf))).flat().sort()
        return held.join() === 'ecoflow,rollouts,rollup'
      },
      { timeoutMs: 8000, what: 'every task taken over by b or c' },
    )
    const takeoverMs = Date.now() - killedAt
    // The new EcoFlow leader polls at once.
    await eventually(async () => (await rows(killSql)) >= 1, {
      timeoutMs: 8000,
      what: 'a poll by the new leader',
    })
    const pollMs = Date.now() - killedAt

    // A device appears on c: the new rollout leader takes it in and sends it cmd/ota, once. A watcher
    // on c sees every cmd/ota, in the order each instance sent them.
    const watcher = await mqtt.connectAsync(c.mqttUrl, { reconnectPeriod: 0 })
    defer(t, () => watcher.endAsync(true))
    const sent: string[] = []
    watcher.on('message', (topic) => sent.push(topic.split('/')[2] as string))
    await watcher.subscribeAsync('paku/edge/+/cmd/ota', { qos: 1 })
    const appear = async (clientId: string) => {
      const d = await mqtt.connectAsync(c.mqttUrl, { clientId, reconnectPeriod: 0 })
      defer(t, () => d.endAsync(true))
      const got: string[] = []
      d.on('message', (_topic, payload) => got.push(payload.toString()))
      await d.subscribeAsync(`paku/edge/${clientId}/cmd/ota`, { qos: 1 })
      await d.publishAsync(
        `paku/edge/${clientId}/status`,
        JSON.stringify({ online: true, device_model: MODEL, firmware_version: '1.0.0' }),
        { qos: 1 },
      )
      return got
    }
    const commands = await appear('ESP32-FAILOVER')
    await eventually(async () => commands.length > 0, {
      timeoutMs: 10_000,
      what: 'cmd/ota from the new rollout leader',
    })
    // A second device appears after that: the leader's later ticks take it in and send it its cmd/ota,
    // and a second cmd/ota to the first device, from any instance, would have come by then.
    const second = await appear('ESP32-FAILOVER-2')
    await eventually(async () => second.length > 0 && sent.includes('ESP32-FAILOVER-2'), {
      timeoutMs: 10_000,
      what: 'cmd/ota to the second device',
    })
    assert.deepEqual(sent, ['ESP32-FAILOVER', 'ESP32-FAILOVER-2'], 'one instance sends each once')
    assert.equal(commands.length, 1, 'one instance sends it')
    assert.equal((JSON.parse(commands[0] as string) as { version: string }).version, '1.1.0')
    t.diagnostic(
      `polls ${gaps.map((g) => Math.round(g)).join(', ')} ms apart; tasks taken over ${takeoverMs} ms after the kill; first poll by the new leader after ${pollMs} ms`,
    )
  })
})
