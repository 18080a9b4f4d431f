import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'
import {
  defer,
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'

const run = promisify(execFile)
const available = await run('mosquitto_pub', ['--help']).then(
  () => true,
  (err: { code?: unknown }) => err.code !== 'ENOENT',
)
// CI installs mosquitto-clients (.ci/run); on a developer machine without them these tests are skipped, loudly.
const skip =
  !available && process.env.CI !== 'true'
    ? 'mosquitto-clients not installed (apt-get install mosquitto-clients)'
    : false

describe('Debian mosquitto-clients against the broker', { skip }, () => {
  async function setup(t: Parameters<typeof testDatabase>[0]) {
    const url = await testDatabase(t)
    const sut = await startApp(
      t,
      testConfig({ databaseUrl: url, ingest: { maxPayloadBytes: 8192 } }),
    )
    const db = await sqlClient(t, url)
    const port = String(new URL(sut.mqttUrl).port)
    const count = async (sql: string) => Number((await db.query(sql)).rows[0].n)
    /** The MQTT clients connected to the broker now, from /health. */
    const clients = async () =>
      ((await (await fetch(`${sut.httpUrl}/health`)).json()) as { broker: { clients: number } })
        .broker.clients
    return { port, db, count, clients }
  }

  it('mosquitto_pub QoS 0 and 1 messages land in measurements', async (t) => {
    const { port, count } = await setup(t)
    for (const qos of ['0', '1']) {
      await run('mosquitto_pub', [
        '-h',
        '127.0.0.1',
        '-p',
        port,
        '-q',
        qos,
        '-t',
        `paku/sensors/mosq_${qos}/data`,
        '-m',
        JSON.stringify({ device_id: 'm', metrics: { qos: Number(qos) } }),
      ])
    }
    await eventually(
      async () => (await count('SELECT count(*)::int AS n FROM measurements')) === 2,
      { what: 'two rows' },
    )
  })

  it('mosquitto_sub receives a retained config/set published with -r', async (t) => {
    const { port } = await setup(t)
    const payload = JSON.stringify({ timing: { wake_interval_s: 300 } })
    await run('mosquitto_pub', [
      '-h',
      '127.0.0.1',
      '-p',
      port,
      '-q',
      '1',
      '-r',
      '-t',
      'paku/edge/ESP32-1/config/set',
      '-m',
      payload,
    ])
    const { stdout } = await run('mosquitto_sub', [
      '-h',
      '127.0.0.1',
      '-p',
      port,
      '-t',
      'paku/edge/ESP32-1/config/set',
      '-C',
      '1',
      '-W',
      '5',
      '-v',
    ])
    assert.equal(stdout.trim(), `paku/edge/ESP32-1/config/set ${payload}`)
  })

  it('a killed mosquitto_sub makes the broker publish its will, stored as an offline status', async (t) => {
    const { port, db, clients } = await setup(t)
    const sub = spawn('mosquitto_sub', [
      '-h',
      '127.0.0.1',
      '-p',
      port,
      '-i',
      'ESP32-DEADBEEF',
      '-t',
      'paku/edge/ESP32-DEADBEEF/cmd/ota',
      '--will-topic',
      'paku/edge/ESP32-DEADBEEF/status',
      '--will-payload',
      '{"online":false}',
      '--will-qos',
      '1',
      '--will-retain',
    ])
    defer(t, () => sub.kill('SIGKILL'))
    // Killed once connected: the broker holds its will from the CONNECT on.
    await eventually(async () => (await clients()) === 1, { what: 'mosquitto_sub connected' })
    sub.kill('SIGKILL')
    await eventually(
      async () =>
        (await db.query(`SELECT status FROM edge_device_status WHERE device_id = 'ESP32-DEADBEEF'`))
          .rows[0]?.status?.online === false,
      { what: 'the will as a status row' },
    )
  })

  it('hostile payloads from mosquitto_pub are rejected with a reason, good ones still land', async (t) => {
    const { port, db, count } = await setup(t)
    const dir = mkdtempSync(join(tmpdir(), 'paku-mosq-'))
    const noise = join(dir, 'noise.bin')
    writeFileSync(noise, randomBytes(20_000))
    const pub = (...args: string[]) =>
      run('mosquitto_pub', ['-h', '127.0.0.1', '-p', port, '-q', '1', ...args])
    await pub('-t', 'paku/sensors/a/data', '-m', '{"device_id":"a","metrics":{"n":1}}')
    await pub('-t', 'paku/sensors/b/data', '-n')
    await pub('-t', 'paku/sensors/b/data', '-f', noise)
    await pub(
      '-t',
      'paku/sensors/b/data',
      '-m',
      '{"device_id":"b","metrics":{"n":1},"timestamp":"not-a-time"}',
    )
    await pub('-t', 'paku/sensors/a/data', '-m', '{"device_id":"a","metrics":{"n":2}}')
    await eventually(
      async () => (await count('SELECT count(*)::int AS n FROM ingest_rejects')) === 3,
      { what: 'three rejects' },
    )
    await eventually(
      async () => (await count('SELECT count(*)::int AS n FROM measurements')) === 2,
      { what: 'two good rows' },
    )
    const reasons = (await db.query('SELECT reason FROM ingest_rejects ORDER BY id')).rows.map(
      (r) => r.reason,
    )
    assert.match(reasons[0], /^malformed JSON/)
    assert.equal(reasons[1], 'payload is 20000 bytes, more than the limit of 8192')
    assert.equal(reasons[2], 'timestamp "not-a-time" is not ISO-8601')
  })
})
