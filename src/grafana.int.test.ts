import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import mqtt from 'mqtt'
import { expandGrafanaSql } from '../scripts/grafana-sql.js'
import { eventually, sqlClient, startApp, testConfig, testDatabase } from '../scripts/test-helpers.js'
import { grafanaDir } from './assets.js'
import { mapQuota } from './ecoflow/mapping.js'
import { createHeaterEmulator, createRuuviEmulator } from './emulate/index.js'

type Target = { refId: string; format: string; rawSql: string }
type Panel = { title: string; type: string; targets?: Target[] }

// Each dashboard range reads another source: raw rows up to 6 h (14 days for EcoFlow and status),
// 5-minute rollups up to 14 days, hourly up to 90 days, 6-hour beyond.
const RANGES: Array<[string, number]> = [['6 h', 6 * 3600_000], ['3 d', 3 * 86_400_000], ['30 d', 30 * 86_400_000], ['180 d', 180 * 86_400_000]]
let FROM = ''
const TO = new Date(Date.now() + 60_000).toISOString()
// Variable values as a user would pick them, per dashboard (`device` means a sensor on one, an edge device on another).
const VARS: Record<string, string> = { site: "'paku'", heater: "'emu01'", device_sn: "'DCABZ8ZE1234567'", device: "'ESP32-GRAFANA1'" }
const VARS_BY_FILE: Record<string, Record<string, string>> = { 'ruuvi-overview.json': { device: "'ruuvi_cabin', 'ruuvi_van_inside'" } }
let vars = VARS

/** Grafana's macros and this dashboard set's variables, expanded the way Grafana does. */
const expand = (sql: string) => expandGrafanaSql(sql, { from: FROM, to: TO, intervalSeconds: 60, vars })

const NUMERIC = new Set([20, 21, 23, 700, 701, 1700])
const TIMESTAMPTZ = 1184

