import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import mqtt from 'mqtt'
import { expandGrafanaSql } from '../scripts/grafana-sql.js'
import {
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../scripts/test-helpers.js'
import { grafanaDir } from './assets.js'
import { GRAFANA_HIDDEN } from './db/grafana-role.js'
import { mapQuota } from './ecoflow/mapping.js'
import { createHeaterEmulator, createRuuviEmulator } from './emulate/index.js'

type Target = { refId: string; format: string; rawSql: string }
type Panel = { title: string; type: string; targets?: Target[] }

// Each dashboard range reads another source: raw rows up to 6 h (14 days for EcoFlow and status),
// 5-minute rollups up to 14 days, hourly up to 90 days, 6-hour beyond.
const RANGES: Array<[string, number]> = [
  ['6 h', 6 * 3600_000],
  ['3 d', 3 * 86_400_000],
  ['30 d', 30 * 86_400_000],
  ['180 d', 180 * 86_400_000],
]
let FROM = ''
const TO = new Date(Date.now() + 60_000).toISOString()
// Variable values as a user would pick them, per dashboard (`device` means a sensor on one, an edge device on another).
const VARS: Record<string, string> = {
  site: "'paku'",
  heater: "'emu01'",
  device_sn: "'DCABZ8ZE1234567'",
  device: "'ESP32-GRAFANA1'",
}
const VARS_BY_FILE: Record<string, Record<string, string>> = {
  'ruuvi-overview.json': { device: "'ruuvi_cabin', 'ruuvi_van_inside'" },
}
let vars = VARS

/** Grafana's macros and this dashboard set's variables, expanded the way Grafana does. */
const expand = (sql: string) =>
  expandGrafanaSql(sql, { from: FROM, to: TO, intervalSeconds: 60, vars })

const NUMERIC = new Set([20, 21, 23, 700, 701, 1700])
const TIMESTAMPTZ = 1184
// Stats that show text: the newest release, each device's state.
const TEXT_STATS = new Set(['Latest Firmware', 'Current Device States'])
// paku's dashboards, then the "EcoFlow — Legacy" folder (its file names differ from paku's).
const DIRS = [join('dashboards', 'paku'), join('dashboards', 'ecoflow-legacy')]

describe('Grafana dashboards against a database filled through the real ingest path', () => {
  it('every panel query runs and returns what its panel needs (time first, numeric values)', async (t) => {
    const url = await testDatabase(t)
    const sut = await startApp(t, testConfig({ databaseUrl: url }))
    const client = await mqtt.connectAsync(sut.mqttUrl)
    const ruuvi = createRuuviEmulator({
      site: 'paku',
      locations: ['cabin', 'van_inside'],
      legacy: false,
    })
    const heater = createHeaterEmulator({ site: 'paku', deviceId: 'emu01' })
    for (let i = 0; i < 5; i++)
      for (const [topic, payload] of [...ruuvi.tick(), ...heater.tick()])
        await client.publishAsync(topic, payload, { qos: 1 })
    const status = {
      online: true,
      device_id: 'ESP32-GRAFANA1',
      firmware_version: '1.4.2',
      device_model: 'lilygo-t-display-s3',
      signal_strength_dbm: -58,
      uptime_seconds: 3600,
      state: 'continuous',
      active_scenario: 'default',
    }
    await client.publishAsync('paku/edge/ESP32-GRAFANA1/status', JSON.stringify(status), {
      qos: 1,
      retain: true,
    })
    await client.publishAsync(
      'paku/edge/ESP32-GRAFANA1/ota/status',
      JSON.stringify({ status: 'accepted', current_version: '1.4.1', target_version: '1.4.2' }),
      { qos: 1 },
    )
    await client.publishAsync(
      'paku/edge/ESP32-GRAFANA1/ota/result',
      JSON.stringify({ target_version: '1.4.2', success: true, message: 'Success' }),
      { qos: 1 },
    )
    await client.endAsync()
    const quota = JSON.parse(
      readFileSync(new URL('./ecoflow/fixtures/delta-pro-quota.json', import.meta.url), 'utf8'),
    ) as Record<string, unknown>
    const { columns } = mapQuota('delta_pro', quota)
    await sut.app.ingest.record({
      kind: 'ecoflow',
      deviceSn: 'DCABZ8ZE1234567',
      ts: new Date(),
      model: 'delta_pro',
      columns,
      raw: JSON.stringify(quota),
    })
    const db = await sqlClient(t, url)
    await db.query(
      `INSERT INTO firmware_releases (version, device_model, file_path, file_size, checksum_sha256) VALUES ('1.4.2', 'lilygo-t-display-s3', 'x.bin', 1, 'ab')`,
    )
    await eventually(
      async () => (await db.query('SELECT 1 FROM device_update_status')).rowCount === 1,
      { what: 'seeded rows' },
    )

    await sut.app.rollup.pass()
    // Every query runs as Grafana's own role, paku_grafana, with what it may read.
    await db.query(`ALTER ROLE paku_grafana LOGIN PASSWORD 'grafana-test-pw'`)
    const asGrafana = new URL(url)
    asGrafana.username = 'paku_grafana'
    asGrafana.password = 'grafana-test-pw'
    const grafana = await sqlClient(t, asGrafana.toString())
    let checked = 0
    for (const [range, ms] of RANGES) {
      FROM = new Date(Date.parse(TO) - ms).toISOString()
      const withRows: string[] = []
      const legacyPanels: string[] = []
      for (const file of DIRS.flatMap((d) =>
        readdirSync(join(grafanaDir(), d))
          .filter((f) => f.endsWith('.json'))
          .map((f) => join(d, f)),
      )) {
        const name = file.split('/').pop() as string
        const legacy = file.startsWith(DIRS[1] as string)
        const dash = JSON.parse(readFileSync(join(grafanaDir(), file), 'utf8')) as {
          panels: Panel[]
          templating: { list: Array<{ query: string }> }
        }
        vars = { ...VARS, ...VARS_BY_FILE[name] }
        for (const v of dash.templating.list) await grafana.query(expand(v.query))
        for (const p of dash.panels) {
          if (legacy) legacyPanels.push(`${name} / ${p.title}`)
          for (const target of p.targets ?? []) {
            const where = `${name} / ${p.title} / ${target.refId}`
            const at = `${file} / ${p.title} / ${target.refId} (${range})`
            let result
            try {
              result = await grafana.query(expand(target.rawSql))
            } catch (err) {
              assert.fail(`${at}: ${(err as Error).message}\n${expand(target.rawSql)}`)
            }
            checked++
            if (result.rowCount) withRows.push(where)
            if (target.format === 'time_series') {
              assert.equal(result.fields[0]?.name, 'time', `${at}: time first`)
              assert.equal(result.fields[0]?.dataTypeID, TIMESTAMPTZ, `${at}: time is a timestamp`)
              const values = result.fields.filter((f) => f.name !== 'time' && f.name !== 'metric')
              assert.ok(
                values.length > 0 && values.every((f) => NUMERIC.has(f.dataTypeID)),
                `${at}: numeric values`,
              )
            } else if (['stat', 'gauge'].includes(p.type) && !TEXT_STATS.has(p.title)) {
              // The `value` column, or else the stat's columns (one per value), are numbers.
              const value = result.fields.find((f) => f.name === 'value')
              const shown = value
                ? [value]
                : result.fields.filter((f) => !['time', 'Device'].includes(f.name))
              assert.ok(
                shown.length > 0 && shown.every((f) => NUMERIC.has(f.dataTypeID)),
                `${at}: numeric stat`,
              )
            }
          }
        }
      }
      // The seeded data shows in every range: from the raw rows, then from the rollups.
      const expected = [
        'ruuvi-overview.json / Temperature (°C) / A',
        'ruuvi-overview.json / Dew Point (°C) / A',
        'ruuvi-overview.json / Absolute Humidity (g/m³) / A',
        'ruuvi-overview.json / EcoFlow Temperatures (°C) / B',
        'heater-overview.json / Coolant Temperature History / A',
        'heater-overview.json / Heater State History / A',
        'edge-devices.json / WiFi Signal Strength (RSSI) / A',
        'edge-devices.json / Device Uptime Trends / A',
        'edge-devices.json / Status Update Rate (Messages/5min) / A',
        'edge-devices.json / Device Status Overview / A',
        'edge-devices.json / Recent Status Updates (Last 50) / A',
        'edge-devices.json / Device Update History / A',
        'edge-devices.json / Current Device States / A',
        'edge-devices.json / Device Uptime / A',
        'ota-monitoring.json / Recent Updates (Last 20) / A',
        'ota-monitoring.json / Device Status & Update Progress / A',
        'ota-monitoring.json / Update Timeline (Last 30 Days) / A',
        'ecoflow-overview.json / Akkutaso (%) / A',
        'ecoflow-overview.json / Tehovirta: Sisään / Ulos / Netto / C',
        'ecoflow-overview.json / Netto / A',
        'ecoflow-full.json / Lämpötilat / A',
        'ecoflow-full.json / Akkutaso & Aika jäljellä / B',
        'ecoflow-full.json / Lähdöt: AC & DC / D',
        'ecoflow-full.json / Cell Max V / A',
        'ecoflow-full.json / Latest polls / A',
      ]
      for (const e of expected)
        assert.ok(withRows.includes(e), `${e} shows the seeded data at ${range}`)
      // Every legacy panel shows the seeded poll (a chart in at least one of its lines).
      assert.equal(legacyPanels.length, 94)
      for (const panel of legacyPanels)
        assert.ok(
          withRows.some((w) => w.startsWith(`${panel} / `)),
          `${panel} shows the seeded poll at ${range}`,
        )
    }
    assert.ok(checked >= 500, `checked ${checked} queries`)
  })
})

describe('the Grafana database role', () => {
  it('paku_grafana can read telemetry but not write, and cannot read credentials or payloads that may hold secrets', async (t) => {
    const url = await testDatabase(t)
    await startApp(t, testConfig({ databaseUrl: url }))
    const admin = await sqlClient(t, url)
    await admin.query(`ALTER ROLE paku_grafana LOGIN PASSWORD 'grafana-test-pw'`)
    const u = new URL(url)
    u.username = 'paku_grafana'
    u.password = 'grafana-test-pw'
    const grafana = await sqlClient(t, u.toString())
    await grafana.query(
      'SELECT count(*) FROM measurements, ecoflow_measurements, devices, edge_device_status, device_update_status, firmware_releases',
    )
    await assert.rejects(
      grafana.query(
        `INSERT INTO measurements (site_id, system, device_id, metrics) VALUES ('a', 'b', 'c', '{}')`,
      ),
      /permission denied/,
    )
    await assert.rejects(grafana.query('SELECT * FROM mqtt_credentials'), /permission denied/)
    await assert.rejects(grafana.query('SELECT * FROM admin_keys'), /permission denied/)
    // Nor what may hold secrets: image bytes, pull tokens, command payloads, retained and queued messages.
    for (const table of GRAFANA_HIDDEN) {
      await assert.rejects(
        grafana.query(`SELECT * FROM ${table} LIMIT 1`),
        /permission denied/,
        table,
      )
    }
    // What the dashboards read stays readable (the test above runs every panel's query as paku_grafana).
    await grafana.query(
      'SELECT count(*) FROM rollup_5m, rollup_1h, rollup_6h, rollup_series, rollout_devices, rollout_configurations, ota_events',
    )
    assert.ok(
      GRAFANA_HIDDEN.includes('firmware_images') && GRAFANA_HIDDEN.includes('mqtt_retained'),
    )
  })

  it('a role that had no rights when paku started (made by hand later) gets them at the next start', async (t) => {
    const url = await testDatabase(t)
    const first = await startApp(t, testConfig({ databaseUrl: url }))
    const admin = await sqlClient(t, url)
    await admin.query(`ALTER ROLE paku_grafana LOGIN PASSWORD 'grafana-test-pw'`)
    await admin.query('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM paku_grafana')
    const u = new URL(url)
    u.username = 'paku_grafana'
    u.password = 'grafana-test-pw'
    const grafana = await sqlClient(t, u.toString())
    await assert.rejects(
      grafana.query('SELECT count(*) FROM measurements'),
      /permission denied/,
      'positive control: the rights are gone',
    )
    await first.app.stop()
    await startApp(t, testConfig({ databaseUrl: url }))
    await grafana.query('SELECT count(*) FROM measurements, rollup_1h, devices')
    await assert.rejects(grafana.query('SELECT * FROM firmware_images'), /permission denied/)
  })
})
