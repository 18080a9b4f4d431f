import assert from 'node:assert/strict'
import { createConnection } from 'node:net'
import { describe, it } from 'node:test'
import mqtt from 'mqtt'
import mqttPacket from 'mqtt-packet'
import { createLogger } from '../log/index.js'
import {
  defer,
  eventually,
  pgProxy,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const data = (i: number) => JSON.stringify({ device_id: 'd', metrics: { i } })

function dataDir(t: Parameters<typeof defer>[0]) {
  const d = mkdtempSync(join(tmpdir(), 'paku-dur-'))
  defer(t, () => rmSync(d, { recursive: true, force: true }))
  return d
}

/** A raw MQTT 3.1.1 connection, to send exactly the packets a test needs (DUP flags included). */
async function rawClient(port: number, clientId: string) {
  const socket = createConnection(port, '127.0.0.1')
  const parser = mqttPacket.parser()
  const acks: number[] = []
  parser.on('packet', (p: { cmd: string; messageId?: number }) => {
    if (p.cmd === 'puback' && p.messageId !== undefined) acks.push(p.messageId)
  })
  socket.on('data', (b) => parser.parse(b))
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()))
  socket.write(
    mqttPacket.generate({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean: true,
      clientId,
      keepalive: 60,
    }),
  )
  return {
    acks,
    publish(messageId: number, payload: string, dup: boolean) {
      socket.write(
        mqttPacket.generate({
          cmd: 'publish',
          topic: 'paku/sensors/raw/data',
          payload: Buffer.from(payload),
          qos: 1,
          messageId,
          dup,
          retain: false,
        }),
      )
    },
    close: () => socket.destroy(),
  }
}

