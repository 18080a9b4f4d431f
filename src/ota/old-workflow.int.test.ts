/**
 * The old stack's CI workflow ("OTA Update ESP Devices"), replayed against paku exactly as it talks to
 * the old service: curl for its HTTP requests (releases probe without a key, the multipart upload with
 * the fields in the query, rollout/create with its three payloads, the devices list it picks targets
 * from) and Debian's mosquitto_pub for the cmd/ota it publishes itself with the shared MQTT credential.
 * Each device the rollout targets gets exactly one cmd/ota per version, whoever sends it; no other
 * device gets one.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it, type TestContext } from 'node:test'
import { promisify } from 'node:util'
import mqtt from 'mqtt'
import {
  defer,
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'
import { espImage } from '../../scripts/test-support/esp-image.js'
import { hashBucket } from './versions.js'

const run = promisify(execFile)
const available = await run('mosquitto_pub', ['--help']).then(
  () => true,
  (err: { code?: unknown }) => err.code !== 'ENOENT',
)
// CI installs mosquitto-clients (.ci/run); on a developer machine without them this is skipped, loudly.
const skip =
  !available && process.env.CI !== 'true'
    ? 'mosquitto-clients not installed (apt-get install mosquitto-clients)'
    : false

const OTA_API_KEY = 'old-stack-ota-api-key-0123456789abcdef'
const FAMILY = 'lilygo-t-display-s3'

/** A paku-core board: registers with a status, counts the cmd/ota it receives per version. */
async function board(t: TestContext, mqttUrl: string, id: string, model = FAMILY) {
  const c = await mqtt.connectAsync(mqttUrl, { clientId: id, clean: true, reconnectPeriod: 0 })
  defer(t, () => c.endAsync(true))
  const commands: string[] = []
  const marks: string[] = []
  c.on('message', (topic, payload) => {
    if (topic.endsWith('/cmd/ota'))
      commands.push((JSON.parse(payload.toString()) as { version: string }).version)
    else marks.push(payload.toString())
  })
  await c.subscribeAsync(`paku/edge/${id}/cmd/#`, { qos: 0 })
  await c.publishAsync(
    `paku/edge/${id}/status`,
    JSON.stringify({ online: true, device_id: id, firmware_version: '1.4.2', device_model: model }),
    { qos: 0, retain: true },
  )
  return { id, client: c, commands, marks }
}
type Board = Awaited<ReturnType<typeof board>>

