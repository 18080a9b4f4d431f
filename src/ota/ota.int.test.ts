import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
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
import { createApp } from '../app.js'
import { sqlDir } from '../assets.js'
import { runCli } from '../cli/index.js'
import { readSqlDir } from '../db/index.js'
import { createLogger } from '../log/index.js'
import { hashBucket } from './versions.js'
import { espImage } from '../../scripts/test-support/esp-image.js'
import { httpUpdateRequest, PushDevice } from '../../scripts/test-support/ota-devices.js'

const run = promisify(execFile)
const KEY = 'ota-test-key-0123456789-padded-to-32-characters'
const MODEL = 'esp32-heater'
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex')

async function setup(
  t: TestContext,
  ota: Record<string, unknown> = {},
  o: { log?: ReturnType<typeof createLogger>; now?: () => number } = {},
) {
  const databaseUrl = await testDatabase(t)
  const config = testConfig({
    databaseUrl,
    http: { adminApiKey: KEY },
    ota: { rolloutTickSeconds: 1, renotifySeconds: 1, maxFirmwareBytes: 2_000_000, ...ota },
  })
  const s = await startApp(t, config, o)
  const db = await sqlClient(t, databaseUrl)
  const api = async (
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ) => {
    const res = await fetch(`${s.httpUrl}${path}`, {
      method,
      headers: {
        'x-api-key': KEY,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    })
    const text = await res.text()
    let json: Record<string, unknown> = {}
    try {
      json = JSON.parse(text) as Record<string, unknown>
    } catch {
      json = { text }
    }
    return { status: res.status, json, headers: res.headers }
  }
  const upload = async (version: string, image: Buffer, model = MODEL) => {
    const r = await fetch(`${s.httpUrl}/api/admin/firmware/${model}/${version}`, {
      method: 'PUT',
      headers: { 'x-api-key': KEY },
      body: image,
    })
    assert.equal(r.status, 201, await r.text())
  }
  const device = async (
    id: string,
    version: string,
    o: Partial<ConstructorParameters<typeof PushDevice>[0]> = {},
  ) => {
    const d = new PushDevice({ mqttUrl: s.mqttUrl, id, model: MODEL, version, ...o })
    await d.connect()
    defer(t, () => d.disconnect())
    await eventually(
      async () => (await db.query('SELECT 1 FROM devices WHERE device_id = $1', [id])).rowCount,
      { what: `device ${id} registered` },
    )
    return d
  }
  const rolloutState = async (rolloutId: unknown, deviceId: string) =>
    (
      await db.query<{ state: string; detail: string | null }>(
        'SELECT state, detail FROM rollout_devices WHERE rollout_id = $1 AND device_id = $2',
        [rolloutId, deviceId],
      )
    ).rows[0]
  const rolloutStatus = async (rolloutId: unknown) =>
    (
      await db.query<{ status: string; status_reason: string | null }>(
        'SELECT status, status_reason FROM rollout_configurations WHERE id = $1',
        [rolloutId],
      )
    ).rows[0]
  /** The cmd/ota a rollout sent a device (rollout_devices.attempts); undefined: it was not taken in. */
  const attempts = async (rolloutId: unknown, deviceId: string) =>
    (
      await db.query<{ attempts: number }>(
        'SELECT attempts FROM rollout_devices WHERE rollout_id = $1 AND device_id = $2',
        [rolloutId, deviceId],
      )
    ).rows[0]?.attempts
  /**
   * Runs `act` (which publishes a status of `deviceId`), waits until that status is stored, then until
   * OTA finished the work it queued for it, with a rollout pass of its own last: whatever the status or
   * the next tick would make OTA send has been sent then. Not for a device in the middle of an update:
   * it reboots (drops its client), and a status published meanwhile never goes out.
   */
  const statusHandled = async (deviceId: string, act: () => Promise<void>) => {
    const stored = async () =>
      (
        await db.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM edge_device_status WHERE device_id = $1',
          [deviceId],
        )
      ).rows[0]?.n ?? 0
    const before = await stored()
    await act()
    await eventually(async () => (await stored()) > before, {
      what: `a new status of ${deviceId} stored`,
    })
    await s.app.ota.tick()
  }
  return {
    ...s,
    db,
    api,
    upload,
    device,
    rolloutState,
    rolloutStatus,
    attempts,
    statusHandled,
  }
}

/** Device ids whose consistent-hash bucket is in [lo, hi). */
function idsInBuckets(prefix: string, lo: number, hi: number, n: number): string[] {
  const out: string[] = []
  for (let i = 0; out.length < n; i++)
    if (hashBucket(`${prefix}${i}`) >= lo && hashBucket(`${prefix}${i}`) < hi)
      out.push(`${prefix}${i}`)
  return out
}

