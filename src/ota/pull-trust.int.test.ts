/**
 * The open device routes (/api/firmware/check and /api/firmware/update) against a running paku: what an
 * unauthenticated request may not do (rewrite a known device, count toward a rollout), what a pull
 * token allows, and the per-address rate limit. Each refusal has a positive control beside it.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { describe, it, type TestContext } from 'node:test'
import {
  defer,
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'
import { hashBucket } from './versions.js'
import { espImage } from '../../scripts/test-support/esp-image.js'
import { httpUpdateRequest, PushDevice } from '../../scripts/test-support/ota-devices.js'

const KEY = 'pull-trust-test-key-0123456789-at-least-32-chars'
const MODEL = 'esp32-heater'
const OTHER_MODEL = 'esp8266-wired-sensors'
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex')

type Json = Record<string, unknown>

async function setup(t: TestContext, ota: Record<string, unknown> = {}) {
  const databaseUrl = await testDatabase(t)
  const config = testConfig({
    databaseUrl,
    http: { adminApiKey: KEY },
    ota: { rolloutTickSeconds: 1, renotifySeconds: 1, maxFirmwareBytes: 2_000_000, ...ota },
  })
  const s = await startApp(t, config)
  const db = await sqlClient(t, databaseUrl)
  const api = async (
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = { 'x-api-key': KEY },
  ) => {
    const res = await fetch(`${s.httpUrl}${path}`, {
      method,
      headers: {
        ...headers,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const text = await res.text()
    let json: Json = {}
    try {
      json = JSON.parse(text) as Json
    } catch {
      json = { text }
    }
    return { status: res.status, json, headers: res.headers }
  }
  const upload = async (version: string, image: Buffer) => {
    const r = await fetch(`${s.httpUrl}/api/admin/firmware/${MODEL}/${version}`, {
      method: 'PUT',
      headers: { 'x-api-key': KEY },
      body: image,
    })
    assert.equal(r.status, 201, await r.text())
  }
  /** A device registered through the admin API, with a pull token. */
  const tokenDevice = async (id: string) => {
    assert.equal(
      (await api('PUT', `/api/admin/devices/${id}`, { device_model: MODEL })).status,
      200,
    )
    const created = await api('POST', `/api/admin/devices/${id}/pull-token`)
    assert.equal(created.status, 201, JSON.stringify(created.json))
    const url = new URL(created.json.update_url as string)
    return { id, token: created.json.token as string, path: `${url.pathname}${url.search}` }
  }
  const device = async (id: string) =>
    (
      await db.query(
        `SELECT device_model, mac_address, current_firmware_version, metadata->>'protocol' AS protocol FROM devices WHERE device_id = $1`,
        [id],
      )
    ).rows[0] as Json | undefined
  const registeredVia = async (id: string) =>
    (
      await db.query(
        `SELECT metadata->>'registered_via' AS via FROM devices WHERE device_id = $1`,
        [id],
      )
    ).rows[0]?.via as string | null | undefined
  const row = async (rolloutId: unknown, deviceId: string) =>
    (
      await db.query<{ state: string; verified: boolean; detail: string | null }>(
        'SELECT state, verified, detail FROM rollout_devices WHERE rollout_id = $1 AND device_id = $2',
        [rolloutId, deviceId],
      )
    ).rows[0]
  const rollout = async (id: unknown) =>
    (await api('GET', `/api/admin/rollouts/${String(id)}`)).json.rollout as {
      status: string
      status_reason: string | null
      stage_index: number
      counts: Record<string, number>
      unverified_counts: Record<string, number>
    }
  const check = (
    id: string,
    current: string,
    o: { model?: string; prefix?: string; headers?: Record<string, string>; token?: string } = {},
  ) =>
    fetch(
      `${s.httpUrl}${o.prefix ?? ''}/api/firmware/check?device_id=${encodeURIComponent(id)}&device_model=${o.model ?? MODEL}&current_version=${current}${o.token ? `&token=${o.token}` : ''}`,
      { headers: o.headers ?? {} },
    )
  /** One request to the running app in process, as if it came from `address` (real sockets here are all 127.0.0.1). */
  const from = async (address: string, path: string): Promise<Response> =>
    s.app.http.app.request(
      `http://paku${path}`,
      {},
      { incoming: { socket: { remoteAddress: address } } },
    )
  return { ...s, db, api, upload, tokenDevice, device, registeredVia, row, rollout, check, from }
}