async function setup(t: TestContext) {
  const databaseUrl = await testDatabase(t)
  const s = await startApp(
    t,
    testConfig({
      databaseUrl,
      http: { adminApiKey: OTA_API_KEY },
      ota: { publicUrl: 'https://iot.example.com/ota', rolloutTickSeconds: 1 },
      mqtt: { sharedCredential: { username: 'edge', password: 'shared-secret' } },
    }),
  )
  const db = await sqlClient(t, databaseUrl)
  const dir = await mkdtemp(join(tmpdir(), 'paku-oldci-'))
  defer(t, () => rm(dir, { recursive: true, force: true }))
  const OTA_URL = s.httpUrl
  const port = new URL(s.mqttUrl).port
  const curl = async (args: string[]) => {
    const r = await run('curl', ['-s', '-w', '\n%{http_code}', ...args])
    const lines = r.stdout.trimEnd().split('\n')
    return { status: Number(lines.pop()), body: lines.join('\n') }
  }

  /** Steps 4 and 8–10 of the workflow for one build, as its scripts send them. */
  async function workflow(o: {
    deviceModel: string
    version: string
    strategy: 'full' | `canary-${number}` | 'single-device'
    testDevices?: string[]
  }) {
    // 4. "Check if firmware already exists", without the API key (401: "not found", so it builds).
    const probe = await curl([
      `${OTA_URL}/api/admin/firmware/releases?device_model=${o.deviceModel}&limit=50`,
    ])
    assert.equal(probe.status, 401)
    // 8. Upload: query fields, X-API-Key, multipart field "file".
    const fw = join(dir, 'firmware.bin')
    await writeFile(fw, espImage({ size: 20_000 }))
    const up = await curl([
      '-X',
      'POST',
      '-H',
      `X-API-Key: ${OTA_API_KEY}`,
      '-F',
      `file=@${fw};filename=firmware.bin;type=application/octet-stream`,
      `${OTA_URL}/api/admin/firmware/upload?version=${o.version}&device_model=${o.deviceModel}&is_signed=false&release_notes=${encodeURIComponent('Automated OTA update from paku-core main branch')}`,
    ])
    assert.equal(up.status, 200, up.body)
    const checksum = (JSON.parse(up.body) as { checksum_sha256: string }).checksum_sha256
    // 9. Create the rollout with the workflow's payloads.
    const name = `${o.deviceModel}-${o.version}-${o.strategy}`
    const body =
      o.strategy === 'single-device'
        ? {
            name,
            firmware_version: o.version,
            device_model: o.deviceModel,
            target_type: 'specific',
            target_device_ids: o.testDevices,
            is_active: true,
          }
        : o.strategy === 'full'
          ? {
              name,
              firmware_version: o.version,
              device_model: o.deviceModel,
              target_type: 'all',
              is_active: true,
            }
          : {
              name,
              firmware_version: o.version,
              device_model: o.deviceModel,
              target_type: 'canary',
              rollout_percentage: Number(o.strategy.slice(7)),
              is_active: true,
            }
    const created = await curl([
      '-X',
      'POST',
      '-H',
      `X-API-Key: ${OTA_API_KEY}`,
      '-H',
      'Content-Type: application/json',
      '-d',
      JSON.stringify(body),
      `${OTA_URL}/api/admin/rollout/create`,
    ])
    assert.equal(created.status, 200, created.body)
    // 10. Targets: the listed ids, or the family's devices seen in 7 days (canary: the first max(1, ⌊n·N/100⌋)).
    let targets = o.testDevices ?? []
    if (o.strategy !== 'single-device') {
      const family = o.deviceModel.replace(/-heater(-emu)?$/, '')
      const list = await curl([
        '-H',
        `X-API-Key: ${OTA_API_KEY}`,
        `${OTA_URL}/api/admin/devices?device_model=${family}&limit=500`,
      ])
      assert.equal(list.status, 200, list.body)
      const weekAgo = new Date(Date.now() - 7 * 86_400_000).toISOString().slice(0, 19)
      const recent = (
        JSON.parse(list.body) as { devices: Array<{ device_id: string; last_seen: string }> }
      ).devices
        .filter((d) => d.last_seen > weekAgo)
        .map((d) => d.device_id)
      targets =
        o.strategy === 'full'
          ? recent
          : recent.slice(
              0,
              Math.max(1, Math.floor((recent.length * Number(o.strategy.slice(7))) / 100)),
            )
    }
    const url = `${OTA_URL}/api/firmware/download/${o.version}?device_model=${o.deviceModel}`
    for (const id of targets) {
      await run('mosquitto_pub', [
        '-h',
        '127.0.0.1',
        '-p',
        port,
        '-u',
        'edge',
        '-P',
        'shared-secret',
        '-q',
        '1',
        '-t',
        `paku/edge/${id}/cmd/ota`,
        '-m',
        JSON.stringify({ url, version: o.version, checksum }),
      ])
    }
    return { targets }
  }

  /**
   * Waits until every board has seen a mark sent after everything else: deliveries to one client keep
   * their order, so a cmd/ota that was on its way has arrived by then.
   */
  async function settle(boards: Board[]) {
    const mark = `mark-${Math.random()}`
    for (const b of boards)
      await s.app.broker.publish(`paku/edge/${b.id}/cmd/mark`, mark, { qos: 0 })
    await eventually(async () => boards.every((b) => b.marks.includes(mark)), {
      what: 'the mark on every board',
    })
  }
  return { ...s, db, workflow, settle }
}

