/**
 * A device's firmware history (GET /api/admin/devices/{id}/ota) and the time of each step of its
 * rollout action, recorded whatever statement moves it (sql/0019_rollout_device_steps.sql): a real
 * paku-core-like device takes an update from command to success.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'
import { createKey } from '../http/index.js'
import { PushDevice } from '../../scripts/test-support/ota-devices.js'
import { espImage } from '../../scripts/test-support/esp-image.js'
import { defer } from '../../scripts/test-helpers.js'

const KEY = 'history-test-admin-key-0123456789-padded-to-32'
const MODEL = 'esp32-heater'

type Step = { state: string; at: string }
type Action = {
  rollout_id: number
  rollout_name: string
  firmware_version: string
  state: string
  steps: Step[]
}

describe("a device's firmware history", () => {
  it('lists its rollout actions with the time of each step, its update reports and its OTA events', async (t) => {
    const databaseUrl = await testDatabase(t)
    const s = await startApp(
      t,
      testConfig({
        databaseUrl,
        http: { adminApiKey: KEY },
        ota: { rolloutTickSeconds: 1, renotifySeconds: 1 },
      }),
    )
    const db = await sqlClient(t, databaseUrl)
    const api = async (method: string, path: string, body?: unknown, key = KEY) => {
      const r = await fetch(`${s.httpUrl}${path}`, {
        method,
        headers: {
          'x-api-key': key,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body:
          body === undefined
            ? undefined
            : Buffer.isBuffer(body)
              ? new Uint8Array(body)
              : JSON.stringify(body),
      })
      return { status: r.status, json: (await r.json()) as Record<string, unknown> }
    }
    const d = new PushDevice({
      mqttUrl: s.mqttUrl,
      id: 'ESP32-HIST01',
      model: MODEL,
      version: '1.0.0',
    })
    await d.connect()
    defer(t, () => d.disconnect())
    await eventually(
      async () => (await db.query('SELECT 1 FROM devices WHERE device_id = $1', [d.id])).rowCount,
      { what: 'the device registered' },
    )
    const empty = await api('GET', `/api/admin/devices/${d.id}/ota`)
    assert.deepEqual([empty.json.actions, empty.json.updates, empty.json.events], [[], [], []])

    assert.equal(
      (
        await api(
          'PUT',
          `/api/admin/firmware/${MODEL}/1.1.0`,
          espImage({ size: 8192, version: '1.1.0' }),
        )
      ).status,
      201,
    )
    const created = await api('POST', '/api/admin/rollouts', {
      name: 'to-1.1.0',
      device_model: MODEL,
      firmware_version: '1.1.0',
      target_type: 'all',
    })
    assert.equal(created.status, 200, JSON.stringify(created.json))
    await eventually(
      async () =>
        (
          await db.query(
            `SELECT 1 FROM rollout_devices WHERE device_id = $1 AND state = 'succeeded'`,
            [d.id],
          )
        ).rowCount,
      { what: 'the update to succeed', timeoutMs: 15_000 },
    )

    const h = await api('GET', `/api/admin/devices/${d.id}/ota`)
    assert.equal(h.status, 200)
    const actions = h.json.actions as Action[]
    assert.equal(actions.length, 1)
    assert.deepEqual(
      [
        actions[0]?.rollout_name,
        actions[0]?.firmware_version,
        actions[0]?.state,
        actions[0]?.rollout_id,
      ],
      ['to-1.1.0', '1.1.0', 'succeeded', created.json.id],
    )
    const steps = actions[0]?.steps ?? []
    assert.deepEqual(
      steps.map((x) => x.state),
      ['pending', 'notified', 'accepted', 'downloading', 'installing', 'installed', 'succeeded'],
    )
    const times = steps.map((x) => Date.parse(x.at))
    assert.ok(
      times.every((x, i) => Number.isFinite(x) && (i === 0 || x >= (times[i - 1] as number))),
      `times in order: ${steps.map((x) => x.at).join(', ')}`,
    )
    assert.equal(
      (h.json.device as { current_firmware_version: string }).current_firmware_version,
      '1.1.0',
    )
    assert.ok(
      (h.json.events as Array<{ event_type: string }>).some(
        (e) => e.event_type === 'update_completed',
      ),
    )
    assert.ok((h.json.updates as unknown[]).length > 0, 'the update reports')
    // The rollout's own device list carries the same steps.
    const listed = await api('GET', `/api/admin/rollouts/${created.json.id}/devices`)
    assert.deepEqual((listed.json.devices as Array<{ steps: Step[] }>)[0]?.steps, steps)

    // A retry appends a new run of steps after the old ones instead of rewriting them.
    await db.query(`UPDATE rollout_devices SET state = 'failed' WHERE device_id = $1`, [d.id])
    await db.query(`UPDATE rollout_devices SET state = 'pending' WHERE device_id = $1`, [d.id])
    const again = (
      (await api('GET', `/api/admin/devices/${d.id}/ota`)).json.actions as Action[]
    )[0]?.steps.map((x) => x.state)
    assert.deepEqual(again?.slice(-3), ['succeeded', 'failed', 'pending'])
  })

  it('refuses an id over 128 characters, a bad limit, no key and a key without read', async (t) => {
    const s = await startApp(
      t,
      testConfig({
        databaseUrl: await testDatabase(t),
        http: { adminApiKey: KEY, maxAuthFailuresPerMinute: 1000 },
      }),
    )
    const ingest = await createKey(s.app.db.db, 'esp', ['ingest'])
    const get = async (path: string, key: string | null) =>
      (await fetch(`${s.httpUrl}${path}`, { headers: key === null ? {} : { 'x-api-key': key } }))
        .status
    assert.equal(await get(`/api/admin/devices/${'x'.repeat(129)}/ota`, KEY), 400)
    assert.equal(await get('/api/admin/devices/x/ota?limit=0', KEY), 400)
    assert.equal(await get('/api/admin/devices/x/ota?limit=abc', KEY), 400)
    assert.equal(await get('/api/admin/devices/x/ota', null), 401)
    assert.equal(await get('/api/admin/devices/x/ota', ingest), 403)
    assert.equal(
      await get(`/api/admin/devices/${encodeURIComponent("x' OR '1'='1")}/ota`, KEY),
      200,
    )
  })
})