/** Device ids whose consistent-hash bucket is in [lo, hi). */
function idsInBuckets(prefix: string, lo: number, hi: number, n: number): string[] {
  const out: string[] = []
  for (let i = 0; out.length < n; i++)
    if (hashBucket(`${prefix}${i}`) >= lo && hashBucket(`${prefix}${i}`) < hi)
      out.push(`${prefix}${i}`)
  return out
}

const message = async (res: Response) => ((await res.json()) as { message: string }).message

describe('OTA pull requests prove which device they are', () => {
  it('a device known over MQTT or through the admin API: check and update without its token get 403 and change nothing; rollouts still push to it', async (t) => {
    const s = await setup(t)
    await s.upload('1.5.0', espImage({ size: 4000 }))
    const mqttDevice = new PushDevice({
      mqttUrl: s.mqttUrl,
      id: 'ESP32-0000AA000001',
      model: MODEL,
      version: '1.4.2',
    })
    await mqttDevice.connect()
    defer(t, () => mqttDevice.disconnect())
    await eventually(
      async () => (await s.device(mqttDevice.id))?.current_firmware_version === '1.4.2',
      { what: 'MQTT device registered' },
    )
    assert.equal(
      (await s.api('PUT', '/api/admin/devices/ADMIN-DEV-1', { device_model: MODEL })).status,
      200,
    )
    const before = { mqtt: await s.device(mqttDevice.id), admin: await s.device('ADMIN-DEV-1') }
    assert.deepEqual(before.mqtt, {
      device_model: MODEL,
      mac_address: null,
      current_firmware_version: '1.4.2',
      protocol: null,
    })
    assert.deepEqual(before.admin, {
      device_model: MODEL,
      mac_address: null,
      current_firmware_version: null,
      protocol: null,
    })

    for (const id of [mqttDevice.id, 'ADMIN-DEV-1']) {
      for (const prefix of ['', '/ota']) {
        const checked = await s.check(id, '9.9.9', { model: OTHER_MODEL, prefix })
        assert.equal(checked.status, 403, `check ${prefix} ${id}`)
        assert.match(
          await message(checked),
          new RegExp(
            `device ${id} is managed over MQTT or by an admin; pull requests for it need its pull token \\(POST /api/admin/devices/${id}/pull-token\\)`,
          ),
        )
        const pulled = await httpUpdateRequest(
          s.httpUrl,
          `${prefix}/api/firmware/update?device_model=${OTHER_MODEL}&device_id=${id}`,
          { mac: 'DE:AD:BE:EF:00:01', image: espImage({ size: 3000 }), version: '9.9.9' },
        )
        assert.equal(pulled.status, 403, `update ${prefix} ${id}`)
        assert.match(
          JSON.parse(pulled.body.toString()).message as string,
          /is managed over MQTT or by an admin/,
        )
      }
    }
    assert.deepEqual(
      { mqtt: await s.device(mqttDevice.id), admin: await s.device('ADMIN-DEV-1') },
      before,
      'model, MAC, version and protocol unchanged',
    )
    assert.equal(
      (
        await s.db.query(
          `SELECT count(*)::int AS n FROM devices WHERE mac_address = 'DE:AD:BE:EF:00:01'`,
        )
      ).rows[0].n,
      0,
    )

    // Positive control: the same routes do register a device nobody knows.
    assert.equal((await s.check('ESP32-FRESH-0001', '1.4.2')).status, 200)
    assert.deepEqual(await s.device('ESP32-FRESH-0001'), {
      device_model: MODEL,
      mac_address: null,
      current_firmware_version: '1.4.2',
      protocol: 'http',
    })
    assert.deepEqual(
      [
        await s.registeredVia('ESP32-FRESH-0001'),
        await s.registeredVia('ADMIN-DEV-1'),
        await s.registeredVia(mqttDevice.id),
      ],
      ['http', 'admin', null],
    )

    // A rollout still pushes cmd/ota to both: neither was turned into an HTTP (pull) device.
    const created = await s.api('POST', '/api/admin/rollouts', {
      name: 'push',
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'all',
    })
    assert.equal(created.status, 200, JSON.stringify(created.json))
    await eventually(async () => mqttDevice.commands.length === 1, {
      timeoutMs: 10_000,
      what: 'cmd/ota reached the MQTT device',
    })
    await eventually(async () => mqttDevice.version === '1.5.0', {
      timeoutMs: 10_000,
      what: 'MQTT device updated',
    })
    await eventually(
      async () => (await s.row(created.json.id, 'ADMIN-DEV-1'))?.state === 'notified',
      { what: 'cmd/ota sent to the admin-registered device' },
    )
    // The HTTP-registered one is a pull device: offered on its next check, never pushed.
    assert.equal((await s.row(created.json.id, 'ESP32-FRESH-0001'))?.state, 'pending')
  })

  it('a device id an unauthenticated check registered first still gets the push once the real device is heard over MQTT', async (t) => {
    const s = await setup(t)
    await s.upload('1.5.0', espImage({ size: 4000 }))
    // Someone claims the id over HTTP before the device's first MQTT status.
    assert.equal((await s.check('ESP32-0000AA0000F1', '1.4.2')).status, 200)
    assert.equal((await s.device('ESP32-0000AA0000F1'))?.protocol, 'http')
    const real = new PushDevice({
      mqttUrl: s.mqttUrl,
      id: 'ESP32-0000AA0000F1',
      model: MODEL,
      version: '1.4.2',
    })
    await real.connect()
    defer(t, () => real.disconnect())
    await eventually(
      async () =>
        (await s.db.query(`SELECT site_id FROM devices WHERE device_id = 'ESP32-0000AA0000F1'`))
          .rows[0]?.site_id === 'paku',
      { what: 'the device heard over MQTT' },
    )
    const created = await s.api('POST', '/api/admin/rollouts', {
      name: 'push-after-claim',
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'all',
    })
    assert.equal(created.status, 200, JSON.stringify(created.json))
    await eventually(async () => real.commands.length === 1, {
      timeoutMs: 10_000,
      what: 'cmd/ota pushed to the device',
    })
  })

  it('a device registered by a pull is refreshed only from its own MAC; a check changes nothing of a known device', async (t) => {
    const s = await setup(t)
    const path = `/api/firmware/update?device_model=${MODEL}`
    const mac = '24:A1:60:00:11:22'
    assert.equal(
      (await httpUpdateRequest(s.httpUrl, path, { mac, image: undefined, version: '1.4.2' }))
        .status,
      304,
    )
    const id = 'ESP32-24A160001122'
    assert.deepEqual(await s.device(id), {
      device_model: MODEL,
      mac_address: mac,
      current_firmware_version: '1.4.2',
      protocol: 'http',
    })
    // Its own MAC: refreshed.
    assert.equal(
      (await httpUpdateRequest(s.httpUrl, path, { mac, image: undefined, version: '1.4.3' }))
        .status,
      304,
    )
    assert.equal((await s.device(id))?.current_firmware_version, '1.4.3')
    // Another MAC naming it: refused, unchanged.
    const other = await httpUpdateRequest(s.httpUrl, `${path}&device_id=${id}`, {
      mac: '24:A1:60:00:99:99',
      image: undefined,
      version: '0.0.1',
    })
    assert.equal(other.status, 403)
    assert.match(JSON.parse(other.body.toString()).message as string, /MAC does not match/)
    assert.equal((await s.device(id))?.current_firmware_version, '1.4.3')
    assert.equal((await s.device(id))?.mac_address, mac)
    // A check names no MAC: answered, but the device row stays as it was.
    const checked = await s.check(id, '0.0.2', { model: OTHER_MODEL })
    assert.equal(checked.status, 200)
    assert.deepEqual(Object.keys((await checked.json()) as Json), [
      'update_available',
      'current_version',
      'latest_version',
      'download_url',
      'file_size',
      'checksum_sha256',
      'release_notes',
    ])
    assert.deepEqual(await s.device(id), {
      device_model: MODEL,
      mac_address: mac,
      current_firmware_version: '1.4.3',
      protocol: 'http',
    })
    assert.equal(await s.registeredVia(id), 'http')
  })

  it('three made-up MACs failing an update do not pause a fleet rollout and show as unverified; three token-authenticated failures do pause it', async (t) => {
    const s = await setup(t)
    const old = espImage({ size: 3000, version: '1.4.2' })
    await s.upload('1.4.2', old)
    await s.upload('1.5.0', espImage({ size: 5000, version: '1.5.0' }))
    // The rest of the fleet: a device that has its command and has not answered yet keeps the rollout open.
    assert.equal(
      (await s.api('PUT', '/api/admin/devices/FLEET-QUIET', { device_model: MODEL })).status,
      200,
    )
    const created = await s.api('POST', '/api/admin/rollouts', {
      name: 'fleet',
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'all',
    })
    const id = created.json.id
    await eventually(async () => (await s.row(id, 'FLEET-QUIET'))?.state === 'notified', {
      what: 'the quiet device notified',
    })
    const path = `/api/firmware/update?device_model=${MODEL}`
    const fakes = ['02:00:00:00:00:01', '02:00:00:00:00:02', '02:00:00:00:00:03']
    for (const mac of fakes) {
      assert.equal(
        (await httpUpdateRequest(s.httpUrl, path, { mac, image: old })).status,
        200,
        'served the image',
      )
      const again = await httpUpdateRequest(s.httpUrl, path, { mac, image: old })
      assert.equal(again.status, 304)
      assert.match(again.headers['x-paku-reason'] ?? '', /still runs 1.4.2/)
    }
    await s.app.ota.tick()
    const after = await s.rollout(id)
    assert.equal(after.status, 'running', `not paused: ${after.status_reason}`)
    assert.equal(after.counts.failed, 0)
    assert.equal(after.unverified_counts.failed, 3)
    const listed = (await s.api('GET', `/api/admin/rollouts/${String(id)}/devices`)).json
      .devices as Array<{ device_id: string; state: string; verified: boolean }>
    assert.deepEqual(
      listed.map((d) => [d.device_id, d.state, d.verified]),
      [
        ...fakes.map((m) => [`ESP32-${m.replace(/:/g, '')}`, 'failed', false]),
        ['FLEET-QUIET', 'notified', true],
      ],
    )
    const events = (
      await s.db.query(
        `SELECT event_data->>'verified' AS verified FROM ota_events WHERE event_type = 'update_failed' AND rollout_id = $1`,
        [id],
      )
    ).rows
    assert.deepEqual(
      events,
      fakes.map(() => ({ verified: 'false' })),
    )
    // No update loop for them either: still 304 after failing.
    assert.equal(
      (await httpUpdateRequest(s.httpUrl, path, { mac: fakes[0] as string, image: old })).status,
      304,
    )

    // Positive control: the same failures from devices that prove themselves with their tokens pause it.
    for (const n of [1, 2, 3]) {
      const d = await s.tokenDevice(`PULL-DEV-${n}`)
      const mac = `02:00:00:00:01:0${n}`
      assert.equal(
        (await httpUpdateRequest(s.httpUrl, d.path, { mac, image: old })).status,
        200,
        `${d.id} served`,
      )
      assert.equal((await httpUpdateRequest(s.httpUrl, d.path, { mac, image: old })).status, 304)
      assert.equal((await s.row(id, d.id))?.verified, true)
    }
    await eventually(async () => (await s.rollout(id)).status === 'paused', {
      what: 'paused by verified failures',
    })
    const paused = await s.rollout(id)
    assert.match(paused.status_reason ?? '', /error threshold: 3 of 3 updates failed/)
    assert.equal(paused.counts.failed, 3)
    assert.equal(paused.unverified_counts.failed, 3)
  })

  it('an unauthenticated claim of the target version is no success and does not widen a staged rollout; the same claim with the pull token is and does', async (t) => {
    const s = await setup(t)
    const next = espImage({ size: 5000, version: '1.5.0' })
    await s.upload('1.5.0', next)
    const [verifiedId, ...attackIds] = idsInBuckets('pull-stage-', 0, 10, 4) as [
      string,
      string,
      string,
      string,
    ]
    const v = await s.tokenDevice(verifiedId)
    // Half the stage updated would be enough to widen it.
    const created = await s.api('POST', '/api/admin/rollouts', {
      name: 'staged',
      firmware_version: '1.5.0',
      device_model: MODEL,
      target_type: 'all',
      stages: [10, 100],
      auto_advance: true,
      success_threshold_percent: 50,
    })
    const id = created.json.id
    await eventually(async () => (await s.row(id, verifiedId))?.state === 'notified', {
      what: 'the stage-0 device taken in',
    })

    const [a, b, c] = attackIds
    // New devices in the stage claiming the target: by version on /check, by sketch hash on /update.
    const claimed = (await (await s.check(a, '1.5.0')).json()) as Json
    assert.equal(claimed.update_available, false)
    assert.equal(
      (
        await httpUpdateRequest(
          s.httpUrl,
          `/api/firmware/update?device_model=${MODEL}&device_id=${b}`,
          { mac: '02:00:00:00:02:01', image: next },
        )
      ).status,
      304,
    )
    // And the stage's real device without its token: refused.
    assert.equal((await s.check(verifiedId, '1.5.0')).status, 403)
    assert.equal(
      (
        await httpUpdateRequest(
          s.httpUrl,
          `/api/firmware/update?device_model=${MODEL}&device_id=${verifiedId}`,
          { mac: '02:00:00:00:02:02', image: next },
        )
      ).status,
      403,
    )
    await s.app.ota.tick()
    const held = await s.rollout(id)
    assert.equal(held.stage_index, 0, 'still the first stage')
    assert.equal(held.counts.succeeded, 0)
    assert.equal(held.unverified_counts.succeeded, 2)

    // One offered the update first, then claiming to run it: its row ends, unverified.
    assert.equal(((await (await s.check(c, '1.4.2')).json()) as Json).update_available, true)
    assert.equal(((await (await s.check(c, '1.5.0')).json()) as Json).update_available, false)
    await s.app.ota.tick()
    for (const d of attackIds) {
      const r = await s.row(id, d)
      assert.deepEqual([r?.state, r?.verified], ['succeeded', false], d)
    }
    const still = await s.rollout(id)
    assert.deepEqual(
      [still.stage_index, still.counts.succeeded, still.unverified_counts.succeeded],
      [0, 0, 3],
    )
    assert.equal((await s.row(id, verifiedId))?.state, 'notified')
    const metrics = await (await fetch(`${s.httpUrl}/metrics`)).text()
    assert.match(metrics, /^paku_ota_updates_succeeded_total 0$/m)
    assert.match(
      metrics,
      /^paku_ota_updates_unverified_total 1$/m,
      'the one that was offered the update first',
    )

    // Positive control: the stage's device with its token checks in with the new image.
    const proved = await httpUpdateRequest(s.httpUrl, v.path, {
      mac: '02:00:00:00:02:03',
      image: next,
    })
    assert.equal(proved.status, 304)
    assert.match(proved.headers['x-paku-reason'] ?? '', /up to date/)
    assert.deepEqual(await s.row(id, verifiedId), {
      state: 'succeeded',
      verified: true,
      detail: 'checked in with the new image',
    })
    await eventually(async () => (await s.rollout(id)).stage_index === 1, {
      what: 'widened to the next stage',
    })
    assert.equal((await s.rollout(id)).counts.succeeded, 1)
    const completed = (
      await s.db.query(
        `SELECT event_data FROM ota_events WHERE event_type = 'update_completed' AND device_id = $1`,
        [verifiedId],
      )
    ).rows
    assert.deepEqual(completed, [{ event_data: { reason: 'checked in with the new image' } }])
  })

  it('pull tokens: shown once and stored hashed, bound to their device, replaced, revoked; a wrong one is 401; a valid one may move its MAC and version', async (t) => {
    const s = await setup(t)
    assert.equal(
      (await s.api('PUT', '/api/admin/devices/PULL-A', { device_model: MODEL })).status,
      200,
    )
    assert.equal(
      (await s.api('PUT', '/api/admin/devices/PULL-B', { device_model: MODEL })).status,
      200,
    )
    assert.equal((await s.api('POST', '/api/admin/devices/PULL-NOBODY/pull-token')).status, 404)
    assert.equal(
      (await s.api('POST', '/api/admin/devices/PULL-A/pull-token', undefined, {})).status,
      401,
      'admin routes need the key',
    )

    const created = await s.api('POST', '/api/admin/devices/PULL-A/pull-token')
    assert.equal(created.status, 201)
    const token = created.json.token as string
    assert.match(token, /^pkd_[A-Za-z0-9_-]{43}$/)
    assert.deepEqual(created.json, {
      device_id: 'PULL-A',
      token,
      update_url: `${s.httpUrl}/api/firmware/update?device_model=${MODEL}&device_id=PULL-A&token=${token}`,
    })
    const stored = (
      await s.db.query(
        `SELECT device_id, token_sha256, last_used_at, row_to_json(t)::text AS whole FROM device_pull_tokens t`,
      )
    ).rows
    assert.equal(stored.length, 1)
    assert.equal(stored[0].token_sha256, sha256(token))
    assert.equal(stored[0].last_used_at, null)
    assert.ok(!(stored[0].whole as string).includes(token), 'only the hash is stored')
    const shown = await s.api('GET', '/api/admin/devices/PULL-A')
    assert.ok(!JSON.stringify(shown.json).includes(token), 'never shown again')
    assert.equal((shown.json.device as { pull_token: Json }).pull_token.last_used_at, null)

    // With the token the request is PULL-A, whatever MAC it has; MAC and version follow it.
    const path = new URL(created.json.update_url as string)
    const viaUrl = `${path.pathname}${path.search}`
    assert.equal(
      (
        await httpUpdateRequest(s.httpUrl, viaUrl, {
          mac: '02:00:00:00:03:01',
          image: undefined,
          version: '1.4.2',
        })
      ).status,
      304,
    )
    assert.deepEqual(await s.device('PULL-A'), {
      device_model: MODEL,
      mac_address: '02:00:00:00:03:01',
      current_firmware_version: '1.4.2',
      protocol: 'http',
    })
    assert.equal(
      (
        await httpUpdateRequest(s.httpUrl, viaUrl, {
          mac: '02:00:00:00:03:02',
          image: undefined,
          version: '1.4.3',
        })
      ).status,
      304,
    )
    assert.deepEqual(await s.device('PULL-A'), {
      device_model: MODEL,
      mac_address: '02:00:00:00:03:02',
      current_firmware_version: '1.4.3',
      protocol: 'http',
    })
    const bearer = await s.check('PULL-A', '1.4.4', {
      headers: { authorization: `Bearer ${token}` },
    })
    assert.equal(bearer.status, 200)
    assert.equal((await s.device('PULL-A'))?.current_firmware_version, '1.4.4')
    assert.notEqual(
      (await s.db.query(`SELECT last_used_at FROM device_pull_tokens`)).rows[0].last_used_at,
      null,
      'use recorded',
    )
    // Without it, PULL-A is an admin's device: refused.
    assert.equal((await s.check('PULL-A', '0.0.1')).status, 403)

    // A wrong token: 401 on both routes, with or without a device id.
    const wrong = await httpUpdateRequest(
      s.httpUrl,
      `/api/firmware/update?device_model=${MODEL}&token=pkd_${'x'.repeat(43)}`,
      { mac: '02:00:00:00:03:03', image: undefined },
    )
    assert.equal(wrong.status, 401)
    assert.equal(
      (await s.check('PULL-A', '1.4.5', { headers: { authorization: 'Bearer pkd_nope' } })).status,
      401,
    )
    assert.equal((await s.check('PULL-A', '1.4.5', { token: 'not-even-the-shape' })).status, 401)
    // A's token naming B: 403, and B is untouched.
    const bBefore = await s.device('PULL-B')
    assert.equal((await s.check('PULL-B', '9.9.9', { token })).status, 403)
    const crossed = await httpUpdateRequest(
      s.httpUrl,
      `/api/firmware/update?device_model=${MODEL}&device_id=PULL-B&token=${token}`,
      { mac: '02:00:00:00:03:04', image: undefined, version: '9.9.9' },
    )
    assert.equal(crossed.status, 403)
    assert.deepEqual(await s.device('PULL-B'), bBefore)
    assert.equal((await s.device('PULL-A'))?.current_firmware_version, '1.4.4')

    // Creating again replaces it: the old one is dead.
    const replaced = await s.api('POST', '/api/admin/devices/PULL-A/pull-token')
    assert.equal(replaced.status, 201)
    const token2 = replaced.json.token as string
    assert.notEqual(token2, token)
    assert.equal((await s.check('PULL-A', '1.4.5', { token })).status, 401)
    assert.equal((await s.check('PULL-A', '1.4.5', { token: token2 })).status, 200)
    // Revoked: 204, then 404, and the token is refused.
    assert.equal((await s.api('DELETE', '/api/admin/devices/PULL-A/pull-token')).status, 204)
    assert.equal((await s.api('DELETE', '/api/admin/devices/PULL-A/pull-token')).status, 404)
    assert.equal((await s.check('PULL-A', '1.4.6', { token: token2 })).status, 401)
    assert.equal((await s.device('PULL-A'))?.current_firmware_version, '1.4.5')
    assert.equal(
      (await s.db.query(`SELECT count(*)::int AS n FROM device_pull_tokens`)).rows[0].n,
      0,
    )
  })

  it('an address that keeps sending unknown tokens is refused for a while; others are not', async (t) => {
    const s = await setup(t)
    const guess = (address: string, i: number) =>
      s.from(
        address,
        `/api/firmware/check?device_id=G${i}&device_model=${MODEL}&current_version=1.0.0&token=pkd_guess${i}`,
      )
    for (let i = 0; i < 10; i++)
      assert.equal((await guess('198.51.100.7', i)).status, 401, `guess ${i}`)
    const blocked = await guess('198.51.100.7', 10)
    assert.equal(blocked.status, 429)
    assert.ok(Number(blocked.headers.get('retry-after')) > 0)
    assert.match(
      ((await blocked.json()) as { message: string }).message,
      /too many unknown pull tokens/,
    )
    // Even without a token, from there; from elsewhere all is well.
    assert.equal(
      (
        await s.from(
          '198.51.100.7',
          `/api/firmware/check?device_id=G-plain&device_model=${MODEL}&current_version=1.0.0`,
        )
      ).status,
      429,
    )
    assert.equal(
      (
        await s.from(
          '198.51.100.8',
          `/api/firmware/check?device_id=G-plain&device_model=${MODEL}&current_version=1.0.0`,
        )
      ).status,
      200,
    )
  })
})

