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

const KEY = 'commands-test-key-0123456789-padded-to-32-characters'
const DEV = 'ESP32-C0FFEE01'

async function setup(t: TestContext) {
  const databaseUrl = await testDatabase(t)
  const s = await startApp(
    t,
    testConfig({ databaseUrl, http: { adminApiKey: KEY, maxAuthFailuresPerMinute: 1000 } }),
  )
  const db = await sqlClient(t, databaseUrl)
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${s.httpUrl}${path}`, {
      method,
      headers: { 'x-api-key': KEY, 'content-type': 'application/json' },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    })
    const text = await res.text()
    return { status: res.status, json: JSON.parse(text) as Record<string, unknown>, text }
  }
  // A paku-core-like device: registers with a status, listens to what is sent to it.
  const device = await mqtt.connectAsync(s.mqttUrl, { clientId: DEV, clean: true })
  defer(t, () => device.endAsync())
  const received: Array<{ topic: string; payload: Record<string, unknown>; retain: boolean }> = []
  device.on('message', (topic, payload, packet) =>
    received.push({
      topic,
      payload: JSON.parse(payload.toString()) as Record<string, unknown>,
      retain: packet.retain,
    }),
  )
  await device.subscribeAsync(
    [`paku/edge/${DEV}/control`, `paku/edge/${DEV}/config/set`, 'paku/heater/emu01/cmd'],
    { qos: 1 },
  )
  await device.publishAsync(
    `paku/edge/${DEV}/status`,
    JSON.stringify({
      online: true,
      device_model: 'esp32-heater',
      firmware_version: '1.4.2',
      active_scenario: 'default',
    }),
    { qos: 1, retain: true },
  )
  await device.publishAsync(
    'paku/heater/emu01/data',
    JSON.stringify({ device_id: 'heater_emu01', metrics: { heater_state: 'Off' } }),
    { qos: 1 },
  )
  await eventually(
    async () => (await db.query('SELECT 1 FROM devices WHERE device_id = $1', [DEV])).rowCount,
  )
  const status = async (id: unknown) =>
    eventually(
      async () => {
        const r = await call('GET', `/api/v1/commands/${id}`)
        return (r.json.command as Record<string, unknown>).status !== 'pending'
          ? (r.json.command as Record<string, unknown>)
          : undefined
      },
      { what: `command ${id} closed` },
    )
  return { ...s, db, call, device, received, status }
}

describe('device commands', () => {
  it('publishes a control command and closes it when the status shows the scenario', async (t) => {
    const s = await setup(t)
    const r = await s.call('POST', '/api/v1/commands', {
      device_id: DEV,
      type: 'control',
      scenario: 'heater_active',
    })
    assert.equal(r.status, 202, r.text)
    const c = r.json.command as Record<string, unknown>
    assert.match(String(c.id), /^cmd_/)
    assert.equal(c.status, 'pending')
    assert.equal(c.topic, `paku/edge/${DEV}/control`)
    const msg = await eventually(async () => s.received.find((m) => m.topic.endsWith('/control')))
    assert.deepEqual(msg.payload, { scenario: 'heater_active', command_id: c.id })
    assert.equal(msg.retain, false)
    // A status that does not show the scenario yet leaves it pending.
    await s.device.publishAsync(
      `paku/edge/${DEV}/status`,
      JSON.stringify({ online: true, active_scenario: 'default', uptime_seconds: 1 }),
      { qos: 1 },
    )
    assert.equal(
      ((await s.call('GET', `/api/v1/commands/${c.id}`)).json.command as Record<string, unknown>)
        .status,
      'pending',
    )
    await s.device.publishAsync(
      `paku/edge/${DEV}/status`,
      JSON.stringify({ online: true, active_scenario: 'heater_active' }),
      { qos: 1 },
    )
    const closed = await s.status(c.id)
    assert.equal(closed.status, 'acknowledged')
    assert.equal(closed.closed_by, `paku/edge/${DEV}/status`)
    assert.equal((closed.ack as Record<string, unknown>).active_scenario, 'heater_active')
  })

  it('retains config/set and closes it by the config report; an explicit ack with an error fails a command', async (t) => {
    const s = await setup(t)
    const r = await s.call('POST', '/api/v1/commands', {
      device_id: DEV,
      type: 'config',
      config: { timing: { wake_interval_s: 30 } },
    })
    assert.equal(r.status, 202, r.text)
    const id = (r.json.command as Record<string, unknown>).id
    // Retained: a device that connects later still gets it.
    const late = await mqtt.connectAsync(s.mqttUrl, { clientId: 'late-listener' })
    defer(t, () => late.endAsync())
    const got = new Promise<{ retain: boolean; payload: string }>((resolve) =>
      late.on('message', (_t, p, packet) =>
        resolve({ retain: packet.retain, payload: p.toString() }),
      ),
    )
    await late.subscribeAsync(`paku/edge/${DEV}/config/set`, { qos: 1 })
    const m = await got
    assert.equal(m.retain, true)
    assert.deepEqual(JSON.parse(m.payload), { timing: { wake_interval_s: 30 }, command_id: id })
    await s.device.publishAsync(
      `paku/edge/${DEV}/config/report`,
      JSON.stringify({ version: '1.4.2', timing: { wake_interval_s: 30, timezone: 'UTC' } }),
      { qos: 1, retain: true },
    )
    assert.equal((await s.status(id)).status, 'acknowledged')

    const h = await s.call('POST', '/api/v1/commands', {
      device_id: 'emu01',
      type: 'heater',
      cmd: 'start',
      power: 7,
    })
    assert.equal(h.status, 202, h.text)
    const hid = (h.json.command as Record<string, unknown>).id
    await s.device.publishAsync(
      'paku/heater/emu01/ack',
      JSON.stringify({ command_id: hid, ok: false, error: 'uart offline' }),
      { qos: 1 },
    )
    const failed = await s.status(hid)
    assert.equal(failed.status, 'failed')
    assert.equal(failed.error, 'uart offline')
  })

  it('expires a command nobody acknowledges, and lists commands by device and status', async (t) => {
    const s = await setup(t)
    const r = await s.call('POST', '/api/v1/commands', {
      device_id: DEV,
      type: 'control',
      scenario: 'power_save',
      ttl_seconds: 1,
    })
    const id = (r.json.command as Record<string, unknown>).id
    const expired = await s.status(id)
    assert.equal(expired.status, 'expired')
    assert.equal(expired.closed_by, 'ttl')
    await s.call('POST', '/api/v1/commands', { device_id: 'emu01', type: 'heater', cmd: 'stop' })
    await s.call('POST', '/api/v1/commands', { device_id: 'emu01', type: 'heater', cmd: 'reset' })
    const list = await s.call('GET', '/api/v1/commands?device_id=emu01&status=pending&limit=1')
    assert.equal((list.json.items as unknown[]).length, 1)
    assert.equal(
      ((list.json.items as Array<Record<string, unknown>>)[0] as Record<string, unknown>).payload &&
        true,
      true,
    )
    const next = await s.call(
      'GET',
      `/api/v1/commands?device_id=emu01&status=pending&limit=1&cursor=${list.json.next}`,
    )
    assert.equal((next.json.items as unknown[]).length, 1)
    assert.equal(next.json.next, null)
    assert.equal(
      ((await s.call('GET', '/api/v1/commands?status=expired')).json.items as unknown[]).length,
      1,
    )
  })

  it('answers bad command requests with clear 4xx', async (t) => {
    const s = await setup(t)
    const cases: Array<{ name: string; body: unknown; want: number; match: RegExp }> = [
      { name: 'not JSON', body: '{', want: 400, match: /body must be JSON/ },
      {
        name: 'unknown type',
        body: { device_id: DEV, type: 'reboot' },
        want: 400,
        match: /type must be control, config or heater/,
      },
      {
        name: 'unknown scenario',
        body: { device_id: DEV, type: 'control', scenario: 'party' },
        want: 400,
        match: /scenario must be one of/,
      },
      {
        name: 'config with an unknown section',
        body: { device_id: DEV, type: 'config', config: { wifi: { ssid: 'x' } } },
        want: 400,
        match: /config may only hold/,
      },
      {
        name: 'config not an object',
        body: { device_id: DEV, type: 'config', config: [1] },
        want: 400,
        match: /config must be a JSON object/,
      },
      {
        name: 'config too big for the device',
        body: {
          device_id: DEV,
          type: 'config',
          config: { timing: { timezone: 'x'.repeat(1100) } },
        },
        want: 400,
        match: /1024-byte/,
      },
      {
        name: 'heater power out of range',
        body: { device_id: 'emu01', type: 'heater', cmd: 'start', power: 12 },
        want: 400,
        match: /power must be 0–9/,
      },
      {
        name: 'ttl too long',
        body: { device_id: DEV, type: 'control', scenario: 'default', ttl_seconds: 1e9 },
        want: 400,
        match: /ttl_seconds/,
      },
      {
        name: 'wildcard device',
        body: { device_id: '#', type: 'control', scenario: 'default' },
        want: 400,
        match: /device_id/,
      },
      {
        name: 'extra field',
        body: { device_id: DEV, type: 'control', scenario: 'default', retain: true },
        want: 400,
        match: /retain/,
      },
      {
        name: 'unknown device',
        body: { device_id: 'ESP32-NEVERSEEN', type: 'control', scenario: 'default' },
        want: 404,
        match: /no device ESP32-NEVERSEEN/,
      },
    ]
    for (const c of cases) {
      const r = await s.call('POST', '/api/v1/commands', c.body)
      assert.equal(r.status, c.want, `${c.name}: ${r.text}`)
      assert.equal(r.json.status, c.want)
      assert.match(String(r.json.message), c.match, c.name)
    }
    assert.equal((await s.call('GET', '/api/v1/commands/cmd_doesnotexist')).status, 404)
    assert.equal((await s.call('GET', '/api/v1/commands?status=done')).status, 400)
    assert.equal((await s.call('GET', '/api/v1/commands?limit=5000')).status, 400)
    assert.equal((await s.call('GET', '/api/v1/commands?cursor=zzz')).status, 400)
    assert.equal((await s.db.query('SELECT count(*)::int AS n FROM device_commands')).rows[0].n, 0)
  })
})
