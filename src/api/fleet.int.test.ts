/**
 * The console's reads: every device of every kind (/api/v1/fleet), series of EcoFlow and status
 * readings and the 5-minute and 6-hour buckets (/api/v1/measurements/series), and an edge device's
 * status and configuration history. Fed through the real broker by the emulators and real clients.
 */
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
import { createHeaterEmulator, createRuuviEmulator } from '../emulate/index.js'
import { createKey } from '../http/index.js'

const KEY = 'fleet-test-admin-key-0123456789-padded-to-32-chars'
const EDGE = 'ESP32-FLEET01'
const SN = 'DCABZ8ZE1234567'

async function setup(t: TestContext) {
  const databaseUrl = await testDatabase(t)
  const s = await startApp(
    t,
    testConfig({
      databaseUrl,
      http: { adminApiKey: KEY, maxAuthFailuresPerMinute: 1000 },
      rollup: { intervalSeconds: 3600 },
    }),
  )
  const db = await sqlClient(t, databaseUrl)
  const get = async (path: string, key: string | null = KEY) => {
    const r = await fetch(`${s.httpUrl}${path}`, {
      headers: key === null ? {} : { 'x-api-key': key },
    })
    return { status: r.status, json: (await r.json()) as Record<string, unknown> }
  }
  return { ...s, db, get }
}

type FleetItem = {
  site_id: string | null
  device_id: string
  kind: string
  systems: string[]
  online: boolean
  last_seen: string | null
  model: string | null
  firmware: string | null
  via: string | null
  battery: { value: unknown; unit: string } | null
  signal: { value: unknown; unit: string } | null
  readings: Record<string, { value: unknown; source: string; system: string; at: string }>
}

/** A fleet of every kind, through the broker: Ruuvi tags, the heater (with an edge status too), an edge device, a fridge, an old sensor, an EcoFlow station. */
async function feed(s: Awaited<ReturnType<typeof setup>>, t: TestContext) {
  const client = await mqtt.connectAsync(s.mqttUrl, { clientId: 'fleet-feeder' })
  defer(t, () => client.endAsync())
  const now = new Date()
  const ruuvi = createRuuviEmulator({
    site: 'paku',
    locations: ['cabin', 'porch'],
    legacy: false,
    random: () => 0.5,
  })
  const heater = createHeaterEmulator({ site: 'paku', deviceId: 'emu01', random: () => 0.5 })
  for (const [topic, payload] of [...ruuvi.tick(now), ...heater.tick(now)])
    await client.publishAsync(topic, payload, { qos: 1 })
  await client.publishAsync(
    'paku/edge/emu01/status',
    JSON.stringify({
      online: true,
      device_model: 'heater-board',
      firmware_version: '2.0.1',
      signal_strength_dbm: -70,
    }),
    { qos: 1 },
  )
  await client.publishAsync(
    `paku/edge/${EDGE}/status`,
    JSON.stringify({
      online: true,
      device_model: 'esp32-s3',
      firmware_version: '1.4.2',
      active_scenario: 'default',
      signal_strength_dbm: -61,
      uptime_seconds: 3600,
    }),
    { qos: 1 },
  )
  await client.publishAsync(
    `paku/edge/${EDGE}/config/report`,
    JSON.stringify({ timing: { wake_interval_s: 60 } }),
    { qos: 1 },
  )
  await client.publishAsync(
    `paku/edge/${EDGE}/status`,
    JSON.stringify({ online: true, active_scenario: 'heater_active', signal_strength_dbm: -58 }),
    { qos: 1 },
  )
  await client.publishAsync(
    'paku/fridge/fridge1/data',
    JSON.stringify({ device_id: 'fridge1', metrics: { temperature_c: 4.5, battery_percent: 81 } }),
    { qos: 1 },
  )
  const hourAgo = new Date(now.getTime() - 3_600_000).toISOString()
  await client.publishAsync(
    'camp/sensors/old_tag/data',
    JSON.stringify({ device_id: 'old_tag', timestamp: hourAgo, metrics: { temperature_c: 12 } }),
    { qos: 1 },
  )
  await client.publishAsync(
    'paku/edge/ESP32-GONE/status',
    JSON.stringify({ online: true, device_model: 'esp32', firmware_version: '1.0.0' }),
    { qos: 1 },
  )
  await client.publishAsync('paku/edge/ESP32-GONE/status', JSON.stringify({ online: false }), {
    qos: 1,
  })
  await s.db.query(
    `INSERT INTO mqtt_sensor_claims (site_id, system, sensor_id, device_id) VALUES ('paku', 'sensors', 'ruuvi_porch', $1)`,
    [EDGE],
  )
  await s.db.query(
    `INSERT INTO ecoflow_measurements (device_sn, ts, model, soc_percent, watts_in_sum, watts_out_sum, pv_in_watts, wifi_rssi) VALUES ($1, NOW(), 'delta_pro', 87, 412, 96, 400, -55)`,
    [SN],
  )
  await eventually(
    async () =>
      (await s.db.query(`SELECT 1 FROM edge_device_status WHERE device_id = 'ESP32-GONE'`))
        .rowCount === 2 || undefined,
    { what: 'the status rows' },
  )
  await eventually(
    async () => (await s.db.query(`SELECT 1 FROM measurements`)).rowCount === 5 || undefined,
    { what: 'the telemetry rows' },
  )
}