describe('zero loss', () => {
  it('sends the QoS 1 PUBACK only once the row is committed', async (t) => {
    const url = await testDatabase(t)
    // A flush interval far beyond the test: only the durability wait can have written the row.
    const sut = await startApp(
      t,
      testConfig({ databaseUrl: url, ingest: { flushIntervalMs: 60_000 } }),
    )
    const db = await sqlClient(t, url)
    const client = await mqtt.connectAsync(sut.mqttUrl)
    defer(t, () => client.endAsync())
    for (let i = 0; i < 20; i++) {
      await client.publishAsync('paku/sensors/ack/data', data(i), { qos: 1 })
      const { rows } = await db.query(`SELECT count(*)::int AS n FROM measurements`)
      assert.equal(rows[0].n, i + 1, `row ${i} is in the database when its PUBACK arrives`)
    }
  })

  it('batches pipelined QoS 1 messages instead of one flush per message', async (t) => {
    const url = await testDatabase(t)
    const sut = await startApp(
      t,
      testConfig({ databaseUrl: url, ingest: { flushIntervalMs: 60_000 } }),
    )
    const client = await mqtt.connectAsync(sut.mqttUrl)
    defer(t, () => client.endAsync())
    const before = sut.app.ingest.stats().flushes
    await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        client.publishAsync('paku/sensors/pipe/data', data(i), { qos: 1 }),
      ),
    )
    const flushes = sut.app.ingest.stats().flushes - before
    assert.equal(sut.app.ingest.stats().written, 200)
    assert.ok(flushes < 50, `200 pipelined messages took ${flushes} flushes`)
  })

  it('keeps acknowledging during a database outage (spool), reports degraded, and replays in order', async (t) => {
    const url = await testDatabase(t)
    const proxy = await pgProxy(t, url)
    const sut = await startApp(
      t,
      testConfig({ databaseUrl: proxy.url, dataDir: dataDir(t), database: { poolSize: 2 } }),
    )
    const db = await sqlClient(t, url)
    const client = await mqtt.connectAsync(sut.mqttUrl)
    defer(t, () => client.endAsync())
    await client.publishAsync('paku/sensors/o/data', data(0), { qos: 1 })
    proxy.cut()
    for (let i = 1; i <= 50; i++)
      await client.publishAsync('paku/sensors/o/data', data(i), { qos: 1 })
    const health = (await (await fetch(`${sut.httpUrl}/health`)).json()) as {
      status: string
      ingest: { spoolBytes: number; spooled: number }
    }
    assert.equal(health.status, 'degraded')
    assert.ok(health.ingest.spoolBytes > 0)
    assert.equal(health.ingest.spooled, 50)
    proxy.restore()
    await sut.app.ingest.flush()
    await eventually(async () => (await db.query('SELECT 1 FROM measurements')).rowCount === 51, {
      timeoutMs: 15_000,
      what: '51 rows after the outage',
    })
    const order = (
      await db.query(`SELECT (metrics->>'i')::int AS i FROM measurements ORDER BY id`)
    ).rows.map((r) => r.i)
    assert.deepEqual(
      order,
      Array.from({ length: 51 }, (_, i) => i),
    )
    await eventually(
      async () =>
        ((await (await fetch(`${sut.httpUrl}/health`)).json()) as { status: string }).status ===
        'ok',
      { what: 'healthy again' },
    )
  })

  it('stops acknowledging when the spool is full, and acknowledges once the database is back', async (t) => {
    const url = await testDatabase(t)
    const proxy = await pgProxy(t, url)
    const logged: string[] = []
    const log = createLogger({ level: 'error', format: 'json', write: (l) => logged.push(l) })
    const sut = await startApp(
      t,
      testConfig({ databaseUrl: proxy.url, dataDir: dataDir(t), ingest: { spoolMaxBytes: 2000 } }),
      { log },
    )
    const client = await mqtt.connectAsync(sut.mqttUrl)
    defer(t, () => client.endAsync())
    proxy.cut()
    let acked = 0
    const sends = Array.from({ length: 40 }, (_, i) =>
      client.publishAsync('paku/sensors/full/data', data(i), { qos: 1 }).then(() => acked++),
    )
    // Every message reached ingest, the spool refused what did not fit (a later batch only holds
    // more), and the client has the acknowledgements of whatever it took. The count's control is
    // below: once the database is back it sees all 40.
    await eventually(
      async () => {
        const s = sut.app.ingest.stats()
        return (
          s.received === 40 && acked === s.spooled && logged.some((l) => l.includes('spool full'))
        )
      },
      {
        timeoutMs: 10_000,
        what: () =>
          `a full spool (acked ${acked}, stats ${JSON.stringify(sut.app.ingest.stats())})`,
      },
    )
    assert.ok(acked < 40, `only what fits the spool is acknowledged (${acked})`)
    proxy.restore()
    await sut.app.ingest.flush()
    await Promise.all(sends)
    assert.equal(acked, 40)
    const db = await sqlClient(t, url)
    await eventually(async () => (await db.query('SELECT 1 FROM measurements')).rowCount === 40, {
      timeoutMs: 15_000,
      what: '40 rows',
    })
  })

  it('replays a spool left by an earlier run at start-up, once', async (t) => {
    const url = await testDatabase(t)
    const proxy = await pgProxy(t, url)
    const dir = dataDir(t)
    const first = await startApp(t, testConfig({ databaseUrl: proxy.url, dataDir: dir }))
    const client = await mqtt.connectAsync(first.mqttUrl)
    proxy.cut()
    for (let i = 0; i < 10; i++)
      await client.publishAsync('paku/sensors/r/data', data(i), { qos: 1 })
    await client.endAsync()
    await first.app.stop()
    proxy.restore()
    // The next paku finds the spool and writes it.
    const second = await startApp(t, testConfig({ databaseUrl: url, dataDir: dir }))
    const db = await sqlClient(t, url)
    await eventually(async () => (await db.query('SELECT 1 FROM measurements')).rowCount === 10, {
      timeoutMs: 10_000,
      what: '10 replayed rows',
    })
    assert.equal(second.app.ingest.stats().replayed, 10)
  })

  it('does not store a QoS 1 redelivery (DUP) twice, even after a restart', async (t) => {
    const url = await testDatabase(t)
    const db = await sqlClient(t, url)
    const first = await startApp(t, testConfig({ databaseUrl: url }))
    const raw = await rawClient(Number(new URL(first.mqttUrl).port), 'ESP32-DUP')
    raw.publish(7, data(1), false)
    await eventually(async () => raw.acks.includes(7), { what: 'PUBACK 7' })
    raw.publish(7, data(1), true)
    raw.publish(8, data(2), false)
    await eventually(async () => raw.acks.length === 3, { what: 'three PUBACKs' })
    raw.close()
    await first.app.stop()
    const second = await startApp(t, testConfig({ databaseUrl: url }))
    const again = await rawClient(Number(new URL(second.mqttUrl).port), 'ESP32-DUP')
    again.publish(8, data(2), true)
    // Same id, different content: a new message, stored.
    again.publish(7, data(3), true)
    await eventually(async () => again.acks.length === 2, { what: 'two PUBACKs' })
    again.close()
    const rows = (
      await db.query(`SELECT (metrics->>'i')::int AS i FROM measurements ORDER BY id`)
    ).rows.map((r) => r.i)
    assert.deepEqual(rows, [1, 2, 3])
    assert.equal(second.app.ingest.stats().duplicates, 1)
  })

  it('lets a client’s message ids go when it disconnects, and recognises its redelivery when it is back', async (t) => {
    const url = await testDatabase(t)
    const db = await sqlClient(t, url)
    const { app, mqttUrl } = await startApp(t, testConfig({ databaseUrl: url }))
    const port = Number(new URL(mqttUrl).port)
    const raw = await rawClient(port, 'ESP32-BACK')
    raw.publish(7, data(1), false)
    await eventually(async () => raw.acks.includes(7), { what: 'PUBACK 7' })
    assert.equal(app.ingest.stats().rememberedClients, 1)
    raw.close()
    await eventually(async () => app.ingest.stats().rememberedClients === 0, {
      what: 'its ids let go',
    })
    const again = await rawClient(port, 'ESP32-BACK')
    again.publish(7, data(1), true)
    again.publish(8, data(2), false)
    await eventually(async () => again.acks.length === 2, { what: 'two PUBACKs' })
    again.close()
    const rows = (
      await db.query(`SELECT (metrics->>'i')::int AS i FROM measurements ORDER BY id`)
    ).rows.map((r) => r.i)
    assert.deepEqual(rows, [1, 2])
    assert.equal(app.ingest.stats().duplicates, 1)
  })

  it('remembers the newest 1,024 QoS 1 ids of a client across a restart, and no more', async (t) => {
    const url = await testDatabase(t)
    const db = await sqlClient(t, url)
    const first = await startApp(t, testConfig({ databaseUrl: url }))
    const raw = await rawClient(Number(new URL(first.mqttUrl).port), 'ESP32-MANY')
    // 50 in flight at a time: the broker closes a client with more than mqtt.maxInflightInbound (100).
    for (let from = 1; from <= 1100; from += 50) {
      for (let id = from; id < from + 50; id++) raw.publish(id, data(id), false)
      await eventually(async () => raw.acks.length === from + 49, {
        what: `PUBACKs up to ${from + 49}`,
      })
    }
    raw.close()
    await first.app.stop()
    const kept = (
      await db.query(
        `SELECT count(*)::int AS n, min(message_id) AS lo, max(message_id) AS hi FROM ingest_dedup WHERE client_id = 'ESP32-MANY'`,
      )
    ).rows[0]
    assert.deepEqual(kept, { n: 1024, lo: 77, hi: 1100 })
    const second = await startApp(t, testConfig({ databaseUrl: url }))
    const again = await rawClient(Number(new URL(second.mqttUrl).port), 'ESP32-MANY')
    again.publish(1100, data(1100), true)
    // 76 left the window 1,024 ids ago: stored again (at-least-once), as documented.
    again.publish(76, data(76), true)
    await eventually(async () => again.acks.length === 2, { what: 'two PUBACKs' })
    again.close()
    await second.app.stop()
    const counts = (
      await db.query(
        `SELECT (metrics->>'i')::int AS i, count(*)::int AS n FROM measurements WHERE (metrics->>'i')::int IN (76, 1100) GROUP BY 1 ORDER BY 1`,
      )
    ).rows
    assert.deepEqual(counts, [
      { i: 76, n: 2 },
      { i: 1100, n: 1 },
    ])
    assert.equal(second.app.ingest.stats().duplicates, 1)
  })
})