describe('OTA device route rate limit', () => {
  it('more than ota.deviceRequestsPerMinute requests from one address get 429 with Retry-After; downloads and other addresses are unaffected', async (t) => {
    const s = await setup(t, { deviceRequestsPerMinute: 5 })
    const image = espImage({ size: 3000 })
    await s.upload('1.5.0', image)
    for (let i = 0; i < 5; i++)
      assert.equal((await s.check(`RL-${i}`, '1.4.2')).status, 200, `request ${i + 1}`)
    const over = await s.check('RL-5', '1.4.2')
    assert.equal(over.status, 429)
    const retry = Number(over.headers.get('retry-after'))
    assert.ok(retry >= 1 && retry <= 60, `Retry-After ${retry}`)
    assert.match(
      await message(over),
      /more than 5 device requests a minute from this address; retry in \d+ s/,
    )
    assert.equal(await s.device('RL-5'), undefined, 'the refused request did nothing')
    // One budget for both routes, with and without the prefix.
    assert.equal((await s.check('RL-6', '1.4.2', { prefix: '/ota' })).status, 429)
    const pulled = await httpUpdateRequest(
      s.httpUrl,
      `/api/firmware/update?device_model=${MODEL}`,
      { mac: '02:00:00:00:04:01', image: undefined },
    )
    assert.equal(pulled.status, 429)
    assert.ok(Number(pulled.headers['retry-after']) >= 1)
    // The download route is not limited.
    const dl = await fetch(`${s.httpUrl}/api/firmware/download/1.5.0?device_model=${MODEL}`)
    assert.equal(dl.status, 200)
    assert.equal(sha256(Buffer.from(await dl.arrayBuffer())), sha256(image))

    // Other addresses have their own budget; an IPv6 /64 is one address, and so are an IPv4 address and its mapped form.
    const ask = (address: string, id: string) =>
      s
        .from(
          address,
          `/api/firmware/check?device_id=${id}&device_model=${MODEL}&current_version=1.4.2`,
        )
        .then((r) => r.status)
    assert.equal(await ask('192.0.2.10', 'RL-v4-0'), 200)
    for (let i = 1; i < 5; i++)
      assert.equal(await ask(i % 2 === 0 ? '192.0.2.10' : '::ffff:192.0.2.10', `RL-v4-${i}`), 200)
    assert.equal(await ask('::ffff:192.0.2.10', 'RL-v4-5'), 429)
    assert.equal(await ask('192.0.2.11', 'RL-v4-6'), 200)
    for (let i = 0; i < 5; i++) assert.equal(await ask(`2001:db8:1:2::${i + 1}`, `RL-v6-${i}`), 200)
    assert.equal(await ask('2001:db8:1:2:ffff::1', 'RL-v6-5'), 429, 'same /64')
    assert.equal(await ask('2001:db8:1:3::1', 'RL-v6-6'), 200, 'next /64')
  })
})
