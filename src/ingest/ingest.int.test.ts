import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import mqtt from 'mqtt'
import {
  defer,
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'

type Ctx = Awaited<ReturnType<typeof setup>>

async function setup(t: TestContext, ingest: Record<string, number> = {}) {
  const url = await testDatabase(t)
  const sut = await startApp(
    t,
    testConfig({ databaseUrl: url, ingest: { maxPayloadBytes: 2048, ...ingest } }),
  )
  const db = await sqlClient(t, url)
  const client = await mqtt.connectAsync(sut.mqttUrl, { clientId: 'ESP32-AABBCCDD' })
  defer(t, () => client.endAsync())
  const rows = async (sql: string, params: unknown[] = []) => (await db.query(sql, params)).rows
  return { ...sut, db, client, rows }
}

const count = async (c: Ctx, table: string, where = 'true', params: unknown[] = []) =>
  Number((await c.rows(`SELECT count(*)::int AS n FROM ${table} WHERE ${where}`, params))[0].n)

const waitCount = (c: Ctx, table: string, n: number, where = 'true', params: unknown[] = []) =>
  eventually(async () => (await count(c, table, where, params)) >= n, {
    what: `${n} rows in ${table} where ${where}`,
  })

describe('ingest through the real broker into PostgreSQL', () => {
  it('stores …/data with identity from the topic, metrics verbatim and the payload timestamp', async (t) => {
    const c = await setup(t)
    await c.client.publishAsync(
      'paku/sensors/ruuvi_cabin/data',
      JSON.stringify({
        device_id: 'ignored',
        location: 'cabin',
        mac: 'AA:BB',
        timestamp: '2026-01-15T14:03:22+02:00',
        metrics: { temperature_c: 21.5, nested: { a: [1, 2] }, s: 'x' },
      }),
      { qos: 1 },
    )
    await waitCount(c, 'measurements', 1)
    const [row] = await c.rows(
      'SELECT site_id, system, device_id, location, mac, ts, metrics FROM measurements',
    )
    assert.deepEqual(
      { ...row, ts: row.ts.toISOString() },
      {
        site_id: 'paku',
        system: 'sensors',
        device_id: 'ruuvi_cabin',
        location: 'cabin',
        mac: 'AA:BB',
        ts: '2026-01-15T12:03:22.000Z',
        metrics: { temperature_c: 21.5, nested: { a: [1, 2] }, s: 'x' },
      },
    )
  })

  it('stores a reading with timestamp "" at the receive time (the old collector lost it)', async (t) => {
    const c = await setup(t)
    const before = Date.now()
    await c.client.publishAsync(
      'paku/sensors/ESP32-1_wired/data',
      JSON.stringify({ device_id: 'ESP32-1_wired', timestamp: '', metrics: { temperature_c: 4 } }),
    )
    await waitCount(c, 'measurements', 1)
    const [row] = await c.rows('SELECT ts FROM measurements')
    assert.ok(row.ts.getTime() >= before - 1000 && row.ts.getTime() <= Date.now() + 1000)
  })

  it('maps the legacy flat paku/ruuvi/van_inside payload into measurements', async (t) => {
    const c = await setup(t)
    await c.client.publishAsync(
      'paku/ruuvi/van_inside',
      JSON.stringify(
        {
          sensor_id: 'van_inside',
          temperature_c: 20.4,
          humidity_percent: 45.1,
          pressure_hpa: 1001.2,
          battery_mv: 2950,
          mac: 'AA:BB:CC:DD:EE:FF',
          timestamp: '2026-11-27T08:00:00Z',
        },
        null,
        2,
      ),
    )
    await waitCount(c, 'measurements', 1)
    const [row] = await c.rows(
      'SELECT site_id, system, device_id, location, metrics FROM measurements',
    )
    assert.deepEqual(row, {
      site_id: 'paku',
      system: 'sensors',
      device_id: 'van_inside',
      location: null,
      metrics: {
        temperature_c: 20.4,
        humidity_percent: 45.1,
        pressure_hpa: 1001.2,
        battery_mv: 2950,
        mac: 'AA:BB:CC:DD:EE:FF',
      },
    })
  })

  it('registers devices from status, keeps the version when a status omits it, and marks the LWT offline', async (t) => {
    const c = await setup(t)
    const device = await mqtt.connectAsync(c.mqttUrl, {
      clientId: 'ESP32-11223344',
      will: {
        topic: 'paku/edge/ESP32-11223344/status',
        payload: Buffer.from('{"online":false}'),
        qos: 1,
        retain: true,
      },
      reconnectPeriod: 0,
    })
    defer(t, () => device.endAsync(true))
    await device.publishAsync(
      'paku/edge/ESP32-11223344/status',
      JSON.stringify({
        online: true,
        device_id: 'ESP32-11223344',
        firmware_version: '1.4.2',
        device_model: 'lilygo-t-display-s3',
        signal_strength_dbm: -61,
        uptime_seconds: 10,
      }),
      { retain: true },
    )
    await waitCount(c, 'devices', 1, `online`)
    await device.publishAsync(
      'paku/edge/ESP32-11223344/status',
      JSON.stringify({ online: true, device_model: 'lilygo-t-display-s3', uptime_seconds: 70 }),
      { retain: true },
    )
    await waitCount(c, 'edge_device_status', 2)
    const [seen] = await c.rows('SELECT last_seen FROM devices')
    // An unclean disconnect makes the broker publish the will.
    device.stream.destroy()
    await waitCount(c, 'edge_device_status', 3)
    await waitCount(c, 'devices', 1, 'online = false')
    const [dev] = await c.rows(
      'SELECT device_id, device_model, current_firmware_version, last_seen, site_id FROM devices',
    )
    assert.equal(dev.device_id, 'ESP32-11223344')
    assert.equal(dev.device_model, 'lilygo-t-display-s3')
    assert.equal(
      dev.current_firmware_version,
      '1.4.2',
      'a status without firmware_version keeps the known one',
    )
    assert.equal(dev.site_id, 'paku')
    assert.deepEqual(dev.last_seen, seen.last_seen, 'the LWT does not refresh last_seen')
    const statuses = await c.rows('SELECT status FROM edge_device_status ORDER BY id')
    assert.deepEqual(
      statuses.map((s) => s.status.uptime_seconds ?? s.status.online),
      [10, 70, false],
    )
  })

  it('does not store the same retained status twice (bridge reconnect replays)', async (t) => {
    const c = await setup(t)
    const status = JSON.stringify({
      online: true,
      device_model: 'esp32-ch340c-30pin',
      uptime_seconds: 5,
    })
    await c.client.publishAsync('paku/edge/ESP32-5/status', status, { retain: true, qos: 1 })
    await c.client.publishAsync('paku/edge/ESP32-5/status', status, { retain: true, qos: 1 })
    await c.client.publishAsync(
      'paku/edge/ESP32-5/status',
      JSON.stringify({ online: true, device_model: 'esp32-ch340c-30pin', uptime_seconds: 65 }),
      { retain: true, qos: 1 },
    )
    await waitCount(c, 'edge_device_status', 2)
    await c.app.ingest.flush()
    assert.equal(await count(c, 'edge_device_status'), 2)
    assert.equal(c.app.ingest.stats().duplicates, 1)
  })

  it('upserts config/report and the legacy 4-level config per device', async (t) => {
    const c = await setup(t)
    await c.client.publishAsync('paku/edge/ESP32-1/config', JSON.stringify({ version: '1.3.0' }))
    await c.client.publishAsync(
      'paku/edge/ESP32-1/config/report',
      JSON.stringify({ version: '1.4.2', timing: { wake_interval_s: 60 } }),
      { retain: true },
    )
    await c.client.publishAsync(
      'paku/edge/ESP32-2/config/report',
      JSON.stringify({ version: '1.4.2' }),
      { retain: true },
    )
    await eventually(
      async () =>
        (await c.rows(`SELECT 1 FROM edge_device_configs WHERE config->>'version' = '1.4.2'`))
          .length === 2,
      { what: 'two configs at 1.4.2' },
    )
    const rows = await c.rows(
      'SELECT site_id, device_id, config FROM edge_device_configs ORDER BY device_id',
    )
    assert.deepEqual(rows, [
      {
        site_id: 'paku',
        device_id: 'ESP32-1',
        config: { version: '1.4.2', timing: { wake_interval_s: 60 } },
      },
      { site_id: 'paku', device_id: 'ESP32-2', config: { version: '1.4.2' } },
    ])
  })

  it('mirrors an OTA attempt: status → progress → result, with the right states and events', async (t) => {
    const c = await setup(t)
    const dev = 'paku/edge/ESP32-AABBCCDD/ota'
    await c.client.publishAsync(
      `${dev}/status`,
      JSON.stringify({
        timestamp: '',
        status: 'accepted',
        current_version: '1.4.1',
        target_version: '1.4.2',
      }),
      { qos: 1 },
    )
    await waitCount(c, 'device_update_status', 1)
    await c.client.publishAsync(
      `${dev}/progress`,
      JSON.stringify({ state: 'Downloading', percent: 40, downloaded: 400, total: 1000 }),
      { qos: 1 },
    )
    await waitCount(
      c,
      'device_update_status',
      1,
      `status = 'downloading' AND progress_percent = 40`,
    )
    await c.client.publishAsync(
      `${dev}/progress`,
      JSON.stringify({ state: 'Verifying', percent: 100 }),
      { qos: 1 },
    )
    await waitCount(c, 'device_update_status', 1, `status = 'downloaded'`)
    await c.client.publishAsync(
      `${dev}/result`,
      JSON.stringify({
        current_version: '1.4.1',
        target_version: '1.4.2',
        success: true,
        result_code: 0,
        message: 'Success',
      }),
      { qos: 1 },
    )
    await waitCount(c, 'device_update_status', 1, `status = 'success'`)
    const [attempt] = await c.rows(
      'SELECT device_id, firmware_version, status, progress_percent, error_message, started_at IS NOT NULL AS started, completed_at IS NOT NULL AS completed FROM device_update_status',
    )
    assert.deepEqual(attempt, {
      device_id: 'ESP32-AABBCCDD',
      firmware_version: '1.4.2',
      status: 'success',
      progress_percent: 100,
      error_message: null,
      started: true,
      completed: true,
    })
    const events = await c.rows('SELECT event_type, firmware_version FROM ota_events ORDER BY id')
    assert.deepEqual(events, [
      { event_type: 'update_started', firmware_version: '1.4.2' },
      { event_type: 'update_completed', firmware_version: '1.4.2' },
    ])
  })

  it('records a failed OTA result with its message, even without a preceding ota/status', async (t) => {
    const c = await setup(t)
    await c.client.publishAsync(
      'paku/edge/ESP32-9/ota/result',
      JSON.stringify({
        target_version: '2.0.0',
        success: false,
        result_code: 2,
        message: 'Download failed',
      }),
      { qos: 1 },
    )
    await waitCount(c, 'device_update_status', 1)
    const [row] = await c.rows(
      'SELECT status, error_message, firmware_version FROM device_update_status',
    )
    assert.deepEqual(row, {
      status: 'failed',
      error_message: 'Download failed',
      firmware_version: '2.0.0',
    })
    await waitCount(c, 'ota_events', 1, `event_type = 'update_failed'`)
  })

  it('rejects hostile input with the reason recorded, while good messages around it still land', async (t) => {
    const c = await setup(t)
    const good = (n: number) => JSON.stringify({ device_id: 'd', metrics: { n } })
    const sends: Array<[string, string | Buffer]> = [
      ['paku/sensors/good/data', good(1)],
      ['paku/sensors/bad/data', '{"device_id": "bad", "metrics": {'],
      ['paku/sensors/good/data', good(2)],
      ['paku/sensors/bad/data', JSON.stringify({ device_id: 'bad', metrics: 'hot' })],
      [
        'paku/sensors/bad/data',
        JSON.stringify({ device_id: 'bad', metrics: { big: 'x'.repeat(3000) } }),
      ],
      ['paku/sensors/data', good(99)],
      ['paku/sensors/bad/data', '{"device_id":"bad","metrics":{"s":"a\\u0000b"}}'],
      ['paku/edge/ESP32-1/ota/bogus', '{}'],
      ['paku/sensors/bad/data', Buffer.from([0xff, 0xfe, 0x00])],
      ['paku/sensors/good/data', good(3)],
    ]
    for (const [topic, payload] of sends) await c.client.publishAsync(topic, payload, { qos: 1 })
    await waitCount(c, 'measurements', 3)
    await waitCount(c, 'ingest_rejects', 7)
    const goods = await c.rows(`SELECT (metrics->>'n')::int AS n FROM measurements ORDER BY id`)
    assert.deepEqual(
      goods.map((r) => r.n),
      [1, 2, 3],
    )
    const rejects = await c.rows(
      'SELECT topic, device_id, client_id, reason, payload_bytes, length(payload) AS kept FROM ingest_rejects ORDER BY id',
    )
    const reasons = rejects.map((r) => r.reason)
    assert.match(reasons[0], /^malformed JSON/)
    assert.equal(reasons[1], 'metrics must be a JSON object')
    const bigBytes = Buffer.byteLength(sends[4]?.[1] as string)
    assert.equal(reasons[2], `payload is ${bigBytes} bytes, more than the limit of 2048`)
    assert.match(reasons[3], /4 levels\), got 3/)
    assert.match(reasons[4], /U\+0000/)
    assert.match(reasons[5], /unknown OTA topic/)
    assert.equal(reasons[6], 'payload is not valid UTF-8')
    assert.equal(rejects[0].device_id, 'bad')
    assert.equal(rejects[0].client_id, 'ESP32-AABBCCDD')
    assert.equal(rejects[2].payload_bytes, bigBytes)
    assert.equal(rejects[2].kept, bigBytes, 'under 4 KiB the whole payload is kept')
    const stats = (await (await fetch(`${c.httpUrl}/health`)).json()) as {
      status: string
      ingest: Record<string, number>
    }
    assert.equal(stats.status, 'ok')
    assert.equal(stats.ingest.rejected, 7)
    assert.equal(stats.ingest.accepted, 3)
    assert.equal(stats.ingest.received, 10)
  })

  it('reports how long the batch writes took on /metrics, as a Prometheus histogram, beside the process figures', async (t) => {
    const c = await setup(t)
    for (let i = 0; i < 3; i++)
      await c.client.publishAsync(
        'paku/sensors/ruuvi_cabin/data',
        JSON.stringify({ metrics: { n: i } }),
        { qos: 1 },
      )
    const text = await (await fetch(`${c.httpUrl}/metrics`)).text()
    const value = (series: string) => {
      const line = text.split('\n').find((l) => l.startsWith(`${series} `))
      assert.ok(line, `${series} in /metrics`)
      return Number(line.slice(series.length + 1))
    }
    assert.match(text, /^# TYPE paku_ingest_flush_duration_seconds histogram$/m)
    const count = value('paku_ingest_flush_duration_seconds_count')
    // Each PUBACK came after its row's batch committed: at least one batch, as many as flushes counted.
    assert.ok(count >= 1)
    assert.equal(count, value('paku_ingest_flushes_total'))
    assert.equal(value('paku_ingest_flush_duration_seconds_bucket{le="+Inf"}'), count)
    assert.equal(value('paku_ingest_flush_duration_seconds_bucket{le="10"}'), count)
    assert.ok(value('paku_ingest_flush_duration_seconds_sum') > 0)
    // The process's own figures sit beside them: how late the event loop ran, GC pauses, CPU and memory.
    assert.match(text, /^# TYPE paku_event_loop_delay_seconds histogram$/m)
    assert.ok(
      value('paku_event_loop_delay_seconds_count') > 0,
      'the app started the runtime monitor',
    )
    assert.match(text, /^# TYPE paku_gc_pause_seconds histogram$/m)
    assert.ok(value('process_cpu_seconds_total') > 0)
    assert.ok(value('process_resident_memory_bytes') > 0)
  })
})

describe('the broker', () => {
  it('delivers retained messages to later subscribers', async (t) => {
    const c = await setup(t)
    await c.client.publishAsync(
      'paku/edge/ESP32-1/config/set',
      JSON.stringify({ timing: { wake_interval_s: 10 } }),
      { qos: 1, retain: true },
    )
    const sub = await mqtt.connectAsync(c.mqttUrl, { clientId: 'ESP32-1' })
    defer(t, () => sub.endAsync())
    const got = new Promise<{ payload: string; retain: boolean }>((resolve) =>
      sub.on('message', (_topic, payload, packet) =>
        resolve({ payload: payload.toString(), retain: packet.retain }),
      ),
    )
    await sub.subscribeAsync('paku/edge/ESP32-1/config/set', { qos: 1 })
    assert.deepEqual(await got, { payload: '{"timing":{"wake_interval_s":10}}', retain: true })
  })

  it('queues QoS 1 messages for an offline persistent session and delivers them on reconnect', async (t) => {
    const c = await setup(t)
    const opts = { clientId: 'ha-bridge', clean: false }
    const first = await mqtt.connectAsync(c.mqttUrl, opts)
    await first.subscribeAsync('paku/edge/+/cmd/ota', { qos: 1 })
    await first.endAsync()
    await c.client.publishAsync(
      'paku/edge/ESP32-1/cmd/ota',
      JSON.stringify({ url: 'http://x/fw.bin', version: '1.4.2' }),
      { qos: 1 },
    )
    const again = mqtt.connect(c.mqttUrl, { ...opts, manualConnect: true })
    const got = new Promise<string>((resolve) =>
      again.on('message', (_t, p) => resolve(p.toString())),
    )
    again.connect()
    defer(t, () => again.endAsync())
    assert.equal(await got, '{"url":"http://x/fw.bin","version":"1.4.2"}')
  })

  it('delivers QoS 2 exactly once and stores it once', async (t) => {
    const c = await setup(t)
    const sub = await mqtt.connectAsync(c.mqttUrl)
    defer(t, () => sub.endAsync())
    const got: string[] = []
    sub.on('message', (_t, p) => got.push(p.toString()))
    await sub.subscribeAsync('paku/sensors/+/data', { qos: 2 })
    await c.client.publishAsync(
      'paku/sensors/q2/data',
      JSON.stringify({ device_id: 'q2', metrics: { n: 1 } }),
      { qos: 2 },
    )
    await waitCount(c, 'measurements', 1)
    await eventually(async () => got.length === 1, { what: 'delivery' })
    await c.app.ingest.flush()
    assert.equal(await count(c, 'measurements'), 1)
    assert.equal(got.length, 1)
  })

  it('accepts MQTT over WebSocket on /mqtt', async (t) => {
    const c = await setup(t)
    const ws = await mqtt.connectAsync(c.wsUrl, { clientId: 'ws-device' })
    defer(t, () => ws.endAsync())
    await ws.publishAsync(
      'paku/sensors/ws/data',
      JSON.stringify({ device_id: 'ws', metrics: { t: 1 } }),
      { qos: 1 },
    )
    await waitCount(c, 'measurements', 1, `device_id = 'ws'`)
    // A plain HTTP request to the WebSocket port is told to upgrade.
    const plain = await fetch(c.wsUrl.replace('ws://', 'http://'))
    assert.equal(plain.status, 426)
  })

  it('closes a connection that sends a packet over mqtt.maxPacketBytes and keeps serving others', async (t) => {
    const url = await testDatabase(t)
    const sut = await startApp(t, testConfig({ databaseUrl: url, mqtt: { maxPacketBytes: 4096 } }))
    const db = await sqlClient(t, url)
    const abuser = await mqtt.connectAsync(sut.mqttUrl, { reconnectPeriod: 0 })
    const closed = new Promise<void>((resolve) => abuser.on('close', () => resolve()))
    abuser.publish('paku/sensors/big/data', Buffer.alloc(10_000, 0x20))
    await closed
    const good = await mqtt.connectAsync(sut.mqttUrl)
    defer(t, () => good.endAsync())
    await good.publishAsync(
      'paku/sensors/ok/data',
      JSON.stringify({ device_id: 'ok', metrics: { t: 1 } }),
      { qos: 1 },
    )
    await eventually(async () => (await db.query('SELECT 1 FROM measurements')).rowCount === 1, {
      what: 'the good row',
    })
  })

  it('refuses topics deeper than mqtt.maxTopicLevels and keeps serving others', async (t) => {
    const c = await setup(t)
    const deep = await mqtt.connectAsync(c.mqttUrl, { reconnectPeriod: 0 })
    const closed = new Promise<void>((resolve) => deep.on('close', () => resolve()))
    deep.publish('a/'.repeat(30) + 'data', '{}')
    await closed
    await c.client.publishAsync(
      'paku/sensors/ok/data',
      JSON.stringify({ device_id: 'ok', metrics: { t: 1 } }),
      { qos: 1 },
    )
    await waitCount(c, 'measurements', 1)
  })

  it('counts a broken packet as a client error, and a clean DISCONNECT as none (and publishes no will for it)', async (t) => {
    const c = await setup(t)
    const broker = async () =>
      (
        (await (await fetch(`${c.httpUrl}/health`)).json()) as {
          broker: { clientErrors: number; clients: number }
        }
      ).broker
    const clientErrors = async () => (await broker()).clientErrors
    const device = await mqtt.connectAsync(c.mqttUrl, {
      clientId: 'ESP32-CLEAN',
      will: {
        topic: 'paku/edge/ESP32-CLEAN/status',
        payload: Buffer.from('{"online":false}'),
        qos: 1,
      },
      reconnectPeriod: 0,
    })
    await device.publishAsync('paku/sensors/clean/data', JSON.stringify({ metrics: { t: 1 } }), {
      qos: 1,
    })
    await device.endAsync()
    await eventually(async () => (await broker()).clients === 1, { what: 'the device gone' })
    await c.app.ingest.flush()
    assert.equal(await clientErrors(), 0)
    assert.equal(await count(c, 'edge_device_status'), 0, 'no will after a clean disconnect')
    // A packet type 0 is reserved (MQTT 3.1.1 §2.2.1): the parser fails the connection.
    const { createConnection } = await import('node:net')
    const s = createConnection(Number(new URL(c.mqttUrl).port), '127.0.0.1')
    s.on('error', () => undefined)
    await new Promise<void>((resolve) => {
      s.on('close', () => resolve())
      s.write(Buffer.from([0x00, 0x00]))
    })
    await eventually(async () => (await clientErrors()) === 1, { what: 'one client error' })
  })

  it('closes sockets that never send CONNECT after connectTimeoutMs', async (t) => {
    const url = await testDatabase(t)
    const sut = await startApp(t, testConfig({ databaseUrl: url, mqtt: { connectTimeoutMs: 200 } }))
    const { createConnection } = await import('node:net')
    const port = Number(new URL(sut.mqttUrl).port)
    const t0 = Date.now()
    await new Promise<void>((resolve) => {
      const s = createConnection(port, '127.0.0.1')
      s.on('close', () => resolve())
      s.on('error', () => undefined)
    })
    assert.ok(Date.now() - t0 < 5000)
  })
})

describe('shutdown', () => {
  it('flushes everything still buffered when the app stops', async (t) => {
    const url = await testDatabase(t)
    const { createApp } = await import('../app.js')
    const { readSqlDir } = await import('../db/index.js')
    const { sqlDir } = await import('../assets.js')
    const { testLogger } = await import('../../scripts/test-helpers.js')
    // A flush interval far beyond the test: rows can only reach the database through stop().
    const app = createApp({
      config: testConfig({
        databaseUrl: url,
        ingest: { flushIntervalMs: 60_000, batchSize: 10_000 },
      }),
      log: testLogger(),
      migrations: readSqlDir(sqlDir()),
      version: 'test',
    })
    await app.start()
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${app.broker.addresses().mqtt?.port}`)
    // QoS 0: acknowledged by nobody, so it waits in the batch (QoS 1 would be written before its PUBACK).
    for (let i = 0; i < 500; i++)
      await client.publishAsync(
        'paku/sensors/s/data',
        JSON.stringify({ device_id: 's', metrics: { i } }),
        { qos: 0 },
      )
    await client.endAsync()
    await eventually(async () => app.ingest.stats().received === 500, { what: 'all 500 received' })
    assert.equal(app.ingest.stats().written, 0)
    await app.stop()
    await app.stop() // idempotent
    const db = await sqlClient(t, url)
    const { rows } = await db.query(
      "SELECT count(*)::int AS n, count(DISTINCT metrics->>'i')::int AS d FROM measurements",
    )
    assert.deepEqual(rows[0], { n: 500, d: 500 })
  })
})