describe('restarts', () => {
  it('delivers retained config and a queued QoS 1 command to a device that reconnects after a paku restart', async (t) => {
    const url = await testDatabase(t)
    const first = await startApp(t, testConfig({ databaseUrl: url }))
    const device = { clientId: 'ESP32-RESTART', clean: false }
    const d1 = await mqtt.connectAsync(first.mqttUrl, device)
    await d1.subscribeAsync('paku/edge/ESP32-RESTART/cmd/ota', { qos: 1 })
    await d1.endAsync()
    const operator = await mqtt.connectAsync(first.mqttUrl)
    await operator.publishAsync(
      'paku/edge/ESP32-RESTART/config/set',
      '{"timing":{"wake_interval_s":300}}',
      { qos: 1, retain: true },
    )
    await operator.publishAsync(
      'paku/edge/ESP32-RESTART/cmd/ota',
      '{"url":"http://x/fw.bin","version":"1.5.0"}',
      { qos: 1 },
    )
    await operator.endAsync()
    await first.app.stop()

    const second = await startApp(t, testConfig({ databaseUrl: url }))
    const d2 = mqtt.connect(second.mqttUrl, { ...device, manualConnect: true })
    const got: Array<[string, string, boolean]> = []
    d2.on('message', (topic, payload, packet) =>
      got.push([topic, payload.toString(), packet.retain]),
    )
    d2.connect()
    defer(t, () => d2.endAsync())
    await eventually(async () => got.length === 1, { what: 'the queued command' })
    await d2.subscribeAsync('paku/edge/ESP32-RESTART/config/set', { qos: 1 })
    await eventually(async () => got.length === 2, { what: 'the retained config' })
    assert.deepEqual(got, [
      ['paku/edge/ESP32-RESTART/cmd/ota', '{"url":"http://x/fw.bin","version":"1.5.0"}', false],
      ['paku/edge/ESP32-RESTART/config/set', '{"timing":{"wake_interval_s":300}}', true],
    ])
  })
})
