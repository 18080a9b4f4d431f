/**
 * /api/admin/mqtt/clients: what the console's device page shows of a device's MQTT side. Real clients
 * connect to the real broker; a persistent session is followed while its client is away.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import mqtt from 'mqtt'
import {
  defer,
  eventually,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'
import { createKey } from '../http/index.js'

const KEY = 'clients-test-admin-key-0123456789-padded-to-32'
const DEVICE = 'ESP32-CLI01'

type View = {
  client_id: string
  connected: boolean
  connected_at: string | null
  address: string | null
  principal: string | null
  clean: boolean | null
  keepalive_seconds: number | null
  protocol_version: number | null
  subscriptions: Array<{ topic: string; qos: number }>
  session: { persistent: boolean } | null
  queued: { messages: number }
}

describe('the MQTT clients of a device', () => {
  it('shows connections and persistent sessions with their subscriptions, found by client id, login or topic', async (t) => {
    const s = await startApp(
      t,
      testConfig({
        databaseUrl: await testDatabase(t),
        http: { adminApiKey: KEY, maxAuthFailuresPerMinute: 1000 },
      }),
    )
    const get = async (q: string, key: string | null = KEY) => {
      const r = await fetch(`${s.httpUrl}/api/admin/mqtt/clients${q}`, {
        headers: key === null ? {} : { 'x-api-key': key },
      })
      return { status: r.status, json: (await r.json()) as { clients: View[]; message?: string } }
    }
    const before = Date.now()
    const device = await mqtt.connectAsync(s.mqttUrl, {
      clientId: DEVICE,
      clean: false,
      keepalive: 45,
    })
    await device.subscribeAsync(`paku/edge/${DEVICE}/cmd/#`, { qos: 1 })
    const emulator = await mqtt.connectAsync(s.mqttUrl, { clientId: 'paku-emulate-heater-1' })
    defer(t, () => emulator.endAsync())
    await emulator.subscribeAsync('paku/heater/emu77/cmd', { qos: 0 })
    const other = await mqtt.connectAsync(s.mqttUrl, { clientId: 'dashboard' })
    defer(t, () => other.endAsync())
    await other.subscribeAsync('paku/#', { qos: 0 })

    const mine = (await get(`?device_id=${DEVICE}`)).json.clients
    assert.deepEqual(
      mine.map((c) => c.client_id),
      [DEVICE],
      'only its own client, not one that subscribes to everything',
    )
    const c = mine[0] as View
    assert.equal(c.connected, true)
    assert.ok(Date.parse(c.connected_at ?? '') >= before - 1000)
    assert.match(c.address ?? '', /127\.0\.0\.1$/)
    assert.equal(c.principal, 'anonymous')
    assert.equal(c.clean, false)
    assert.equal(c.keepalive_seconds, 45)
    assert.equal(c.protocol_version, 4)
    assert.deepEqual(c.subscriptions, [{ topic: `paku/edge/${DEVICE}/cmd/#`, qos: 1 }])
    assert.equal(c.session?.persistent, true)
    assert.deepEqual(
      (await get('?device_id=emu77')).json.clients.map((x) => x.client_id),
      ['paku-emulate-heater-1'],
      'found by the topic it subscribes to',
    )
    assert.deepEqual(
      (await get('?client_id=dashboard')).json.clients.map((x) => x.subscriptions),
      [[{ topic: 'paku/#', qos: 0 }]],
    )
    assert.equal((await get('')).json.clients.length, 3)

    // Away: its persistent session, its subscriptions and what is queued for it, from the database.
    await device.endAsync()
    await other.publishAsync(`paku/edge/${DEVICE}/cmd/ota`, '{"url":"x"}', { qos: 1 })
    const away = await eventually(
      async () => {
        const v = (await get(`?device_id=${DEVICE}`)).json.clients[0]
        return v && !v.connected && v.subscriptions.length === 1 && v.queued.messages === 1
          ? v
          : undefined
      },
      { what: 'the session of the away client' },
    )
    assert.deepEqual(
      [away.session?.persistent, away.subscriptions],
      [true, [{ topic: `paku/edge/${DEVICE}/cmd/#`, qos: 1 }]],
    )
  })

  it('refuses bad filters, no key and a key without read', async (t) => {
    const s = await startApp(
      t,
      testConfig({
        databaseUrl: await testDatabase(t),
        http: { adminApiKey: KEY, maxAuthFailuresPerMinute: 1000 },
      }),
    )
    const ingest = await createKey(s.app.db.db, 'esp', ['ingest'])
    const reader = await createKey(s.app.db.db, 'reader', ['read'])
    const cases: Array<[string, string | null, number]> = [
      ['', null, 401],
      ['', ingest, 403],
      ['?device_id=a/b', KEY, 400],
      ['?device_id=%23', KEY, 400],
      [`?device_id=${'x'.repeat(129)}`, KEY, 400],
      [`?client_id=${'x'.repeat(257)}`, KEY, 400],
      ['?limit=0', KEY, 400],
      ['?limit=99999', KEY, 400],
      ['?sort=x', KEY, 400],
      ["?device_id=x'%20OR%20'1'='1", reader, 200],
    ]
    for (const [q, key, want] of cases) {
      const r = await fetch(`${s.httpUrl}/api/admin/mqtt/clients${q}`, {
        headers: key === null ? {} : { 'x-api-key': key },
      })
      assert.equal(r.status, want, q)
      if (want === 200) assert.deepEqual(((await r.json()) as { clients: unknown[] }).clients, [])
    }
  })
})