describe('the old CI workflow, unchanged, against paku', { skip }, () => {
  it('full, canary and single-device builds: each targeted device gets exactly one cmd/ota per version, no other device one', async (t) => {
    const s = await setup(t)
    const boards: Board[] = []
    for (let i = 0; i < 8; i++)
      boards.push(await board(t, s.mqttUrl, `ESP32-0LDC${String(i).padStart(4, '0')}`))
    await eventually(
      async () =>
        Number(
          (
            await s.db.query(`SELECT count(*)::int AS n FROM devices WHERE device_model = $1`, [
              FAMILY,
            ])
          ).rows[0].n,
        ) === boards.length,
      { what: 'boards registered' },
    )

    // A heater build: the rollout is named after the build, the boards report their family.
    const canary = await s.workflow({
      deviceModel: `${FAMILY}-heater`,
      version: '1.5.0',
      strategy: 'canary-50',
    })
    await s.settle(boards)
    const hashed = boards.filter((b) => hashBucket(b.id) < 50)
    assert.ok(hashed.length > 0 && hashed.length < boards.length, 'the canary splits the boards')
    for (const b of boards)
      assert.deepEqual(
        b.commands,
        hashed.includes(b) ? ['1.5.0'] : [],
        `${b.id} (hash ${hashBucket(b.id)}; the workflow picked ${canary.targets.includes(b.id)})`,
      )
    const notDelivered = (
      (await (await fetch(`${s.httpUrl}/health`)).json()) as {
        broker: { commandsNotDelivered: number }
      }
    ).broker.commandsNotDelivered
    assert.equal(
      notDelivered,
      canary.targets.length,
      "every one of the workflow's own publishes: paku had sent the targeted ones, the others are not targeted",
    )

    // An opaque test build, to all boards.
    await s.workflow({ deviceModel: FAMILY, version: 'test-20260115-140322', strategy: 'full' })
    await s.settle(boards)
    for (const b of boards)
      assert.deepEqual(
        b.commands.filter((v) => v === 'test-20260115-140322'),
        ['test-20260115-140322'],
        b.id,
      )

    // One board by name.
    const one = boards[3] as Board
    await s.workflow({
      deviceModel: FAMILY,
      version: '1.5.1',
      strategy: 'single-device',
      testDevices: [one.id],
    })
    await s.settle(boards)
    for (const b of boards)
      assert.deepEqual(
        b.commands.filter((v) => v === '1.5.1'),
        b === one ? ['1.5.1'] : [],
        b.id,
      )
  })

  it("delivers the workflow's own cmd/ota when paku sends none, and a version no rollout delivers as it is", async (t) => {
    const s = await setup(t)
    const b = await board(t, s.mqttUrl, 'ESP32-0LDC0100')
    await eventually(
      async () =>
        (await s.db.query(`SELECT 1 FROM devices WHERE device_id = $1`, [b.id])).rowCount === 1,
      { what: 'board registered' },
    )
    // The first build for a model no device has reported: stored; its rollout reaches nobody.
    await s.workflow({ deviceModel: 'esp32-heater', version: '2.0.0', strategy: 'full' })
    // A manual command for a version no rollout delivers to this board passes through.
    await s.app.broker.publish('paku/edge/ESP32-0LDC0100/cmd/mark', 'before', { qos: 0 })
    await run('mosquitto_pub', [
      '-h',
      '127.0.0.1',
      '-p',
      new URL(s.mqttUrl).port,
      '-u',
      'edge',
      '-P',
      'shared-secret',
      '-q',
      '1',
      '-t',
      `paku/edge/${b.id}/cmd/ota`,
      '-m',
      JSON.stringify({ url: 'http://x/fw.bin', version: '9.9.9', checksum: '' }),
    ])
    await s.settle([b])
    assert.deepEqual(b.commands, ['9.9.9'])
    assert.equal(
      (
        await s.db.query(
          `SELECT 1 FROM firmware_releases WHERE device_model = 'esp32-heater' AND version = '2.0.0'`,
        )
      ).rowCount,
      1,
    )
  })
})