describe('/api/v1/fleet and the console reads', () => {
  it('lists every device of every kind with online state, firmware, battery, signal and readings; filters', async (t) => {
    const s = await setup(t)
    await feed(s, t)
    const r = await s.get('/api/v1/fleet')
    assert.equal(r.status, 200)
    const items = r.json.items as FleetItem[]
    const by = (id: string) => items.find((d) => d.device_id === id) as FleetItem
    assert.deepEqual(
      items.map((d) => [d.site_id, d.device_id, d.kind]).sort(),
      [
        [null, SN, 'ecoflow'],
        ['camp', 'old_tag', 'sensor'],
        ['paku', 'ESP32-FLEET01', 'edge'],
        ['paku', 'ESP32-GONE', 'edge'],
        ['paku', 'emu01', 'heater'],
        ['paku', 'fridge1', 'fridge'],
        ['paku', 'ruuvi_cabin', 'sensor'],
        ['paku', 'ruuvi_porch', 'sensor'],
      ].sort(),
    )
    // One entry per device: the heater's readings and its board's status together.
    assert.deepEqual(by('emu01').systems.sort(), ['edge', 'heater'])
    assert.equal(by('emu01').firmware, '2.0.1')
    assert.equal(by('emu01').readings.coolant_temp_c?.source, 'measurements')
    assert.equal(by('emu01').readings.heater_state?.value, 'Off')
    assert.deepEqual(by('emu01').battery, {
      value: by('emu01').readings.battery_v?.value,
      unit: 'V',
    })
    assert.equal(typeof by('emu01').battery?.value, 'number')
    assert.deepEqual(by('ruuvi_cabin').battery, { value: 2900, unit: 'mV' })
    assert.deepEqual(by('fridge1').battery, { value: 81, unit: '%' })
    assert.deepEqual(by(EDGE).signal, { value: -58, unit: 'dBm' }, 'the newest status')
    assert.equal(by(EDGE).model, 'esp32-s3')
    assert.equal(by(EDGE).readings.active_scenario?.value, 'heater_active')
    assert.equal(
      by(EDGE).readings.uptime_seconds,
      undefined,
      'only the newest status: it has no uptime',
    )
    assert.equal(by(EDGE).readings.firmware_version, undefined, 'identity is not a reading')
    assert.deepEqual(by(SN).readings.soc_percent, {
      value: 87,
      source: 'ecoflow',
      system: 'ecoflow',
      at: by(SN).readings.soc_percent?.at,
    })
    assert.deepEqual(by(SN).battery, { value: 87, unit: '%' })
    assert.equal(by('ruuvi_porch').via, EDGE)
    assert.equal(by('ruuvi_cabin').via, null)
    // Online: an edge device's own flag (the LWT), else a message within ten minutes.
    assert.equal(by(EDGE).online, true)
    assert.equal(by('ESP32-GONE').online, false)
    assert.equal(by('ruuvi_cabin').online, true)
    assert.equal(by('old_tag').online, false)
    const seen = items.map((d) => d.last_seen ?? '')
    assert.deepEqual(seen, [...seen].sort().reverse(), 'newest first')
    assert.equal(items.at(-1)?.device_id, 'old_tag')

    const ids = async (q: string) =>
      ((await s.get(`/api/v1/fleet${q}`)).json.items as FleetItem[]).map((d) => d.device_id).sort()
    assert.deepEqual(await ids('?system=heater'), ['emu01'])
    assert.deepEqual(await ids('?site_id=camp'), ['old_tag'])
    assert.deepEqual(await ids('?q=CABIN'), ['ruuvi_cabin'])
    assert.deepEqual(
      await ids(`?q=${EDGE.toLowerCase()}`),
      [EDGE, 'ruuvi_porch'],
      'the gateway matches its relayed sensor too',
    )
    assert.deepEqual(await ids('?device_id=emu01&site_id=paku'), ['emu01'])
    assert.deepEqual(await ids("?device_id=x'%20OR%201=1--"), [])
  })

  it('refuses bad filters, no key and a key without read', async (t) => {
    const s = await setup(t)
    const ingest = await createKey(s.app.db.db, 'esp', ['ingest'])
    const cases: Array<[string, string | null, number]> = [
      ['/api/v1/fleet', null, 401],
      ['/api/v1/fleet', 'wrong-key-0123456789', 401],
      ['/api/v1/fleet', ingest, 403],
      [`/api/v1/fleet?q=${'x'.repeat(129)}`, KEY, 400],
      ['/api/v1/fleet?site_id=a/b', KEY, 400],
      ['/api/v1/fleet?system=%2B', KEY, 400],
      ['/api/v1/fleet?system=a&system=b', KEY, 400],
      ['/api/v1/fleet?limit=5', KEY, 400],
      [`/api/v1/devices/${'x'.repeat(129)}/history`, KEY, 400],
      ['/api/v1/devices/x/history?limit=0', KEY, 400],
      ['/api/v1/devices/x/history?limit=501', KEY, 400],
      ['/api/v1/devices/x/history?site_id=%23', KEY, 400],
      ['/api/v1/devices/x/history', ingest, 403],
      ['/api/v1/measurements/series?source=ecoflow&metric=id', KEY, 400],
      ['/api/v1/measurements/series?source=ecoflow&metric=soc_percent%22%3Bdrop', KEY, 400],
      ['/api/v1/measurements/series?source=raw&metric=x', KEY, 400],
      [
        '/api/v1/measurements/series?metric=t&bucket=5m&from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z',
        KEY,
        400,
      ],
    ]
    for (const [path, key, want] of cases)
      assert.equal(
        (await s.get(path, key)).status,
        want,
        `${path} with ${key === null ? 'no key' : key === KEY ? 'the admin key' : 'that key'}`,
      )
    // Positive control: the same routes answer a read key.
    const reader = await createKey(s.app.db.db, 'reader', ['read'])
    assert.equal((await s.get('/api/v1/fleet', reader)).status, 200)
    assert.equal((await s.get('/api/v1/devices/x/history', reader)).status, 200)
  })

  it('serves EcoFlow and status series and 5-minute and 6-hour buckets from the rollups, the newest part raw', async (t) => {
    const s = await setup(t)
    const day = 86_400_000
    const start = Math.floor(Date.now() / day) * day - 3 * day
    // Three days: EcoFlow polls every 10 minutes, a status every 10 minutes, telemetry every 10 minutes.
    await s.db.query(
      `INSERT INTO ecoflow_measurements (device_sn, ts, soc_percent, watts_in_sum)
       SELECT $2, to_timestamp($1::float8 / 1000) + make_interval(mins => i * 10), i % 100, i FROM generate_series(0, 431) i`,
      [start, SN],
    )
    await s.db.query(
      `INSERT INTO edge_device_status (site_id, device_id, ts, status)
       SELECT 'paku', $2, to_timestamp($1::float8 / 1000) + make_interval(mins => i * 10), jsonb_build_object('signal_strength_dbm', -50 - i % 30, 'online', true) FROM generate_series(0, 431) i`,
      [start, EDGE],
    )
    await s.db.query(
      `INSERT INTO measurements (site_id, system, device_id, ts, metrics)
       SELECT 'paku', 'sensors', 'a', to_timestamp($1::float8 / 1000) + make_interval(mins => i * 10), jsonb_build_object('temperature_c', i % 37) FROM generate_series(0, 431) i`,
      [start],
    )
    const want = async (table: string, expr: string, where: string, width: string) =>
      (
        await s.db.query<{ t: Date; avg: number; n: number }>(
          `SELECT date_bin($1::interval, ts, TIMESTAMPTZ 'epoch') AS t, avg((${expr})::float8) AS avg, count(*)::int AS n FROM ${table} WHERE ${where} GROUP BY 1 ORDER BY 1`,
          [width],
        )
      ).rows
    const expected = {
      ecoflow1h: await want('ecoflow_measurements', 'soc_percent', `device_sn = '${SN}'`, '1 hour'),
      ecoflow5m: await want(
        'ecoflow_measurements',
        'soc_percent',
        `device_sn = '${SN}'`,
        '5 minutes',
      ),
      status6h: await want(
        'edge_device_status',
        "status->>'signal_strength_dbm'",
        `device_id = '${EDGE}'`,
        '6 hours',
      ),
      telemetry5m: await want(
        'measurements',
        "metrics->>'temperature_c'",
        `device_id = 'a'`,
        '5 minutes',
      ),
      telemetry6h: await want(
        'measurements',
        "metrics->>'temperature_c'",
        `device_id = 'a'`,
        '6 hours',
      ),
    }
    await s.app.rollup.pass()
    const range = `from=${new Date(start).toISOString()}&to=${new Date(start + 3 * day).toISOString()}`
    const points = async (q: string) => {
      const r = await s.get(`/api/v1/measurements/series?${q}&${range}`)
      assert.equal(r.status, 200, JSON.stringify(r.json))
      const series = r.json.series as Array<{
        site_id: string
        system: string
        device_id: string
        points: Array<{ t: string; value: number; n: number }>
      }>
      assert.equal(series.length, 1, q)
      return series[0]?.points.map((p) => ({ t: p.t, value: p.value, n: p.n }))
    }
    const same = (
      got: Array<{ t: string; value: number; n: number }> | undefined,
      exp: Array<{ t: Date; avg: number; n: number }>,
      what: string,
    ) => {
      assert.equal(got?.length, exp.length, what)
      for (const [i, e] of exp.entries()) {
        assert.equal(got?.[i]?.t, e.t.toISOString(), `${what} bucket ${i}`)
        assert.ok(
          Math.abs((got?.[i]?.value ?? NaN) - e.avg) < 1e-9,
          `${what} bucket ${i}: ${got?.[i]?.value} ≠ ${e.avg}`,
        )
        assert.equal(got?.[i]?.n, e.n, `${what} bucket ${i} count`)
      }
    }
    // EcoFlow has no 5-minute rollups: 5m reads its raw polls (asserted before they are deleted).
    same(
      await points(`source=ecoflow&metric=soc_percent&device_id=${SN}&bucket=5m`),
      expected.ecoflow5m,
      'ecoflow 5m',
    )
    // Proof that the other buckets come from the rollups: the raw rows they cover are gone now.
    await s.db.query(`DELETE FROM ecoflow_measurements`)
    await s.db.query(`DELETE FROM edge_device_status`)
    await s.db.query(`DELETE FROM measurements`)
    same(
      await points(`source=ecoflow&metric=soc_percent&device_id=${SN}&bucket=1h`),
      expected.ecoflow1h,
      'ecoflow 1h',
    )
    same(
      await points(
        `source=status&metric=signal_strength_dbm&device_id=${EDGE}&site_id=paku&bucket=6h`,
      ),
      expected.status6h,
      'status 6h',
    )
    same(
      await points('metric=temperature_c&device_id=a&bucket=5m'),
      expected.telemetry5m,
      'telemetry 5m',
    )
    same(
      await points('metric=temperature_c&device_id=a&bucket=6h'),
      expected.telemetry6h,
      'telemetry 6h',
    )
    const ecoflow = await s.get(
      `/api/v1/measurements/series?source=ecoflow&metric=soc_percent&${range}`,
    )
    assert.deepEqual(
      (ecoflow.json.series as Array<{ site_id: string; system: string; device_id: string }>).map(
        (x) => [x.site_id, x.system, x.device_id],
      ),
      [['', 'ecoflow', SN]],
    )
    assert.equal(
      (
        (
          await s.get(
            `/api/v1/measurements/series?source=ecoflow&metric=soc_percent&site_id=paku&${range}`,
          )
        ).json.series as unknown[]
      ).length,
      0,
      'stations belong to no site',
    )

    // Rows after the rollup pass are in the newest bucket without waiting for the next pass.
    await s.db.query(
      `INSERT INTO ecoflow_measurements (device_sn, ts, soc_percent) VALUES ($1, NOW(), 55)`,
      [SN],
    )
    await s.db.query(
      `INSERT INTO edge_device_status (site_id, device_id, ts, status) VALUES ('paku', $1, NOW(), '{"signal_strength_dbm": -44}')`,
      [EDGE],
    )
    const recent = `from=${new Date(Date.now() - 3_600_000).toISOString()}`
    const newest = async (q: string) => {
      const r = await s.get(`/api/v1/measurements/series?${q}&${recent}`)
      return (r.json.series as Array<{ points: Array<{ value: number }> }>)[0]?.points.at(-1)?.value
    }
    assert.equal(await newest(`source=ecoflow&metric=soc_percent&device_id=${SN}&bucket=5m`), 55)
    assert.equal(await newest(`source=ecoflow&metric=soc_percent&device_id=${SN}&bucket=1h`), 55)
    assert.equal(
      await newest(`source=status&metric=signal_strength_dbm&device_id=${EDGE}&bucket=6h`),
      -44,
    )
  })

  it("gives an edge device's status messages newest first and the configuration it last reported", async (t) => {
    const s = await setup(t)
    await feed(s, t)
    const r = await s.get(`/api/v1/devices/${EDGE}/history?limit=1`)
    assert.equal(r.status, 200)
    const h = r.json as {
      site_id: string
      status: Array<{ status: Record<string, unknown> }>
      config: { config: unknown } | null
    }
    assert.equal(h.site_id, 'paku')
    assert.deepEqual(
      h.status.map((x) => x.status.active_scenario),
      ['heater_active'],
    )
    assert.deepEqual(h.config?.config, { timing: { wake_interval_s: 60 } })
    const all = (await s.get(`/api/v1/devices/${EDGE}/history`)).json as typeof h
    assert.deepEqual(
      all.status.map((x) => x.status.active_scenario),
      ['heater_active', 'default'],
    )
    const none = (await s.get('/api/v1/devices/ruuvi_cabin/history')).json as typeof h
    assert.deepEqual([none.status, none.config], [[], null])
  })
})