describe('Grafana dashboards against a database filled through the real ingest path', () => {
  it('every panel query runs and returns what its panel needs (time first, numeric values)', async (t) => {
    const url = await testDatabase(t)
    const sut = await startApp(t, testConfig({ databaseUrl: url }))
    const client = await mqtt.connectAsync(sut.mqttUrl)
    const ruuvi = createRuuviEmulator({ site: 'paku', locations: ['cabin', 'van_inside'], legacy: false })
    const heater = createHeaterEmulator({ site: 'paku', deviceId: 'emu01' })
    for (let i = 0; i < 5; i++) for (const [topic, payload] of [...ruuvi.tick(), ...heater.tick()]) await client.publishAsync(topic, payload, { qos: 1 })
    const status = { online: true, device_id: 'ESP32-GRAFANA1', firmware_version: '1.4.2', device_model: 'lilygo-t-display-s3', signal_strength_dbm: -58, uptime_seconds: 3600, state: 'continuous', active_scenario: 'default' }
    await client.publishAsync('paku/edge/ESP32-GRAFANA1/status', JSON.stringify(status), { qos: 1, retain: true })
    await client.publishAsync('paku/edge/ESP32-GRAFANA1/ota/status', JSON.stringify({ status: 'accepted', current_version: '1.4.1', target_version: '1.4.2' }), { qos: 1 })
    await client.publishAsync('paku/edge/ESP32-GRAFANA1/ota/result', JSON.stringify({ target_version: '1.4.2', success: true, message: 'Success' }), { qos: 1 })
    await client.endAsync()
    const quota = JSON.parse(readFileSync(new URL('./ecoflow/fixtures/delta-pro-quota.json', import.meta.url), 'utf8')) as Record<string, unknown>
    const { columns } = mapQuota('delta_pro', quota)
    await sut.app.ingest.record({ kind: 'ecoflow', deviceSn: 'DCABZ8ZE1234567', ts: new Date(), model: 'delta_pro', columns, raw: JSON.stringify(quota) })
    const db = await sqlClient(t, url)
    await db.query(`INSERT INTO firmware_releases (version, device_model, file_path, file_size, checksum_sha256) VALUES ('1.4.2', 'lilygo-t-display-s3', 'x.bin', 1, 'ab')`)
    await eventually(async () => (await db.query('SELECT 1 FROM device_update_status')).rowCount === 1, { what: 'seeded rows' })

    await sut.app.rollup.pass()
    const dir = join(grafanaDir(), 'dashboards', 'paku')
    let checked = 0
    for (const [range, ms] of RANGES) {
      FROM = new Date(Date.parse(TO) - ms).toISOString()
      const withRows: string[] = []
      for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
        const dash = JSON.parse(readFileSync(join(dir, file), 'utf8')) as { panels: Panel[]; templating: { list: Array<{ query: string }> } }
        vars = { ...VARS, ...VARS_BY_FILE[file] }
        for (const v of dash.templating.list) await db.query(expand(v.query))
        for (const p of dash.panels) {
          for (const target of p.targets ?? []) {
            const where = `${file} / ${p.title} / ${target.refId}`
            const at = `${where} (${range})`
            let result
            try {
              result = await db.query(expand(target.rawSql))
            } catch (err) {
              assert.fail(`${at}: ${(err as Error).message}\n${expand(target.rawSql)}`)
            }
            checked++
            if (result.rowCount) withRows.push(where)
            if (target.format === 'time_series') {
              assert.equal(result.fields[0]?.name, 'time', `${at}: time first`)
              assert.equal(result.fields[0]?.dataTypeID, TIMESTAMPTZ, `${at}: time is a timestamp`)
              const values = result.fields.filter((f) => f.name !== 'time' && f.name !== 'metric')
              assert.ok(values.length > 0 && values.every((f) => NUMERIC.has(f.dataTypeID)), `${at}: numeric values`)
            } else if (['stat', 'gauge'].includes(p.type) && result.fields.some((f) => f.name === 'value')) {
              const value = result.fields.find((f) => f.name === 'value')
              assert.ok(NUMERIC.has(value?.dataTypeID as number) || p.title === 'Latest firmware', `${at}: numeric stat`)
            }
          }
        }
      }
      // The seeded data shows in every range: from the raw rows, then from the rollups.
      for (const expected of ['ruuvi-overview.json / Temperature (°C) / A', 'heater-overview.json / Coolant and core temperature / A', 'heater-overview.json / Heater state history / A', 'edge-devices.json / Wi-Fi signal (RSSI) / A', 'edge-devices.json / Devices / A', 'ota-monitoring.json / Recent updates / A', 'ecoflow-overview.json / Battery level / A', 'ecoflow-full.json / Temperatures / A', 'ecoflow-full.json / Latest polls / A']) {
        assert.ok(withRows.includes(expected), `${expected} shows the seeded data at ${range}`)
      }
    }
    assert.ok(checked >= 200, `checked ${checked} queries`)
  })
})

describe('the Grafana database role', () => {
  it('paku_grafana can read telemetry but not write, and cannot read credentials', async (t) => {
    const url = await testDatabase(t)
    await startApp(t, testConfig({ databaseUrl: url }))
    const admin = await sqlClient(t, url)
    await admin.query(`ALTER ROLE paku_grafana LOGIN PASSWORD 'grafana-test-pw'`)
    const u = new URL(url)
    u.username = 'paku_grafana'
    u.password = 'grafana-test-pw'
    const grafana = await sqlClient(t, u.toString())
    await grafana.query('SELECT count(*) FROM measurements, ecoflow_measurements, devices, edge_device_status, device_update_status, firmware_releases')
    await assert.rejects(grafana.query(`INSERT INTO measurements (site_id, system, device_id, metrics) VALUES ('a', 'b', 'c', '{}')`), /permission denied/)
    await assert.rejects(grafana.query('SELECT * FROM mqtt_credentials'), /permission denied/)
    await assert.rejects(grafana.query('SELECT * FROM admin_keys'), /permission denied/)
  })
})
