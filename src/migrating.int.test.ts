/**
 * docs/migrating-from-paku-iot.md, followed as an operator would on a copy of an old installation: the
 * old stack's database with its rows, its firmware volume and its compose/.env; `paku import-env
 * --write`, the edits the guide asks for, `paku migrate` and `paku serve` with the file read by a shell.
 * Then what the guide says to check, and what the devices and the firmware workflow do on the first day.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import mqtt from 'mqtt'
import { runPaku, stopGroup } from '../scripts/local-process.js'
import { defer, eventually, pakuReady, sqlClient, testDatabase } from '../scripts/test-helpers.js'

const ADMIN_KEY = 'ota-key-0123456789abcdef0123456789abcdef'
const OLD_ENV = `# paku-iot compose/.env
POSTGRES_USER=paku
POSTGRES_PASSWORD=old db password
POSTGRES_DB=paku
PGHOST=postgres
MQTT_HOST=mosquitto
MQTT_PORT=1883
MQTT_USER=edge
MQTT_PASSWORD='shared $ecret #1'
MQTT_CN=paku-mqtt
OTA_API_KEY=${ADMIN_KEY}
PAKU_DOMAIN=iot.example.com
ECOFLOW_ACCESS_KEY=
ECOFLOW_SECRET_KEY=
GF_SECURITY_ADMIN_PASSWORD=admin
MAX_RUNTIME_SECONDS=300
`
const IMAGE_OLD = Buffer.from('\xe9 firmware 1.4.1 '.repeat(500), 'latin1')
const IMAGE_NEW = Buffer.from('\xe9 firmware 1.4.2 '.repeat(700), 'latin1')
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')

describe('migrating from paku-iot, as the guide says', () => {
  it(
    'adopts the old database, firmware volume and .env: history, devices, releases and images work at once, the old rollout waits paused',
    { timeout: 180_000 },
    async (t) => {
      const dir = mkdtempSync(join(tmpdir(), 'paku-migrating-'))
      defer(t, () => rmSync(dir, { recursive: true, force: true }))

      // The old installation: its database (restored copy), firmware volume and .env.
      const url = await testDatabase(t)
      const c = await sqlClient(t, url)
      await c.query(
        readFileSync(join(import.meta.dirname, 'db', 'fixtures', 'paku-iot.sql'), 'utf8'),
      )
      await c.query(`INSERT INTO measurements (site_id, system, device_id, location, ts, metrics)
      SELECT 'paku', 'sensors', 'ruuvi_cabin', 'cabin', TIMESTAMPTZ '2026-01-01' + i * interval '1 minute', jsonb_build_object('temperature_c', 20 + i % 5)
      FROM generate_series(1, 2000) i`)
      await c.query(`INSERT INTO ecoflow_measurements (device_sn, ts, soc_percent, pv_in_watts, watts_in_sum, pd_model)
      VALUES ('DCABZ8ZE1234567', '2026-01-01T12:00:00Z', 80, 4123, 412, 'DELTA Pro'), ('DCABZ8ZE1234567', '2026-01-01T12:00:30Z', 81, 0, 0, NULL)`)
      await c.query(`INSERT INTO devices (device_id, device_model, current_firmware_version, last_seen)
      VALUES ('ESP32-AABBCCDD', 'lilygo-t-display-s3', '1.4.1', '2026-01-02'), ('ESP32-11223344', 'esp32-ch340c-30pin', '1.3.0', '2026-01-02')`)
      await c.query(
        `INSERT INTO edge_device_status (site_id, device_id, status, ts) VALUES ('paku', 'ESP32-AABBCCDD', '{"online": true, "firmware_version": "1.4.1"}', '2026-01-02')`,
      )
      await c.query(
        `INSERT INTO edge_device_configs (site_id, device_id, config) VALUES ('paku', 'ESP32-AABBCCDD', '{"timing": {"wake_interval_s": 60}}')`,
      )
      const release = (version: string, image: Buffer, at: string) =>
        c.query(
          `INSERT INTO firmware_releases (version, device_model, file_path, file_size, checksum_sha256, created_at, created_by) VALUES ($1, 'lilygo-t-display-s3', $2, $3, $4, $5, 'admin')`,
          [version, `lilygo-t-display-s3_${version}.bin`, image.length, sha256(image), at],
        )
      await release('1.4.1', IMAGE_OLD, '2026-01-01')
      await release('1.4.2', IMAGE_NEW, '2026-02-01')
      await c.query(`INSERT INTO rollout_configurations (name, firmware_version, device_model, target_type, rollout_percentage, created_by)
      VALUES ('ci-1.4.2', '1.4.2', 'lilygo-t-display-s3', 'all', 100, 'admin')`)
      await c.query(
        `INSERT INTO device_update_status (device_id, firmware_version, status, progress_percent) VALUES ('ESP32-11223344', '1.3.0', 'success', 100)`,
      )
      await c.query(
        `INSERT INTO ota_events (event_type, firmware_version, event_data) VALUES ('firmware_uploaded', '1.4.2', '{"device_model": "lilygo-t-display-s3"}')`,
      )
      const firmwareDir = join(dir, 'firmware')
      mkdirSync(firmwareDir)
      writeFileSync(join(firmwareDir, 'lilygo-t-display-s3_1.4.1.bin'), IMAGE_OLD)
      writeFileSync(join(firmwareDir, 'lilygo-t-display-s3_1.4.2.bin'), IMAGE_NEW)
      writeFileSync(join(dir, 'old.env'), OLD_ENV)

      // No paku.config.json in the working directory: paku's production defaults, as on the VM.
      const env = { PAKU_CONFIG: '', PAKU_DATABASE_URL: '', PAKU_LOG_FORMAT: 'json' }
      const run = async (args: string[], o: { envFile?: string } = {}) => {
        const p = runPaku(args, env, { cwd: dir, ...o })
        defer(t, () => stopGroup(p.child))
        return { code: await p.exited, text: p.lines.join('\n') }
      }

      // paku import-env old.env --write rehearsal.env: secrets masked on the terminal, real in the file.
      const imported = await run(['import-env', 'old.env', '--write', 'rehearsal.env'])
      assert.equal(imported.code, 0, imported.text)
      for (const secret of ['shared $ecret', 'old db password', 'old%20db', ADMIN_KEY])
        assert.ok(!imported.text.includes(secret), `${secret} is masked on the terminal`)
      // The guide's edits: the copy's database, the firmware directory; loopback ports for the rehearsal.
      const envFile = join(dir, 'rehearsal.env')
      const written = readFileSync(envFile, 'utf8')
      assert.match(written, /^PAKU_DATABASE_URL=.*old%20db%20password@127\.0\.0\.1:5432\/paku'?$/m)
      writeFileSync(envFile, written.replace(/^PAKU_DATABASE_URL=.*$/m, `PAKU_DATABASE_URL=${url}`))
      appendFileSync(
        envFile,
        [
          `PAKU_OTA_FIRMWARE_DIR=${firmwareDir}`,
          `PAKU_DATA_DIR=${join(dir, 'data')}`,
          'PAKU_MQTT_HOST=127.0.0.1',
          'PAKU_MQTT_PORT=0',
          'PAKU_MQTT_WS_ENABLED=false',
          'PAKU_HTTP_HOST=127.0.0.1',
          'PAKU_HTTP_PORT=0',
          '',
        ].join('\n'),
      )

      // paku migrate: migrations, the missing columns, the one-time rescale, the indexes.
      const migrated = await run(['migrate'], { envFile })
      assert.equal(migrated.code, 0, migrated.text)
      assert.match(migrated.text, /rescaled the old EcoFlow poller's solar input to watts/)
      assert.match(migrated.text, /an existing one serves it/)
      const invalid = (
        await c.query(`SELECT count(*)::int AS n FROM pg_index WHERE NOT indisvalid`)
      ).rows[0].n
      assert.equal(invalid, 0)
      const measurementIndexes = (
        await c.query(
          `SELECT count(*)::int AS n FROM pg_indexes WHERE tablename = 'measurements' AND indexname NOT LIKE 'idx_measurements_new_%' AND indexname <> 'measurements_pkey'`,
        )
      ).rows[0].n
      assert.ok(
        measurementIndexes >= 2,
        'the indexes the old database lacked are built by paku migrate',
      )

      // paku serve on the copy.
      const server = runPaku(['serve'], env, { cwd: dir, envFile })
      defer(t, () => stopGroup(server.child))
      const banner = await pakuReady(server)
      const http = new URL(String(banner.http)).origin
      const get = async (path: string, key?: string) => {
        const res = await fetch(http + path, { headers: key ? { 'X-API-Key': key } : {} })
        return {
          status: res.status,
          body: Buffer.from(await res.arrayBuffer()),
          headers: res.headers,
        }
      }
      const json = async (path: string, key?: string) => {
        const r = await get(path, key)
        assert.equal(r.status, 200, `${path}: ${r.body.toString()}`)
        return JSON.parse(r.body.toString()) as Record<string, any>
      }

      const health = await json('/health')
      assert.equal(health.status, 'ok')
      assert.equal(health.database.indexes, 'done')

      // The devices, releases and images of the old stack, with the old admin key.
      assert.equal(
        (await get('/api/admin/devices')).status,
        401,
        'the admin API still asks for the key',
      )
      const devices = await json('/api/admin/devices', ADMIN_KEY)
      assert.deepEqual(devices.devices.map((d: { device_id: string }) => d.device_id).sort(), [
        'ESP32-11223344',
        'ESP32-AABBCCDD',
      ])
      const releases = await json(
        '/api/admin/firmware/releases?device_model=lilygo-t-display-s3',
        ADMIN_KEY,
      )
      assert.deepEqual(
        releases.releases.map((r: { version: string }) => r.version),
        ['1.4.2', '1.4.1'],
      )
      for (const [version, image] of [
        ['1.4.1', IMAGE_OLD],
        ['1.4.2', IMAGE_NEW],
      ] as const) {
        const dl = await get(`/api/firmware/download/${version}?device_model=lilygo-t-display-s3`)
        assert.equal(dl.status, 200, `${version} downloads from the adopted volume`)
        assert.equal(dl.headers.get('content-length'), String(image.length))
        assert.equal(dl.headers.get('x-checksum-sha256'), sha256(image))
        assert.ok(dl.body.equals(image))
      }

      // The old rollout comes over paused, so nothing is pushed on cut-over day before someone looks; once
      // resumed, a 1.4.1 device of that model is offered 1.4.2 (a device paku knows over MQTT asks with its
      // pull token, one it has not seen yet without).
      const rollouts = await json('/api/admin/rollouts', ADMIN_KEY)
      assert.deepEqual(
        rollouts.rollouts.map((r: Record<string, unknown>) => [r.name, r.status, r.status_reason]),
        [
          [
            'ci-1.4.2',
            'paused',
            'adopted from the old OTA service; resume it to let paku deliver it',
          ],
        ],
      )
      const checkPath =
        '/api/firmware/check?device_id=ESP32-55667788&device_model=lilygo-t-display-s3&current_version=1.4.1'
      assert.equal((await json(checkPath)).update_available, false, 'not offered while paused')
      const resume = await fetch(
        `${http}/api/admin/rollouts/${String(rollouts.rollouts[0].id)}/resume`,
        { method: 'POST', headers: { 'X-API-Key': ADMIN_KEY } },
      )
      assert.equal(resume.status, 200, await resume.text())
      const check = await json(checkPath)
      assert.equal(check.update_available, true)
      assert.equal(check.latest_version, '1.4.2')

      // The history is there and unchanged, the old poller's solar input in watts.
      assert.equal(
        (
          await c.query(
            `SELECT count(*)::int AS n FROM measurements WHERE device_id = 'ruuvi_cabin'`,
          )
        ).rows[0].n,
        2000,
      )
      assert.deepEqual(
        (await c.query(`SELECT pv_in_watts, pd_model FROM ecoflow_measurements ORDER BY id`)).rows,
        [
          { pv_in_watts: 412, pd_model: 'DELTA Pro' },
          { pv_in_watts: 0, pd_model: null },
        ],
      )

      // Devices keep their shared credential; anonymous clients are refused by the production defaults.
      const mqttUrl = String(banner.mqtt)
      await assert.rejects(
        mqtt.connectAsync(mqttUrl, { clientId: 'anon', reconnectPeriod: 0 }),
        /Not authorized|Bad username/,
      )
      const device = await mqtt.connectAsync(mqttUrl, {
        clientId: 'ESP32-AABBCCDD',
        username: 'edge',
        password: 'shared $ecret #1',
        reconnectPeriod: 0,
      })
      defer(t, () => device.endAsync())
      await device.publishAsync(
        'paku/sensors/ruuvi_cabin/data',
        JSON.stringify({
          device_id: 'ruuvi_cabin',
          location: 'cabin',
          timestamp: '',
          metrics: { temperature_c: 21.5 },
        }),
      )
      await device.publishAsync(
        'paku/edge/ESP32-AABBCCDD/config/report',
        JSON.stringify({ timing: { wake_interval_s: 30 } }),
        { retain: true },
      )
      await eventually(
        async () =>
          (
            await c.query(
              `SELECT count(*)::int AS n FROM measurements WHERE device_id = 'ruuvi_cabin'`,
            )
          ).rows[0].n === 2001 || undefined,
        { timeoutMs: 15_000, what: 'the new reading stored beside the old ones' },
      )
      const fresh = (
        await c.query(
          `SELECT metrics, created_at > NOW() - interval '5 minutes' AS recent FROM measurements ORDER BY id DESC LIMIT 1`,
        )
      ).rows[0]
      assert.deepEqual(fresh, { metrics: { temperature_c: 21.5 }, recent: true })
      await eventually(
        async () =>
          (
            await c.query(
              `SELECT config FROM edge_device_configs WHERE device_id = 'ESP32-AABBCCDD'`,
            )
          ).rows[0]?.config?.timing?.wake_interval_s === 30 || undefined,
        { timeoutMs: 15_000, what: 'config/report stored over the old config row' },
      )
    },
  )
})