describe('OTA firmware store', () => {
  it('takes the old CI upload (curl multipart, query fields) and a raw PUT; lists, shows, refuses duplicates with 409', async (t) => {
    const s = await setup(t)
    const dir = await mkdtemp(join(tmpdir(), 'paku-fw-'))
    defer(t, () => rm(dir, { recursive: true, force: true }))
    const image = espImage({ size: 300_000, chipId: 9, version: '1.4.2', project: 'paku-core' })
    await writeFile(join(dir, 'firmware.bin'), image)
    const curl = (version: string, file = 'firmware.bin') =>
      run('curl', [
        '-sS',
        '-w',
        '\\n%{http_code}',
        '-X',
        'POST',
        `${s.httpUrl}/api/admin/firmware/upload?version=${version}&device_model=${MODEL}&is_signed=false&release_notes=First%20release`,
        '-H',
        `X-API-Key: ${KEY}`,
        '-F',
        `file=@${join(dir, file)};type=application/octet-stream`,
      ])
    const first = await curl('1.4.2')
    const [body, code] = first.stdout.split('\n')
    assert.equal(code, '200', body)
    const json = JSON.parse(body as string) as Record<string, unknown>
    assert.equal(json.status, 'ok')
    assert.equal(json.message, 'Firmware uploaded successfully')
    assert.equal(json.checksum_sha256, sha256(image))
    assert.equal(json.checksum_md5, md5(image))
    assert.equal(json.file_size, image.length)

    const raw = espImage({ size: 5000 })
    await s.upload('1.5.0', raw)

    const list = await s.api('GET', `/api/admin/firmware/releases?device_model=${MODEL}&limit=50`)
    assert.equal(list.status, 200)
    const releases = list.json.releases as Array<Record<string, unknown>>
    assert.deepEqual(
      releases.map((r) => r.version),
      ['1.5.0', '1.4.2'],
      'newest first',
    )
    assert.equal(releases[1]?.checksum_sha256, sha256(image))
    assert.equal(releases[1]?.release_notes, 'First release')
    assert.equal(releases[1]?.chip, 'esp32s3')
    for (const key of [
      'version',
      'device_model',
      'file_size',
      'checksum_sha256',
      'is_signed',
      'created_at',
      'release_notes',
    ])
      assert.ok(key in (releases[0] as object), key)

    const show = await s.api('GET', `/api/admin/firmware/${MODEL}/1.4.2`)
    assert.equal((show.json.release as Record<string, unknown>).stored, true)
    const row = (
      await s.db.query(
        'SELECT file_path, checksum_md5, created_by FROM firmware_releases WHERE version = $1',
        ['1.4.2'],
      )
    ).rows[0]
    assert.deepEqual(row, {
      file_path: `${MODEL}_1.4.2.bin`,
      checksum_md5: md5(image),
      created_by: 'admin',
    })
    assert.equal(
      (
        await s.db.query(
          `SELECT count(*)::int AS n FROM ota_events WHERE event_type = 'firmware_uploaded'`,
        )
      ).rows[0].n,
      2,
    )

    // Same version again: 409, identical or not, and the stored bytes are untouched (the old service deleted them).
    const again = await curl('1.4.2')
    assert.equal(again.stdout.split('\n')[1], '409')
    assert.equal(
      (JSON.parse(again.stdout.split('\n')[0] as string) as { data: { identical: boolean } }).data
        .identical,
      true,
    )
    await writeFile(join(dir, 'other.bin'), espImage({ size: 1000 }))
    const other = await curl('1.4.2', 'other.bin')
    assert.equal(other.stdout.split('\n')[1], '409')
    assert.match(other.stdout, /different content/)
    const dl = await fetch(`${s.httpUrl}/api/firmware/download/1.4.2?device_model=${MODEL}`)
    assert.equal(sha256(Buffer.from(await dl.arrayBuffer())), sha256(image))
  })

  it('refuses hostile uploads with a clear error and stores nothing', async (t) => {
    const s = await setup(t, { maxFirmwareBytes: 65_536 })
    const good = espImage({ size: 2000 })
    const form = (file: Buffer | undefined, name = 'file') => {
      const f = new FormData()
      if (file) f.append(name, new Blob([file]), 'firmware.bin')
      return f
    }
    const post = (
      query: string,
      body: RequestInit['body'],
      headers: Record<string, string> = { 'x-api-key': KEY },
    ) => fetch(`${s.httpUrl}/api/admin/firmware/upload?${query}`, { method: 'POST', headers, body })
    const q = (version = '1.0.0', model = MODEL) =>
      `version=${encodeURIComponent(version)}&device_model=${encodeURIComponent(model)}`
    const boundary = '----paku'
    const truncated = Buffer.concat([
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\nContent-Type: application/octet-stream\r\n\r\n`,
      ),
      good.subarray(0, 500),
    ])
    const cases: Array<[string, () => Promise<Response>, number, RegExp]> = [
      ['no key', () => post(q(), form(good), {}), 401, /API key/],
      ['a wrong key', () => post(q(), form(good), { 'x-api-key': 'nope' }), 401, /API key/],
      [
        'a truncated multipart body',
        () =>
          post(q(), truncated, {
            'x-api-key': KEY,
            'content-type': `multipart/form-data; boundary=${boundary}`,
          }),
        400,
        /malformed multipart/,
      ],
      [
        'a body that is not multipart',
        () => post(q(), good, { 'x-api-key': KEY, 'content-type': 'application/octet-stream' }),
        415,
        /multipart\/form-data/,
      ],
      ['no file field', () => post(q(), form(good, 'firmware')), 400, /"file" .* missing/],
      [
        'the wrong magic byte',
        () => post(q(), form(Buffer.from('PK\u0003\u0004 a zip file, not firmware'))),
        400,
        /0xe9/,
      ],
      ['an empty file', () => post(q(), form(Buffer.alloc(0))), 400, /empty/],
      [
        'an oversize image',
        () => post(q(), form(espImage({ size: 70_000 }))),
        413,
        /more than the limit|over/,
      ],
      [
        'a path in the version',
        () => post(q('../../etc/passwd'), form(good)),
        400,
        /version: must be/,
      ],
      [
        'a path in the model',
        () => post(q('1.0.0', '../firmware'), form(good)),
        400,
        /device_model: must be/,
      ],
      [
        'a path in min_version',
        () => post(`${q()}&min_version=${encodeURIComponent('../x')}`, form(good)),
        400,
        /min_version: must be/,
      ],
      [
        'a missing version',
        () => post(`device_model=${MODEL}`, form(good)),
        400,
        /version: required/,
      ],
      ['a bad is_signed', () => post(`${q()}&is_signed=maybe`, form(good)), 400, /is_signed/],
      [
        'a raw PUT with the wrong magic',
        () =>
          fetch(`${s.httpUrl}/api/admin/firmware/${MODEL}/1.0.0`, {
            method: 'PUT',
            headers: { 'x-api-key': KEY },
            body: Buffer.from('#!/bin/sh\nrm -rf /'),
          }),
        400,
        /0xe9/,
      ],
    ]
    for (const [name, send, status, message] of cases) {
      const res = await send()
      const body = (await res.json()) as { status: number; message: string }
      assert.equal(res.status, status, `${name}: ${JSON.stringify(body)}`)
      assert.equal(body.status, status, name)
      assert.match(body.message, message, name)
    }
    assert.equal(
      (await s.db.query('SELECT count(*)::int AS n FROM firmware_releases')).rows[0].n,
      0,
    )
    assert.equal((await s.db.query('SELECT count(*)::int AS n FROM firmware_images')).rows[0].n, 0)
    const health = await fetch(`${s.httpUrl}/health`)
    assert.equal(health.status, 200)
    // And the real thing still works afterwards.
    assert.equal((await post(q(), form(good))).status, 200)
  })

  it('stores a first build for a model no device has reported, and opaque versions ordered by upload time', async (t) => {
    const lines: string[] = []
    const s = await setup(
      t,
      {},
      { log: createLogger({ level: 'info', format: 'json', write: (l) => lines.push(l) }) },
    )
    const NEW = 'esp32-newboard'
    await s.upload('test-20260115-140322', espImage({ size: 1000 }), NEW)
    assert.ok(
      lines.some((l) => l.includes('no device has reported') && l.includes(NEW)),
      'a new model is logged',
    )
    await s.upload('abc1234-20260116-090000', espImage({ size: 1000 }), NEW)
    await s.upload('1.5.0', espImage({ size: 1000 }), NEW)
    const releases = (
      (await s.api('GET', `/api/admin/firmware/releases?device_model=${NEW}`)).json
        .releases as Array<{ version: string }>
    ).map((r) => r.version)
    assert.deepEqual(
      releases,
      ['1.5.0', 'abc1234-20260116-090000', 'test-20260115-140322'],
      'newest upload first',
    )
    // A device on the later opaque build: a rollout of the earlier one would be a downgrade (by upload time).
    await s.device('ESP32-0PAQUE01', 'abc1234-20260116-090000', { model: NEW })
    const back = await s.api('POST', '/api/admin/rollouts', {
      name: 'older',
      firmware_version: 'test-20260115-140322',
      device_model: NEW,
      target_type: 'all',
    })
    assert.equal(back.status, 200, JSON.stringify(back.json))
    await eventually(
      async () => (await s.rolloutState(back.json.id, 'ESP32-0PAQUE01'))?.state === 'skipped',
      { what: 'skipped as a downgrade' },
    )
    assert.match(
      (await s.rolloutState(back.json.id, 'ESP32-0PAQUE01'))?.detail ?? '',
      /runs newer abc1234-20260116-090000/,
    )
  })

  it('refuses hostile rollout requests', async (t) => {
    const s = await setup(t)
    await s.upload('1.0.0', espImage({ size: 1000 }))
    const base = { name: 'r1', firmware_version: '1.0.0', device_model: MODEL, target_type: 'all' }
    const cases: Array<[string, unknown, number, RegExp]> = [
      ['not JSON', '{"name": ', 400, /valid JSON/],
      ['an array', '[1,2]', 400, /JSON object/],
      ['no name', { ...base, name: undefined }, 400, /name/],
      [
        'an unknown target type',
        { ...base, target_type: 'everyone' },
        400,
        /target_type: must be one of/,
      ],
      [
        'specific without devices',
        { ...base, target_type: 'specific' },
        400,
        /needs target_filter.device_ids/,
      ],
      [
        'a device id with a wildcard',
        { ...base, target_type: 'specific', target_device_ids: ['a/#'] },
        400,
        /target_device_ids/,
      ],
      [
        'percentage over 100',
        { ...base, rollout_percentage: 150 },
        400,
        /rollout_percentage: must be at most 100/,
      ],
      ['stages going down', { ...base, stages: [50, 10] }, 400, /increasing/],
      [
        'a group that does not exist',
        { ...base, target_type: 'group', target_filter: { groups: ['nope'] } },
        400,
        /no group "nope"/,
      ],
      ['an unknown release', { ...base, firmware_version: '9.9.9' }, 404, /upload it before/],
    ]
    for (const [name, body, status, message] of cases) {
      const r = await s.api('POST', '/api/admin/rollouts', body)
      assert.equal(r.status, status, `${name}: ${JSON.stringify(r.json)}`)
      assert.match(String(r.json.message), message, name)
    }
    assert.equal((await s.api('POST', '/api/admin/rollouts', base)).status, 200)
    const dup = await s.api('POST', '/api/admin/rollouts', base)
    assert.equal(dup.status, 409)
    assert.equal((await s.api('POST', '/api/admin/rollouts/999/pause')).status, 404)
    assert.equal((await s.api('POST', '/api/admin/rollouts/abc/pause')).status, 404)
    assert.equal((await s.api('GET', '/api/admin/rollouts?status=bogus')).status, 400)
  })
})

describe('OTA push over MQTT (paku-core devices)', () => {
  it('a rollout to all updates a device end to end: cmd/ota, download, progress, result, reboot, new version', async (t) => {
    // No re-sent command: on a busy machine the device's acknowledgement can take longer than a second
    // to be seen, and a second cmd/ota would start a second attempt (re-sending has its own test).
    const s = await setup(t, { renotifySeconds: 60 })
    const image = espImage({ size: 700_000, chipId: 9, version: '1.5.0' })
    await s.upload('1.4.2', espImage({ size: 3000 }))
    await s.upload('1.5.0', image)
    const dev = await s.device('ESP32-AA000001', '1.4.2')
    // The old CI workflow's create call, unchanged.
    const created = await s.api('POST', '/api/admin/rollout/create', {
      name: `${MODEL}-1.5.0-full`,
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'all',
      is_active: true,
    })
    assert.equal(created.status, 200, JSON.stringify(created.json))
    assert.equal(created.json.status, 'ok')
    assert.equal(created.json.message, 'Rollout created successfully')
    const id = created.json.id
    await eventually(async () => dev.version === '1.5.0', {
      timeoutMs: 10_000,
      what: 'device on 1.5.0',
    })
    await eventually(async () => (await s.rolloutState(id, dev.id))?.state === 'succeeded', {
      timeoutMs: 10_000,
      what: () => 'device action succeeded',
    })
    await eventually(async () => (await s.rolloutStatus(id))?.status === 'completed', {
      what: 'rollout completed',
    })

    assert.equal(dev.commands.length, 1)
    assert.deepEqual(dev.commands[0], {
      url: `${s.httpUrl}/api/firmware/download/1.5.0?device_model=${MODEL}`,
      version: '1.5.0',
      checksum: sha256(image),
    })
    assert.deepEqual(dev.downloads[0], { status: 200, bytes: image.length, sha256: sha256(image) })
    const status = (
      await s.db.query(
        `SELECT status, progress_percent, completed_at IS NOT NULL AS done FROM device_update_status WHERE device_id = $1 ORDER BY reported_at DESC LIMIT 1`,
        [dev.id],
      )
    ).rows[0]
    assert.deepEqual(status, { status: 'success', progress_percent: 100, done: true })
    assert.equal(
      (
        await s.db.query('SELECT current_firmware_version FROM devices WHERE device_id = $1', [
          dev.id,
        ])
      ).rows[0].current_firmware_version,
      '1.5.0',
    )
    const events = (
      await s.db.query<{ event_type: string }>(
        `SELECT event_type FROM ota_events WHERE device_id = $1 ORDER BY id`,
        [dev.id],
      )
    ).rows.map((r) => r.event_type)
    assert.ok(
      events.includes('update_started') && events.includes('update_completed'),
      events.join(),
    )
    const view = await s.api('GET', `/api/admin/rollouts/${String(id)}/devices`)
    assert.equal((view.json.devices as Array<{ state: string }>)[0]?.state, 'succeeded')
    const one = await s.api('GET', `/api/admin/rollouts/${String(id)}`)
    assert.equal((one.json.rollout as { counts: { succeeded: number } }).counts.succeeded, 1)

    const metrics = await fetch(`${s.httpUrl}/metrics`)
    assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain; version=0.0.4/)
    const text = await metrics.text()
    assert.match(text, /^# TYPE paku_ota_commands_sent_total counter$/m)
    assert.match(text, /^paku_ota_commands_sent_total 1$/m)
    assert.match(text, /^paku_ota_updates_succeeded_total 1$/m)
    assert.match(text, /^paku_ota_downloads_total 1$/m)
    assert.match(text, /^paku_ingest_received_total \d+$/m)
    assert.match(text, /^paku_devices\{model="esp32-heater"\} 1$/m)
    assert.match(text, /^paku_ota_rollouts\{status="completed"\} 1$/m)
  })

  it('sends the command again to a device that was offline, and does not retry a failed device in a loop', async (t) => {
    // paku's clock, moved on by ota.renotifySeconds before each wake instead of waiting it out.
    let ahead = 0
    const s = await setup(t, {}, { now: () => Date.now() + ahead })
    const image = espImage({ size: 4000 })
    await s.upload('1.5.0', image)
    const sleeper = await s.device('ESP32-AA000002', '1.4.2')
    await sleeper.disconnect()
    const broken = await s.device('ESP32-AA000003', '1.4.2', {
      failWith: { code: 4, message: 'Installation failed' },
    })
    const created = await s.api('POST', '/api/admin/rollouts', {
      name: 'r',
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'all',
      error_threshold: { count: 5 },
    })
    const id = created.json.id
    await eventually(async () => (await s.rolloutState(id, broken.id))?.state === 'failed', {
      what: 'broken device failed',
    })
    assert.match(
      (await s.rolloutState(id, broken.id))?.detail ?? '',
      /result 4: Installation failed/,
    )
    // It wakes up again and again: no new command (the old flow would push it into a loop).
    assert.equal(await s.attempts(id, broken.id), 1)
    for (let i = 0; i < 3; i++) {
      ahead += 1000
      await s.statusHandled(broken.id, () => broken.publishStatus())
      assert.equal(await s.attempts(id, broken.id), 1, `no cmd/ota after wake ${i + 1}`)
    }
    assert.equal(broken.commands.length, 1)
    assert.equal(
      (await s.rolloutState(id, sleeper.id))?.state,
      'notified',
      'the command went out while it slept (clean session: lost)',
    )

    // Positive control: the same wait sees the command that a wake does send (to the device still open).
    assert.equal(await s.attempts(id, sleeper.id), 1)
    ahead += 1000
    await s.statusHandled(sleeper.id, () => sleeper.connect())
    assert.equal(await s.attempts(id, sleeper.id), 2, 'the command went out again on waking')
    await eventually(async () => sleeper.version === '1.5.0', {
      timeoutMs: 10_000,
      what: 'sleeper updated after waking',
    })
    await eventually(async () => (await s.rolloutState(id, sleeper.id))?.state === 'succeeded', {
      what: 'sleeper succeeded',
    })
    // The command sent again carries the image's SHA-256 as the first did: the device checks what it downloads.
    assert.equal(sleeper.commands.length, 1)
    assert.equal(sleeper.commands[0]?.checksum, createHash('sha256').update(image).digest('hex'))

    // Retry re-queues failed devices only.
    const retry = await s.api('POST', `/api/admin/rollouts/${String(id)}/retry`)
    assert.equal(retry.status, 200, JSON.stringify(retry.json))
    await eventually(async () => broken.commands.length === 2, {
      what: 'command re-sent after retry',
    })
    await eventually(async () => (await s.rolloutState(id, broken.id))?.state === 'failed', {
      what: 'failed again',
    })
    assert.equal(sleeper.commands.length, 1)
  })

  it('a second command refused with 10 "Update already running" (the old workflow also pushes) does not fail the update', async (t) => {
    const s = await setup(t)
    await s.upload('1.5.0', espImage({ size: 4000 }))
    await s.db.query(
      `INSERT INTO devices (device_id, device_model, current_firmware_version) VALUES ('ESP32-FF000001', $1, '1.4.2')`,
      [MODEL],
    )
    const r = await s.api('POST', '/api/admin/rollouts', {
      name: 'dup',
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'all',
    })
    await eventually(
      async () => (await s.rolloutState(r.json.id, 'ESP32-FF000001'))?.state === 'notified',
      { what: 'notified' },
    )
    const c = await mqtt.connectAsync(s.mqttUrl, { clientId: 'ESP32-FF000001', reconnectPeriod: 0 })
    defer(t, () => c.endAsync())
    const pub = (sub: string, body: unknown) =>
      c.publishAsync(`paku/edge/ESP32-FF000001/ota/${sub}`, JSON.stringify(body), { qos: 1 })
    await pub('status', {
      timestamp: '',
      status: 'accepted',
      current_version: '1.4.2',
      target_version: '1.5.0',
    })
    await pub('result', {
      timestamp: '',
      current_version: '1.4.2',
      target_version: '1.5.0',
      success: false,
      result_code: 10,
      message: 'Update already running',
    })
    await pub('progress', {
      timestamp: '',
      state: 'Downloading',
      percent: 40,
      downloaded: 1600,
      total: 4000,
      elapsed_ms: 10,
    })
    await eventually(
      async () => (await s.rolloutState(r.json.id, 'ESP32-FF000001'))?.state === 'downloading',
      { what: 'still going' },
    )
    await pub('result', {
      timestamp: '',
      current_version: '1.4.2',
      target_version: '1.5.0',
      success: false,
      result_code: 3,
      message: 'Verification failed',
    })
    await eventually(
      async () => (await s.rolloutState(r.json.id, 'ESP32-FF000001'))?.state === 'failed',
      { what: 'the real result counts' },
    )
    assert.match(
      (await s.rolloutState(r.json.id, 'ESP32-FF000001'))?.detail ?? '',
      /result 3: Verification failed/,
    )
  })

  it('pauses by itself at the error threshold; resume counts errors afresh', async (t) => {
    const s = await setup(t)
    await s.upload('1.5.0', espImage({ size: 4000 }))
    const bad = [
      await s.device('ESP32-BB000001', '1.4.2', {
        failWith: { code: 9, message: 'Invalid firmware' },
      }),
      await s.device('ESP32-BB000002', '1.4.2', {
        failWith: { code: 9, message: 'Invalid firmware' },
      }),
    ]
    const created = await s.api('POST', '/api/admin/rollouts', {
      name: 'guarded',
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'all',
      error_threshold: { count: 2 },
    })
    const id = created.json.id
    await eventually(async () => (await s.rolloutStatus(id))?.status === 'paused', {
      timeoutMs: 8000,
      what: 'rollout paused',
    })
    assert.match(
      (await s.rolloutStatus(id))?.status_reason ?? '',
      /error threshold: 2 devices failed/,
    )
    for (const d of bad) assert.equal(d.commands.length, 1)
    // A device that shows up while paused is not taken in.
    const sent = s.app.ota.counters.commandsSent
    const late = await s.device('ESP32-BB000003', '1.4.2')
    // A rollout pass (the one the tick timer would run), queued after the work its status caused (the
    // status is queued on arrival, before the device row s.device waited for is stored): nobody taken in.
    await s.app.ota.tick()
    assert.equal(late.commands.length, 0)
    assert.equal(await s.rolloutState(id, late.id), undefined)
    assert.equal(s.app.ota.counters.commandsSent, sent, 'no cmd/ota while paused')
    const paused = await s.api('POST', `/api/admin/rollouts/${String(id)}/pause`)
    assert.equal(paused.status, 409, 'pausing a paused rollout is a conflict')
    const resumed = await s.api('POST', `/api/admin/rollouts/${String(id)}/resume`)
    assert.equal(resumed.status, 200)
    // Positive control: the same pass and look see the device taken in and sent its command once running.
    await s.app.ota.tick()
    assert.notEqual(await s.rolloutState(id, late.id), undefined, 'taken in after resume')
    assert.ok(((await s.attempts(id, late.id)) ?? 0) >= 1, 'sent its cmd/ota after resume')
    assert.ok(s.app.ota.counters.commandsSent > sent)
    await eventually(async () => late.version === '1.5.0', {
      timeoutMs: 10_000,
      what: 'late device updated after resume',
    })
    await eventually(async () => (await s.rolloutStatus(id))?.status === 'completed', {
      what: 'completed after resume',
    })
    const events = (
      await s.db.query(
        `SELECT event_data->>'action' AS a FROM ota_events WHERE event_type = 'rollout_updated' AND rollout_id = $1 ORDER BY id`,
        [id],
      )
    ).rows.map((r) => r.a)
    assert.deepEqual(events, ['paused', 'resume', 'completed'])
  })

  it('widens a staged rollout 10 → 50 → 100 % by itself once each stage succeeds, and on command', async (t) => {
    const s = await setup(t)
    await s.upload('1.5.0', espImage({ size: 4000 }))
    const [a] = idsInBuckets('stg-a-', 0, 10, 1)
    const [b] = idsInBuckets('stg-b-', 10, 50, 1)
    const [c] = idsInBuckets('stg-c-', 50, 100, 1)
    const devs = [
      await s.device(a as string, '1.4.2'),
      await s.device(b as string, '1.4.2'),
      await s.device(c as string, '1.4.2'),
    ]
    const created = await s.api('POST', '/api/admin/rollouts', {
      name: 'staged',
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'all',
      stages: [10, 50, 100],
      auto_advance: true,
      success_threshold_percent: 100,
    })
    const id = created.json.id
    assert.equal((created.json.rollout as { current_percentage: number }).current_percentage, 10)
    // Positive control for the manual rollout below: with auto_advance, once the first stage succeeded,
    // the pass it triggers and one more have taken the next stage's device in and sent its command.
    await eventually(async () => (await s.rolloutState(id, a as string))?.state === 'succeeded', {
      timeoutMs: 10_000,
      what: 'first stage succeeded',
    })
    await s.app.ota.tick()
    assert.ok(((await s.attempts(id, b as string)) ?? 0) >= 1, 'second stage sent by itself')
    await eventually(async () => devs.every((d) => d.version === '1.5.0'), {
      timeoutMs: 15_000,
      what: 'all three updated',
    })
    await eventually(async () => (await s.rolloutStatus(id))?.status === 'completed', {
      timeoutMs: 15_000,
      what: 'completed',
    })
    const order = (
      await s.db.query<{ device_id: string; stage: number }>(
        'SELECT device_id, stage FROM rollout_devices WHERE rollout_id = $1 ORDER BY stage',
        [id],
      )
    ).rows
    assert.deepEqual(
      order.map((r) => [r.device_id, r.stage]),
      [
        [a, 0],
        [b, 1],
        [c, 2],
      ],
      'each device came in at its stage',
    )

    // Manual: without auto_advance the next stage waits for the admin.
    await s.upload('1.6.0', espImage({ size: 4000 }))
    const manual = await s.api('POST', '/api/admin/rollouts', {
      name: 'manual',
      firmware_version: '1.6.0',
      device_model: MODEL,
      target_type: 'all',
      stages: [10, 100],
    })
    const mid = manual.json.id
    await eventually(async () => devs[0]?.version === '1.6.0', {
      timeoutMs: 10_000,
      what: 'first stage updated',
    })
    // The same wait and look as in the auto_advance rollout: the second stage's device is not taken in.
    await eventually(async () => (await s.rolloutState(mid, a as string))?.state === 'succeeded', {
      timeoutMs: 10_000,
      what: 'first stage succeeded',
    })
    await s.app.ota.tick()
    assert.equal(await s.attempts(mid, b as string), undefined, 'second stage not taken in')
    assert.equal(devs[1]?.commands.length, 1, 'second device waits')
    assert.equal((await s.rolloutStatus(mid))?.status, 'running')
    const adv = await s.api('POST', `/api/admin/rollouts/${String(mid)}/advance`)
    assert.equal(adv.status, 200, JSON.stringify(adv.json))
    await eventually(async () => devs.every((d) => d.version === '1.6.0'), {
      timeoutMs: 15_000,
      what: 'all on 1.6.0 after advance',
    })
    const last = await s.api('POST', `/api/admin/rollouts/${String(mid)}/advance`)
    assert.equal(last.status, 409)
    assert.match(String(last.json.message), /last stage|cancelled|completed|percentage/)
  })

  it('never downgrades unless the rollout allows it', async (t) => {
    const s = await setup(t)
    await s.upload('1.5.0', espImage({ size: 4000 }))
    const newer = await s.device('ESP32-CC000001', '2.0.0')
    const r1 = await s.api('POST', '/api/admin/rollouts', {
      name: 'old',
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'all',
    })
    await eventually(
      async () => (await s.rolloutState(r1.json.id, newer.id))?.state === 'skipped',
      { what: 'skipped' },
    )
    assert.match((await s.rolloutState(r1.json.id, newer.id))?.detail ?? '', /runs newer 2.0.0/)
    // A rollout pass after the one that skipped it (the tick timer's) sends it nothing.
    await s.app.ota.tick()
    assert.equal(await s.attempts(r1.json.id, newer.id), 0)
    assert.equal(s.app.ota.counters.commandsSent, 0)
    assert.equal(newer.commands.length, 0)
    await eventually(async () => (await s.rolloutStatus(r1.json.id))?.status === 'completed', {
      what: 'nothing left to do: completed',
    })
    const r2 = await s.api('POST', '/api/admin/rollouts', {
      name: 'back',
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'all',
      allow_downgrade: true,
    })
    assert.equal(r2.status, 200)
    // Positive control: the same pass and look see the command when the rollout allows the downgrade.
    await s.app.ota.tick()
    assert.ok(((await s.attempts(r2.json.id, newer.id)) ?? 0) >= 1, 'sent when allowed')
    await eventually(async () => newer.version === '1.5.0', {
      timeoutMs: 10_000,
      what: 'downgraded when allowed',
    })
  })

  it('detects a rollback: the device said success but boots the old version', async (t) => {
    // paku's clock, moved past the reboot grace instead of waiting it out.
    let ahead = 0
    const s = await setup(t, {}, { now: () => Date.now() + ahead })
    await s.upload('1.5.0', espImage({ size: 4000 }))
    const flaky = await s.device('ESP32-DD000001', '1.4.2', { rollBack: true })
    const r = await s.api('POST', '/api/admin/rollouts', {
      name: 'rb',
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'all',
    })
    await eventually(
      async () => (await s.rolloutState(r.json.id, flaky.id))?.state === 'installed',
      { what: 'installed' },
    )
    // Within the reboot grace (15 s) a status naming the old version may predate the reboot: not counted.
    const statuses = async () =>
      (await s.db.query(`SELECT 1 FROM edge_device_status WHERE device_id = $1`, [flaky.id]))
        .rowCount ?? 0
    await flaky.idle() // rebooted: its status after the reboot is out
    await eventually(async () => (await statuses()) >= 2 || undefined, {
      what: 'the status after the reboot stored',
    })
    const before = await statuses()
    await flaky.publishStatus()
    await eventually(async () => (await statuses()) > before || undefined, {
      what: 'the early status stored',
    })
    await s.app.ota.tick() // runs after the work that status queued
    assert.equal(
      (await s.rolloutState(r.json.id, flaky.id))?.state,
      'installed',
      'not counted within the grace',
    )
    // The device's next wake after the grace counts.
    ahead = 16_000
    await flaky.publishStatus()
    await eventually(async () => (await s.rolloutState(r.json.id, flaky.id))?.state === 'failed', {
      what: 'rollback detected',
    })
    assert.match(
      (await s.rolloutState(r.json.id, flaky.id))?.detail ?? '',
      /rolled back: runs 1.4.2/,
    )
  })

  it('groups and device metadata over the API; a group rollout reaches members only; releases in use cannot be deleted', async (t) => {
    const s = await setup(t)
    await s.upload('1.5.0', espImage({ size: 4000 }))
    const member = await s.device('ESP32-EE000001', '1.4.2')
    const outsider = await s.device('ESP32-EE000002', '1.4.2')
    assert.equal(
      (
        await s.api('PUT', '/api/admin/groups/van', {
          description: 'the camper van',
          device_ids: [member.id],
        })
      ).status,
      200,
    )
    const put = await s.api('PUT', `/api/admin/devices/${outsider.id}`, {
      device_model: MODEL,
      metadata: { site: 'cabin' },
    })
    assert.equal((put.json.device as { metadata: { site: string } }).metadata.site, 'cabin')
    const groups = await s.api('GET', '/api/admin/groups')
    assert.deepEqual(groups.json.groups, [
      {
        name: 'van',
        description: 'the camper van',
        created_at: (groups.json.groups as Array<{ created_at: string }>)[0]?.created_at,
        device_ids: [member.id],
      },
    ])
    const inVan = await s.api('GET', '/api/admin/devices?group=van')
    assert.deepEqual(
      (inVan.json.devices as Array<{ device_id: string; groups: string[] }>).map((d) => [
        d.device_id,
        d.groups,
      ]),
      [[member.id, ['van']]],
    )
    const r = await s.api('POST', '/api/admin/rollouts', {
      name: 'van-only',
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'group',
      target_filter: { group: 'van' },
    })
    await eventually(async () => member.version === '1.5.0', {
      timeoutMs: 10_000,
      what: 'member updated',
    })
    // A rollout pass after the member's update (the tick timer's): the outsider is not taken in.
    await s.app.ota.tick()
    assert.equal(await s.attempts(r.json.id, outsider.id), undefined, 'outsider not taken in')
    // Positive control: the same look sees the member's command.
    assert.ok(((await s.attempts(r.json.id, member.id)) ?? 0) >= 1, 'member sent its cmd/ota')
    assert.equal(outsider.commands.length, 0)

    await eventually(async () => (await s.rolloutStatus(r.json.id))?.status === 'completed', {
      timeoutMs: 15_000,
      what: 'completed',
    })
    // Completed but current: it would still take in a van device that appears later, so the release is held.
    assert.equal((await s.api('DELETE', `/api/admin/firmware/${MODEL}/1.5.0`)).status, 409)
    assert.equal(
      (await s.api('POST', `/api/admin/rollouts/${String(r.json.id)}/cancel`)).status,
      200,
    )
    assert.equal((await s.api('DELETE', `/api/admin/firmware/${MODEL}/1.5.0`)).status, 200)
    await s.upload('1.6.0', espImage({ size: 4000 }))
    const r2 = await s.api('POST', '/api/admin/rollouts', {
      name: 'live',
      firmware_version: '1.6.0',
      device_model: MODEL,
      target_type: 'specific',
      target_device_ids: ['ESP32-NEVER-SEEN'],
    })
    assert.equal(r2.status, 200)
    const blocked = await s.api('DELETE', `/api/admin/firmware/${MODEL}/1.6.0`)
    assert.equal(blocked.status, 409)
    assert.match(String(blocked.json.message), /live rollouts \(live\)/)
    assert.equal(
      (await s.api('POST', `/api/admin/rollouts/${String(r2.json.id)}/cancel`)).status,
      200,
    )
    assert.equal((await s.api('DELETE', `/api/admin/firmware/${MODEL}/1.6.0`)).status, 200)
    assert.equal(
      (await fetch(`${s.httpUrl}/api/firmware/download/1.6.0?device_model=${MODEL}`)).status,
      404,
    )
    assert.equal((await s.api('DELETE', '/api/admin/groups/van/devices/' + member.id)).status, 200)
    assert.equal((await s.api('DELETE', '/api/admin/groups/van')).status, 200)
  })
})

describe('OTA downloads and pull devices', () => {
  it('serves Range (resume), ETag, HEAD and 416; the /ota prefix; refuses an ambiguous version', async (t) => {
    const s = await setup(t)
    const image = espImage({ size: 600_000 })
    await s.upload('1.5.0', image)
    const url = `${s.httpUrl}/api/firmware/download/1.5.0?device_model=${MODEL}`
    const full = await fetch(url)
    assert.equal(full.status, 200)
    for (const [k, v] of Object.entries({
      'content-length': String(image.length),
      'content-type': 'application/octet-stream',
      'x-firmware-version': '1.5.0',
      'x-checksum-sha256': sha256(image),
      'x-md5': md5(image),
      etag: `"${sha256(image)}"`,
      'accept-ranges': 'bytes',
      'content-disposition': `attachment; filename="${MODEL}_1.5.0.bin"`,
    })) {
      assert.equal(full.headers.get(k), v, k)
    }
    assert.equal(full.headers.get('transfer-encoding'), null)
    assert.ok(Buffer.from(await full.arrayBuffer()).equals(image))
    // Resume: the first 300,001 bytes, then the rest, equal the image.
    const head = await fetch(url, { headers: { range: 'bytes=0-300000' } })
    assert.equal(head.status, 206)
    assert.equal(head.headers.get('content-range'), `bytes 0-300000/${image.length}`)
    const tail = await fetch(url, {
      headers: { range: 'bytes=300001-', 'if-range': `"${sha256(image)}"` },
    })
    assert.equal(tail.status, 206)
    assert.equal(tail.headers.get('content-length'), String(image.length - 300_001))
    assert.ok(
      Buffer.concat([
        Buffer.from(await head.arrayBuffer()),
        Buffer.from(await tail.arrayBuffer()),
      ]).equals(image),
    )
    const stale = await fetch(url, {
      headers: { range: 'bytes=10-', 'if-range': '"something-else"' },
    })
    assert.equal(stale.status, 200, 'If-Range with another ETag gets the whole image')
    await stale.arrayBuffer()
    assert.equal(
      (await fetch(url, { headers: { 'if-none-match': `"${sha256(image)}"` } })).status,
      304,
    )
    const bad = await fetch(url, { headers: { range: `bytes=${image.length}-` } })
    assert.equal(bad.status, 416)
    assert.equal(bad.headers.get('content-range'), `bytes */${image.length}`)
    const h = await fetch(url, { method: 'HEAD' })
    assert.equal(h.status, 200)
    assert.equal(h.headers.get('content-length'), String(image.length))
    const proxied = await fetch(
      `${s.httpUrl}/ota/api/firmware/download/1.5.0?device_model=${MODEL}`,
    )
    assert.equal(proxied.status, 200)
    assert.equal(sha256(Buffer.from(await proxied.arrayBuffer())), sha256(image))
    // Without device_model: fine while one model has the version, 409 once two do.
    assert.equal(
      (
        await fetch(`${s.httpUrl}/api/firmware/download/1.5.0`).then(async (r) => {
          await r.arrayBuffer()
          return r
        })
      ).status,
      200,
    )
    await s.upload('1.5.0', espImage({ size: 3000 }), 'esp8266-wired-sensors')
    const amb = await fetch(`${s.httpUrl}/api/firmware/download/1.5.0`)
    assert.equal(amb.status, 409)
    assert.match(
      ((await amb.json()) as { message: string }).message,
      /several models.*device_model/,
    )
    const missing = await fetch(`${s.httpUrl}/api/firmware/download/9.9.9?device_model=${MODEL}`)
    assert.equal(missing.status, 404)
    assert.deepEqual(await missing.json(), { status: 404, message: 'Firmware version not found' })
    assert.equal(
      (await fetch(`${s.httpUrl}/api/firmware/download/..%2F..%2Fetc?device_model=${MODEL}`))
        .status,
      404,
    )
    const metrics = await (await fetch(`${s.httpUrl}/metrics`)).text()
    assert.match(metrics, /^paku_ota_downloads_partial_total 2$/m)
  })

  it('Arduino HTTPUpdate: 304 with nothing to do, the image over HTTP/1.0, success from the next check-in, no retry loop', async (t) => {
    const s = await setup(t)
    const old = espImage({ size: 3000, version: '1.4.2' })
    const next = espImage({ size: 400_000, version: '1.5.0' })
    await s.upload('1.4.2', old)
    await s.upload('1.5.0', next)
    const path = `/api/firmware/update?device_model=${MODEL}`
    const mac = '24:A1:60:C0:FF:EE'
    const none = await httpUpdateRequest(s.httpUrl, path, { mac, image: old })
    assert.equal(none.status, 304)
    assert.match(none.headers['x-paku-reason'] ?? '', /no running rollout/)
    const reg = (
      await s.db.query(
        `SELECT device_id, device_model, mac_address, current_firmware_version, metadata->>'protocol' AS protocol FROM devices`,
      )
    ).rows
    assert.deepEqual(
      reg,
      [
        {
          device_id: 'ESP32-24A160C0FFEE',
          device_model: MODEL,
          mac_address: mac,
          current_firmware_version: '1.4.2',
          protocol: 'http',
        },
      ],
      'registered, version from the sketch hash',
    )

    const created = await s.api('POST', '/api/admin/rollouts', {
      name: 'pull',
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'all',
    })
    const id = created.json.id
    const served = await httpUpdateRequest(s.httpUrl, path, { mac, image: old })
    assert.equal(served.status, 200, JSON.stringify(served.headers))
    assert.equal(served.headers['content-length'], String(next.length))
    assert.equal(served.headers['transfer-encoding'], undefined)
    assert.equal(served.headers['x-md5'], md5(next))
    assert.equal(served.body[0], 0xe9)
    assert.ok(served.body.equals(next))
    assert.equal((await s.rolloutState(id, 'ESP32-24A160C0FFEE'))?.state, 'downloading')
    // It flashed it and checks in with the new sketch.
    const after = await httpUpdateRequest(s.httpUrl, path, { mac, image: next })
    assert.equal(after.status, 304)
    await eventually(
      async () => (await s.rolloutState(id, 'ESP32-24A160C0FFEE'))?.state === 'succeeded',
      { what: 'pull success inferred' },
    )
    assert.equal(
      (
        await s.db.query(
          `SELECT current_firmware_version FROM devices WHERE device_id = 'ESP32-24A160C0FFEE'`,
        )
      ).rows[0].current_firmware_version,
      '1.5.0',
    )
    assert.equal(
      (
        await s.db.query(
          `SELECT status FROM device_update_status WHERE device_id = 'ESP32-24A160C0FFEE' ORDER BY id DESC LIMIT 1`,
        )
      ).rows[0].status,
      'success',
    )

    // Another device gets the image but comes back on the old sketch: failed, and 304 from then on.
    const mac2 = '24:A1:60:C0:FF:01'
    assert.equal((await httpUpdateRequest(s.httpUrl, path, { mac: mac2, image: old })).status, 200)
    const again = await httpUpdateRequest(s.httpUrl, path, { mac: mac2, image: old })
    assert.equal(again.status, 304)
    assert.match(again.headers['x-paku-reason'] ?? '', /still runs 1.4.2/)
    assert.equal((await httpUpdateRequest(s.httpUrl, path, { mac: mac2, image: old })).status, 304)
    const started = (
      await s.db.query(
        `SELECT count(*)::int AS n FROM ota_events WHERE event_type = 'update_started' AND device_id = 'ESP32-24A160C0FF01'`,
      )
    ).rows[0].n
    assert.equal(started, 1, 'served once')
    // Not enough room for the image: refused, recorded as failed.
    const mac3 = '24:A1:60:C0:FF:02'
    const tight = await httpUpdateRequest(s.httpUrl, path, {
      mac: mac3,
      image: old,
      freeSpace: 1000,
    })
    assert.equal(tight.status, 304)
    assert.match(tight.headers['x-paku-reason'] ?? '', /400000 bytes, the device has 1000 free/)
    // A pull device never gets cmd/ota.
    const metrics = await (await fetch(`${s.httpUrl}/metrics`)).text()
    assert.match(metrics, /^paku_ota_commands_sent_total 0$/m)
    assert.match(metrics, /^paku_ota_pull_served_total 2$/m)
    // Hostile headers and parameters.
    const hostile = await fetch(`${s.httpUrl}${path}`, {
      headers: { 'x-esp32-sta-mac': 'not-a-mac' },
    })
    assert.equal(hostile.status, 400)
    assert.match(((await hostile.json()) as { message: string }).message, /sta-mac is malformed/)
    assert.equal(
      (await fetch(`${s.httpUrl}/api/firmware/update?device_model=${MODEL}`)).status,
      400,
    )
    assert.equal(
      (await fetch(`${s.httpUrl}/api/firmware/update`, { headers: { 'x-esp32-sta-mac': mac } }))
        .status,
      400,
    )
  })

  it('keeps GET /api/firmware/check with the canary hash (ESP32-20E955A0 is in at 26 %, not at 25 %)', async (t) => {
    const s = await setup(t)
    const image = espImage({ size: 3000 })
    await s.upload('1.5.0', image)
    const check = async (id: string, current = '1.4.2') =>
      (
        await fetch(
          `${s.httpUrl}/api/firmware/check?device_id=${id}&device_model=${MODEL}&current_version=${current}`,
        )
      ).json() as Promise<Record<string, unknown>>
    const keys = [
      'update_available',
      'current_version',
      'latest_version',
      'download_url',
      'file_size',
      'checksum_sha256',
      'release_notes',
    ]
    const before = await check('ESP32-20E955A0')
    assert.deepEqual(Object.keys(before), keys)
    assert.equal(before.update_available, false)
    assert.equal(before.latest_version, '1.5.0')
    await s.api('POST', '/api/admin/rollouts', {
      name: 'c26',
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'canary',
      rollout_percentage: 26,
    })
    const yes = await check('ESP32-20E955A0')
    assert.deepEqual(yes, {
      update_available: true,
      current_version: '1.4.2',
      latest_version: '1.5.0',
      download_url: `${s.httpUrl}/api/firmware/download/1.5.0?device_model=${MODEL}`,
      file_size: image.length,
      checksum_sha256: sha256(image),
      release_notes: null,
    })
    await check('ESP32-20E955A0')
    assert.equal(
      (
        await s.db.query(
          `SELECT count(*)::int AS n FROM ota_events WHERE event_type = 'update_started' AND device_id = 'ESP32-20E955A0'`,
        )
      ).rows[0].n,
      1,
      'one event, not one per poll',
    )
    assert.equal((await check('device1')).update_available, false, 'device1 sits at 60')
    await s.api('POST', '/api/admin/rollouts', {
      name: 'c25',
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'canary',
      rollout_percentage: 25,
    })
    assert.equal((await check('ESP32-20E955A0')).update_available, false)
    const bad = await fetch(`${s.httpUrl}/api/firmware/check?device_id=x&device_model=${MODEL}`)
    assert.equal(bad.status, 400)
  })
})

describe('paku firmware import', () => {
  it('loads the old firmware volume into the database, checking each recorded SHA-256', async (t) => {
    const databaseUrl = await testDatabase(t)
    const io = {
      env: { ...process.env, PAKU_DATABASE_URL: databaseUrl, PAKU_LOG_LEVEL: 'silent' },
      out: (l: string) => out.push(l),
      err: (l: string) => err.push(l),
      waitForStop: () => new Promise<string>(() => undefined),
      isTTY: false,
    }
    const out: string[] = []
    const err: string[] = []
    assert.equal(await runCli(['migrate'], io), 0)
    const db = await sqlClient(t, databaseUrl)
    const dir = await mkdtemp(join(tmpdir(), 'paku-vol-'))
    defer(t, () => rm(dir, { recursive: true, force: true }))
    const good = espImage({ size: 5000 })
    await writeFile(join(dir, `${MODEL}_1.4.2.bin`), good)
    await writeFile(join(dir, `${MODEL}_1.4.3.bin`), espImage({ size: 10 }))
    // Rows as the old service wrote them: bare file names, no md5, no bytes in the database.
    await db.query(
      `INSERT INTO firmware_releases (version, device_model, file_path, file_size, checksum_sha256, created_by) VALUES
      ('1.4.2', $1, $2, $3, $4, 'admin'), ('1.4.3', $1, $5, 10, $6, 'admin'), ('1.4.4', $1, $7, 10, $6, 'admin'), ('1.4.5', $1, '../../etc/passwd', 10, $6, 'admin')`,
      [
        MODEL,
        `${MODEL}_1.4.2.bin`,
        good.length,
        sha256(good),
        `${MODEL}_1.4.3.bin`,
        'f'.repeat(64),
        `${MODEL}_1.4.4.bin`,
      ],
    )
    assert.equal(await runCli(['firmware', 'import', dir], io), 1, 'a mismatch is an error')
    assert.ok(out.includes(`imported ${MODEL} 1.4.2`), out.join('\n'))
    assert.ok(
      err.some((l) => l.startsWith(`checksum mismatch, not imported: ${MODEL} 1.4.3`)),
      err.join('\n'),
    )
    assert.ok(err.some((l) => l.startsWith(`missing ${MODEL} 1.4.4`)))
    assert.ok(
      err.some((l) => /1\.4\.5 \(file_path .* leaves the directory\)/.test(l)),
      err.join('\n'),
    )
    const stored = (
      await db.query(
        `SELECT f.version, f.checksum_md5 FROM firmware_images i JOIN firmware_releases f ON f.id = i.release_id`,
      )
    ).rows
    assert.deepEqual(stored, [{ version: '1.4.2', checksum_md5: md5(good) }])
    assert.equal(await runCli(['firmware', 'import'], io), 2)
  })

  it('reads the old firmware volume at start (ota.firmwareDir): adopted releases are downloadable and rollout-ready', async (t) => {
    const databaseUrl = await testDatabase(t)
    const io = {
      env: { ...process.env, PAKU_DATABASE_URL: databaseUrl, PAKU_LOG_LEVEL: 'silent' },
      out: () => undefined,
      err: () => undefined,
      waitForStop: () => new Promise<string>(() => undefined),
      isTTY: false,
    }
    assert.equal(await runCli(['migrate'], io), 0)
    const db = await sqlClient(t, databaseUrl)
    const dir = await mkdtemp(join(tmpdir(), 'paku-vol-'))
    defer(t, () => rm(dir, { recursive: true, force: true }))
    const good = espImage({ size: 6000 })
    await writeFile(join(dir, `${MODEL}_1.4.2.bin`), good)
    await writeFile(join(dir, `${MODEL}_1.4.3.bin`), espImage({ size: 10 }))
    // The old service's rows: bare file names, no bytes in the database.
    await db.query(
      `INSERT INTO firmware_releases (version, device_model, file_path, file_size, checksum_sha256, created_by) VALUES
      ('1.4.2', $1, $2, $3, $4, 'admin'), ('1.4.3', $1, $5, 10, $6, 'admin'), ('1.4.4', $1, $7, 10, $6, 'admin')`,
      [
        MODEL,
        `${MODEL}_1.4.2.bin`,
        good.length,
        sha256(good),
        `${MODEL}_1.4.3.bin`,
        'f'.repeat(64),
        `${MODEL}_1.4.4.bin`,
      ],
    )
    const lines: string[] = []
    const log = createLogger({ level: 'info', format: 'json', write: (l) => lines.push(l) })
    const s = await startApp(
      t,
      testConfig({ databaseUrl, http: { adminApiKey: KEY }, ota: { firmwareDir: dir } }),
      { log },
    )
    const res = await fetch(`${s.httpUrl}/ota/api/firmware/download/1.4.2?device_model=${MODEL}`)
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-length'), String(good.length))
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), good)
    const rollout = await fetch(`${s.httpUrl}/api/admin/rollout/create`, {
      method: 'POST',
      headers: { 'x-api-key': KEY, 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'adopted',
        firmware_version: '1.4.2',
        device_model: MODEL,
        target_type: 'all',
      }),
    })
    assert.equal(rollout.status, 200, await rollout.text())
    assert.equal(
      (await fetch(`${s.httpUrl}/api/firmware/download/1.4.3?device_model=${MODEL}`)).status,
      404,
      'a mismatched file is not served',
    )
    assert.ok(
      lines.some(
        (l) => l.includes('firmware read from the old firmware volume') && l.includes('1.4.2'),
      ),
    )
    assert.ok(lines.some((l) => l.includes('do not match the SHA-256') && l.includes('1.4.3')))
    assert.ok(
      lines.some((l) => l.includes('without their file in ota.firmwareDir') && l.includes('1.4.4')),
    )
  })

  it('refuses to start when ota.firmwareDir cannot be read, naming it', async (t) => {
    const databaseUrl = await testDatabase(t)
    const app = createApp({
      config: testConfig({ databaseUrl, ota: { firmwareDir: '/nonexistent/paku_firmware' } }),
      log: createLogger({ level: 'silent', format: 'json' }),
      migrations: readSqlDir(sqlDir()),
      version: 't',
    })
    await assert.rejects(
      app.start(),
      /start ota: ota\.firmwareDir: cannot read \/nonexistent\/paku_firmware \(ENOENT\)/,
    )
  })
})
