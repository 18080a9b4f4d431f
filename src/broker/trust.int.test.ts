/**
 * Attacks on the broker by a holder of one device's credential (or of the shared one read out of a
 * firmware image, or of none), each against a running paku with real MQTT clients.
 */
import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { WebSocket } from 'ws'
import {
  defer,
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'
import type { ConfigInput } from '../config/index.js'
import { createLogger } from '../log/index.js'
import { addCredential } from './credentials.js'

const A = 'ESP32-AAAAAAAA'
const B = 'ESP32-BBBBBBBB'
const KEY = 'trust-test-admin-key-0123456789abcdef'
const cred = (username: string) => ({ username, password: `${username}-pass` })

type Fleet = Awaited<ReturnType<typeof fleet>>

/** paku with anonymous MQTT off, the shared credential `edge`, devices A and B, the HA bridge and a CI service with their own credentials. */
async function fleet(
  t: TestContext,
  mqttConfig: NonNullable<ConfigInput['mqtt']> = {},
  o: { now?: () => number; url?: string } = {},
) {
  const url = o.url ?? (await testDatabase(t))
  const lines: string[] = []
  const log = createLogger({ level: 'info', format: 'json', write: (l) => lines.push(l) })
  const config = testConfig({
    databaseUrl: url,
    http: { adminApiKey: KEY },
    mqtt: {
      allowAnonymous: false,
      sharedCredential: { username: 'edge', password: 'shared-secret' },
      ...mqttConfig,
    },
  })
  const sut = await startApp(t, config, { log, ...(o.now ? { now: o.now } : {}) })
  for (const [name, role] of [
    [A, 'device'],
    [B, 'device'],
    ['ha-bridge', 'bridge'],
    ['ci', 'service'],
  ] as const) {
    await addCredential(sut.app.db.db, { username: name, password: cred(name).password, role })
  }
  const db = await sqlClient(t, url)
  const clients: MqttClient[] = []
  defer(t, () => Promise.all(clients.map((c) => c.endAsync(true))))
  /** A connected client (closed after the test). */
  const connect = async (opts: IClientOptions) => {
    const c = await mqtt.connectAsync(sut.mqttUrl, {
      reconnectPeriod: 0,
      connectTimeout: 5000,
      ...opts,
    })
    clients.push(c)
    return c
  }
  type Health = {
    broker: {
      refusedClientIds: number
      refusedOrigins: number
      expiredSessions: number
      quotaRefusals: Record<string, number>
      state: { retainedBytes: number; queuedBytes: number; persistentSessions: number }
    }
  }
  const health = async () => (await (await fetch(`${sut.httpUrl}/health`)).json()) as Health
  const api = (method: string, path: string, body?: unknown) =>
    fetch(`${sut.httpUrl}${path}`, {
      method,
      headers: { 'x-api-key': KEY, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
  return { ...sut, url, db, lines, connect, health, api }
}

/** 'connected', or the refusal's message. */
async function attempt(f: Fleet, opts: IClientOptions): Promise<string> {
  try {
    const c = await f.connect(opts)
    return c.connected ? 'connected' : 'closed'
  } catch (err) {
    return (err as Error).message
  }
}

/** The SUBACK return codes (0–2 granted, 128 refused). */
async function suback(c: MqttClient, topics: string[], qos: 0 | 1 = 0): Promise<number[]> {
  return c.subscribeAsync(topics, { qos }).then(
    (g) => g.map((x) => x.qos),
    (err: { packet?: { granted?: number[] } }) => err.packet?.granted ?? [],
  )
}

/** Publishes and waits for the server to close the connection (MQTT 3.1.1's answer to a refused PUBLISH). */
async function refused(
  c: MqttClient,
  topic: string,
  payload: string | Buffer,
  opts: { qos?: 0 | 1; retain?: boolean } = {},
): Promise<void> {
  const closed = new Promise<void>((resolve) => c.once('close', () => resolve()))
  c.publish(topic, payload, { qos: opts.qos ?? 1, retain: opts.retain ?? false })
  await closed
}

/** Collects the messages a client receives. */
function inbox(c: MqttClient): Array<{ topic: string; payload: string }> {
  const got: Array<{ topic: string; payload: string }> = []
  c.on('message', (topic, payload) => got.push({ topic, payload: payload.toString() }))
  return got
}

const data = (id: string, v = 1) => JSON.stringify({ device_id: id, metrics: { temperature_c: v } })

describe('identity: a client id belongs to one login', () => {
  it("a device cannot take the HA bridge's client id, nor receive the bridge's queued messages", async (t) => {
    const f = await fleet(t)
    const bridge = await f.connect({ ...cred('ha-bridge'), clientId: 'ha-bridge', clean: false })
    await bridge.subscribeAsync('paku/#', { qos: 1 })
    await bridge.endAsync()
    const ci = await f.connect({ ...cred('ci'), clientId: 'ci-1' })
    await ci.publishAsync(`paku/edge/${B}/cmd/ota`, '{"url":"http://x/fw.bin"}', { qos: 1 })
    await eventually(async () => f.app.broker.queueOf('ha-bridge').messages === 1, {
      what: 'the command queued for the bridge',
    })

    assert.match(
      await attempt(f, { ...cred(A), clientId: 'ha-bridge', clean: false }),
      /Identifier rejected/,
    )
    assert.match(
      await attempt(f, { ...cred('ci'), clientId: 'ha-bridge', clean: false }),
      /Identifier rejected/,
      'another full-rights login neither',
    )
    assert.match(
      await attempt(f, { ...cred(A), clientId: 'ha-bridge', clean: true }),
      /Identifier rejected/,
      'nor wipe it with a clean session',
    )
    assert.equal(f.app.broker.queueOf('ha-bridge').messages, 1, 'the queued command is still there')
    // Positive control: the bridge itself resumes its session and gets the command.
    const back = await f.connect({ ...cred('ha-bridge'), clientId: 'ha-bridge', clean: false })
    const got = inbox(back)
    await eventually(async () => got.some((m) => m.topic === `paku/edge/${B}/cmd/ota`), {
      what: 'the bridge receiving its queued command',
    })
    assert.ok((await f.health()).broker.refusedClientIds >= 3)
  })

  it("a device cannot use another device's client id: the other stays connected", async (t) => {
    const f = await fleet(t)
    const b = await f.connect({ ...cred(B), clientId: B })
    let closes = 0
    b.on('close', () => closes++)
    for (let i = 0; i < 3; i++)
      assert.match(await attempt(f, { ...cred(A), clientId: B }), /Identifier rejected/)
    assert.match(await attempt(f, { ...cred(A) }), /Identifier rejected/, 'nor a random client id')
    const got = inbox(b)
    await b.subscribeAsync(`paku/edge/${B}/cmd/#`)
    const ci = await f.connect({ ...cred('ci'), clientId: 'ci-1' })
    await ci.publishAsync(`paku/edge/${B}/cmd/ota`, '{"url":"u"}', { qos: 1 })
    await eventually(async () => got.length === 1, { what: 'B still receiving its commands' })
    assert.equal(closes, 0)
    assert.equal(b.connected, true)
    assert.equal(
      await attempt(f, { ...cred(A), clientId: A }),
      'connected',
      'positive control: A with its own id',
    )
  })

  it('the same login may take its own session over from a second connection', async (t) => {
    const f = await fleet(t)
    const first = await f.connect({ ...cred('ha-bridge'), clientId: 'ha-bridge', clean: false })
    const closed = new Promise<void>((resolve) => first.once('close', () => resolve()))
    assert.equal(
      await attempt(f, { ...cred('ha-bridge'), clientId: 'ha-bridge', clean: false }),
      'connected',
    )
    await closed
  })

  it('delivers queued messages only where the receiver may read them now, whatever the stored session says', async (t) => {
    const f = await fleet(t)
    const a = await f.connect({ ...cred(A), clientId: A, clean: false })
    assert.deepEqual(await suback(a, [`paku/edge/${A}/cmd/#`], 1), [1])
    await a.endAsync()
    await f.app.stop()
    // A subscription to everything in A's stored session, as a session created under other rights (or
    // stored before them) would have: the next start loads it into the broker.
    await f.db.query(
      `INSERT INTO mqtt_subscriptions (client_id, topic, options) VALUES ($1, 'paku/#', '{"qos":1}')`,
      [A],
    )
    const g = await fleet(t, {}, { url: f.url })
    const ci = await g.connect({ ...cred('ci'), clientId: 'ci-1' })
    await ci.publishAsync(`paku/edge/${B}/cmd/ota`, '{"url":"not for A"}', { qos: 1 })
    await ci.publishAsync(`paku/edge/${A}/cmd/ota`, '{"url":"for A"}', { qos: 1 })
    await eventually(async () => g.app.broker.queueOf(A).messages === 2, {
      what: () => `both queued for the stored session (${JSON.stringify(g.app.broker.queueOf(A))})`,
    })
    const back = await g.connect({ ...cred(A), clientId: A, clean: false })
    const got = inbox(back)
    await eventually(async () => got.length >= 1 && g.app.broker.queueOf(A).messages === 0, {
      what: "A's queue delivered",
    })
    assert.deepEqual([...new Set(got.map((m) => m.payload))], ['{"url":"for A"}'])
  })

  it('does not keep a refused subscription in a persistent session, so nothing is queued for it', async (t) => {
    const f = await fleet(t)
    const a = await f.connect({ ...cred(A), clientId: A, clean: false })
    assert.deepEqual(await suback(a, [`paku/edge/${A}/cmd/#`, 'paku/#'], 1), [1, 128])
    await a.endAsync()
    const stored = async () =>
      (await f.db.query('SELECT topic FROM mqtt_subscriptions WHERE client_id = $1', [A])).rows.map(
        (r) => r.topic,
      )
    await eventually(async () => (await stored()).length > 0, { what: 'the session written' })
    assert.deepEqual(await stored(), [`paku/edge/${A}/cmd/#`])
    const ci = await f.connect({ ...cred('ci'), clientId: 'ci-1' })
    await ci.publishAsync('paku/edge/ESP32-CCCCCCCC/config/report', '{}', { qos: 1 })
    await ci.publishAsync(`paku/edge/${A}/cmd/ota`, '{"url":"u"}', { qos: 1 })
    await eventually(async () => f.app.broker.queueOf(A).messages === 1, {
      what: 'only the own command queued',
    })
  })
})

// Every topic paku-core subscribes to and publishes (as its firmware does, Waveshare screen boards and
// the heater add-on's Home Assistant discovery included).
const FIRMWARE_SUBSCRIBES = (id: string) => [
  'paku/control',
  `paku/edge/${id}/control`,
  `paku/edge/${id}/config/set`,
  `paku/edge/${id}/cmd/ota`,
  `paku/devices/${id}/cmd/wifi`,
  `paku/devices/${id}/cmd/ruuvi`,
  `paku/heater/${id}/cmd`,
  `paku/edge/${id}/cmd/fan`,
  `paku/edge/${id}/cmd/light/1`,
  `paku/edge/${id}/cmd/light/all`,
  'paku/ecoflow/+/power',
  'paku/sensors/+/data',
  'paku/heater/+/data',
]
const FIRMWARE_PUBLISHES = (id: string): Array<[string, string, boolean]> => [
  [
    `paku/edge/${id}/status`,
    JSON.stringify({
      online: true,
      device_id: id,
      firmware_version: '1.4.2',
      device_model: 'lilygo-t-display-s3',
    }),
    true,
  ],
  [
    `paku/edge/${id}/config/report`,
    JSON.stringify({ version: '1.4.2', timing: { wake_interval_s: 60 } }),
    true,
  ],
  [
    `paku/edge/${id}/ota/status`,
    JSON.stringify({ status: 'accepted', current_version: '1.4.2', target_version: '1.5.0' }),
    false,
  ],
  [`paku/edge/${id}/ota/progress`, JSON.stringify({ state: 'Downloading', percent: 10 }), false],
  [
    `paku/edge/${id}/ota/result`,
    JSON.stringify({ success: false, result_code: 2, message: 'Download failed' }),
    false,
  ],
  [`paku/devices/${id}/wifi/status`, '{"ok":true}', false],
  [`paku/devices/${id}/ruuvi/status`, '{"ok":true}', false],
  [`paku/edge/${id}/status/fan`, '{"power":true}', false],
  [`paku/edge/${id}/status/light/1`, '{"state":"ON"}', false],
  [`paku/heater/${id}/state`, '{"state":"Off"}', false],
  [
    `paku/heater/${id}/data`,
    JSON.stringify({ device_id: `heater_${id}`, metrics: { coolant_temp_c: 40 } }),
    false,
  ],
  [
    `homeassistant/sensor/autoterm_${id}/coolant_temp/config`,
    JSON.stringify({
      unique_id: `autoterm_${id}_coolant_temp`,
      state_topic: `paku/heater/${id}/state`,
    }),
    true,
  ],
  [
    `homeassistant/switch/autoterm_${id}/power/config`,
    JSON.stringify({
      state_topic: `paku/heater/${id}/state`,
      command_topic: `paku/heater/${id}/cmd`,
    }),
    true,
  ],
  ['paku/sensors/ruuvi_cabin/data', data('ruuvi_cabin'), false],
  [`paku/sensors/${id}_wired/data`, data(`${id}_wired`), false],
  [
    'paku/fridge/van/data',
    JSON.stringify({ device_id: 'frezzer_van', metrics: { current_temp_c: 4 } }),
    false,
  ],
]

describe('the shared credential in device role', () => {
  it("lets paku-core's real topics through with the shared login, and nothing of another device's", async (t) => {
    const f = await fleet(t, {
      sharedCredential: { username: 'edge', password: 'shared-secret', role: 'device' },
    })
    const id = 'ESP32-CCCCCCCC'
    const device = await f.connect({ username: 'edge', password: 'shared-secret', clientId: id })
    const topics = FIRMWARE_SUBSCRIBES(id)
    assert.deepEqual(
      await suback(device, topics),
      topics.map(() => 0),
    )
    for (const [topic, payload, retain] of FIRMWARE_PUBLISHES(id))
      await device.publishAsync(topic, payload, { qos: 1, retain })
    assert.equal(device.connected, true)
    await eventually(
      async () =>
        Number((await f.db.query('SELECT count(*)::int AS n FROM measurements')).rows[0].n) === 4,
      { what: 'heater, ruuvi, wired and fridge rows' },
    )
    assert.equal(
      (await f.db.query('SELECT 1 FROM edge_device_status WHERE device_id = $1', [id])).rowCount,
      1,
    )
    assert.deepEqual(
      await suback(device, ['paku/#', `paku/edge/${A}/cmd/ota`, 'paku/edge/+/status']),
      [128, 128, 128],
    )
    await refused(device, `paku/edge/${A}/status`, '{"online":true,"device_model":"spoof"}')
    assert.equal(
      (await f.db.query('SELECT 1 FROM edge_device_status WHERE device_id = $1', [A])).rowCount,
      0,
    )
  })

  it('refuses the shared login for client ids that have a credential of their own, and for no client id', async (t) => {
    const f = await fleet(t, {
      sharedCredential: { username: 'edge', password: 'shared-secret', role: 'device' },
    })
    assert.match(
      await attempt(f, { username: 'edge', password: 'shared-secret', clientId: 'ha-bridge' }),
      /Identifier rejected/,
    )
    assert.match(
      await attempt(f, { username: 'edge', password: 'shared-secret', clientId: A }),
      /Identifier rejected/,
    )
    assert.match(
      await attempt(f, { username: 'edge', password: 'shared-secret', clientId: '' }),
      /Identifier rejected/,
      'an empty client id names no device',
    )
    assert.equal(
      await attempt(f, { username: 'edge', password: 'shared-secret', clientId: 'ESP32-CCCCCCCC' }),
      'connected',
    )
    assert.ok(
      !f.lines.some((l) => l.includes('shared MQTT credential has full rights')),
      'no warning in device role',
    )
  })

  it('warns at start while the shared credential has full rights', async (t) => {
    const f = await fleet(t)
    assert.ok(f.lines.some((l) => l.includes('shared MQTT credential has full rights')))
    const full = await f.connect({
      username: 'edge',
      password: 'shared-secret',
      clientId: 'anything',
    })
    assert.deepEqual(await suback(full, ['paku/#']), [0], 'full rights as before')
  })
})

describe('device rights', () => {
  it('gives Waveshare screen boards the shared feeds they read, read-only, with per-device credentials', async (t) => {
    const f = await fleet(t)
    const screen = await f.connect({ ...cred(A), clientId: A })
    assert.deepEqual(
      await suback(screen, ['paku/sensors/+/data', 'paku/heater/+/data', 'paku/ecoflow/+/power']),
      [0, 0, 0],
    )
    const got = inbox(screen)
    const b = await f.connect({ ...cred(B), clientId: B })
    await b.publishAsync('paku/sensors/ruuvi_kitchen/data', data('ruuvi_kitchen'), { qos: 1 })
    await b.publishAsync(`paku/heater/${B}/data`, data(`heater_${B}`), { qos: 1 })
    await f.app.broker.publish('paku/ecoflow/R331ZEB4ZE89012/power', '{"soc":80}', { retain: true })
    await eventually(async () => got.length === 3, { what: 'the three feeds' })
    await refused(screen, `paku/heater/${B}/data`, data(`heater_${B}`, 99))
  })

  it('gives a relayed sensor to the first gateway that publishes it; an admin can move it', async (t) => {
    const f = await fleet(t)
    const a = await f.connect({ ...cred(A), clientId: A })
    await a.publishAsync('paku/sensors/ruuvi_cabin/data', data('ruuvi_cabin', 21), { qos: 1 })
    const b = await f.connect({ ...cred(B), clientId: B })
    await refused(b, 'paku/sensors/ruuvi_cabin/data', data('ruuvi_cabin', -40))
    const c = await f.connect({ ...cred(B), clientId: B })
    await refused(c, `paku/sensors/${A}_wired/data`, data(`${A}_wired`, -40))
    await eventually(async () => (await f.db.query('SELECT 1 FROM measurements')).rowCount === 1, {
      what: "A's reading",
    })
    const rows = (
      await f.db.query(
        `SELECT metrics->>'temperature_c' AS t FROM measurements WHERE device_id = 'ruuvi_cabin'`,
      )
    ).rows
    assert.deepEqual(rows, [{ t: '21' }], 'no forged reading stored')

    const listed = (await (await f.api('GET', '/api/admin/mqtt/sensors')).json()) as {
      sensors: Array<{ sensor_id: string; device_id: string; assigned_by: string | null }>
    }
    assert.deepEqual(
      listed.sensors.map((s) => [s.sensor_id, s.device_id, s.assigned_by]),
      [['ruuvi_cabin', A, null]],
    )
    const moved = await f.api('PUT', '/api/admin/mqtt/sensors/paku/sensors/ruuvi_cabin', {
      device_id: B,
    })
    assert.equal(moved.status, 200)
    const b2 = await f.connect({ ...cred(B), clientId: B })
    await b2.publishAsync('paku/sensors/ruuvi_cabin/data', data('ruuvi_cabin', 22), { qos: 1 })
    await refused(a, 'paku/sensors/ruuvi_cabin/data', data('ruuvi_cabin', 23))
    assert.equal(
      (await f.api('PUT', '/api/admin/mqtt/sensors/paku/sensors/%2B', { device_id: B })).status,
      400,
    )
    assert.equal(
      (await f.api('DELETE', '/api/admin/mqtt/sensors/paku/sensors/ruuvi_cabin')).status,
      204,
    )
    assert.equal(
      (await f.api('DELETE', '/api/admin/mqtt/sensors/paku/sensors/ruuvi_cabin')).status,
      404,
    )
  })

  it("limits Home Assistant discovery to the device's own entities", async (t) => {
    const f = await fleet(t)
    const a = await f.connect({ ...cred(A), clientId: A })
    await a.publishAsync(
      `homeassistant/switch/autoterm_${A}/power/config`,
      JSON.stringify({
        state_topic: `paku/heater/${A}/state`,
        command_topic: `paku/heater/${A}/cmd`,
      }),
      { qos: 1, retain: true },
    )
    await refused(
      a,
      `homeassistant/switch/autoterm_${B}/power/config`,
      JSON.stringify({ state_topic: `paku/heater/${B}/state` }),
      { retain: true },
    )
    const again = await f.connect({ ...cred(A), clientId: A })
    await refused(
      again,
      `homeassistant/switch/autoterm_${A}/power/config`,
      JSON.stringify({
        state_topic: `paku/heater/${A}/state`,
        command_topic: `paku/edge/${B}/cmd/ota`,
      }),
      { retain: true },
    )
    const retained = (
      await f.db.query(`SELECT topic FROM mqtt_retained WHERE topic LIKE 'homeassistant/%'`)
    ).rows.map((r) => r.topic)
    assert.deepEqual(retained, [`homeassistant/switch/autoterm_${A}/power/config`])
    const config = (
      await f.db.query(
        `SELECT convert_from(payload, 'UTF8') AS p FROM mqtt_retained WHERE topic LIKE 'homeassistant/%'`,
      )
    ).rows[0]?.p
    assert.doesNotMatch(config, /cmd\/ota/)
  })
})

describe('broker quotas', () => {
  const blob = (kib: number) => Buffer.alloc(kib * 1024, 0x61)

  it("keeps a device's retained state within 1 MiB: the publish over it closes the connection", async (t) => {
    const f = await fleet(t)
    const a = await f.connect({ ...cred(A), clientId: A })
    for (let i = 1; i <= 5; i++)
      await a.publishAsync(`paku/edge/${A}/blob/${i}`, blob(200), { qos: 1, retain: true })
    // Replacing a retained message frees what it replaces; deleting one frees it all.
    await a.publishAsync(`paku/edge/${A}/blob/1`, blob(200), { qos: 1, retain: true })
    await refused(a, `paku/edge/${A}/blob/6`, blob(200), { retain: true })
    const h = await f.health()
    assert.equal(h.broker.quotaRefusals.retainedBytes, 1)
    assert.deepEqual(f.app.broker.retainedOf(`device:${A}`), { topics: 5, bytes: 5 * 200 * 1024 })
    const metrics = await (await fetch(`${f.httpUrl}/metrics`)).text()
    assert.match(metrics, /^paku_mqtt_quota_refusals_total\{quota="retainedBytes"\} 1$/m)
    assert.match(metrics, /^paku_mqtt_quota_refusals_total\{quota="retainedTopics"\} 0$/m)
    assert.match(metrics, new RegExp(`^paku_mqtt_retained_bytes ${5 * 200 * 1024}$`, 'm'))
    const back = await f.connect({ ...cred(A), clientId: A })
    await back.publishAsync(`paku/edge/${A}/blob/5`, '', { qos: 1, retain: true })
    await back.publishAsync(`paku/edge/${A}/blob/6`, blob(200), { qos: 1, retain: true })
    await eventually(
      async () =>
        (
          await f.db.query(
            `SELECT sum(octet_length(payload))::int AS n, count(*)::int AS c FROM mqtt_retained WHERE owner = $1`,
            [`device:${A}`],
          )
        ).rows[0]?.c === 5,
      { what: 'five retained rows owned by A' },
    )
    const [row] = (
      await f.db.query(
        `SELECT sum(octet_length(payload))::int AS n FROM mqtt_retained WHERE owner = $1`,
        [`device:${A}`],
      )
    ).rows
    assert.ok(row.n <= 1024 * 1024)
    assert.ok(
      f.lines.some(
        (l) =>
          l.includes('MQTT quota reached') &&
          l.includes(`device:${A}`) &&
          l.includes('retainedBytes'),
      ),
    )
  })

  it('takes a bridge\'s connection state only as "0" or "1" on its own client id\'s topic, owned and counted like any retained message', async (t) => {
    const f = await fleet(t)
    const bridge = await f.connect({ ...cred('ha-bridge'), clientId: 'ha-bridge' })
    await bridge.publishAsync('$SYS/broker/connection/ha-bridge/state', '1', {
      qos: 1,
      retain: true,
    })
    await eventually(
      async () =>
        (
          await f.db.query(
            `SELECT owner, payload FROM mqtt_retained WHERE topic = '$SYS/broker/connection/ha-bridge/state'`,
          )
        ).rows[0],
      { what: 'the retained state' },
    )
    const [row] = (
      await f.db.query(
        `SELECT owner, convert_from(payload, 'UTF8') AS payload FROM mqtt_retained WHERE topic = '$SYS/broker/connection/ha-bridge/state'`,
      )
    ).rows
    assert.deepEqual(row, { owner: 'bridge:ha-bridge', payload: '1' })
    assert.deepEqual(f.app.broker.retainedOf('bridge:ha-bridge'), { topics: 1, bytes: 1 })
    // Anything else there is not a state: a megabyte would otherwise be stored outside every quota.
    await refused(bridge, '$SYS/broker/connection/ha-bridge/state', blob(1024), { retain: true })
    // Nor may a client announce another's state.
    const a = await f.connect({ ...cred(A), clientId: A })
    await refused(a, '$SYS/broker/connection/ha-bridge/state', '0', { retain: true })
    assert.deepEqual(f.app.broker.retainedOf('bridge:ha-bridge'), { topics: 1, bytes: 1 })
  })

  it('counts retained topics, and logs a principal’s refusals once a minute', async (t) => {
    const f = await fleet(t, { quotas: { device: { retainedTopics: 2 } } })
    for (let round = 0; round < 3; round++) {
      const a = await f.connect({ ...cred(A), clientId: A })
      await a.publishAsync(`paku/edge/${A}/status`, '{"online":true}', { qos: 1, retain: true })
      await a.publishAsync(`paku/edge/${A}/config/report`, '{}', { qos: 1, retain: true })
      await refused(a, `paku/edge/${A}/third`, '{}', { retain: true })
    }
    assert.equal((await f.health()).broker.quotaRefusals.retainedTopics, 3)
    assert.equal(
      f.lines.filter((l) => l.includes('MQTT quota reached') && l.includes(`device:${A}`)).length,
      1,
    )
  })

  it('limits persistent sessions per login and in all; clean sessions are not limited', async (t) => {
    const f = await fleet(t, {
      quotas: { service: { persistentSessions: 2 }, totalPersistentSessions: 3 },
    })
    for (const id of ['ci-1', 'ci-2'])
      await (await f.connect({ ...cred('ci'), clientId: id, clean: false })).endAsync()
    assert.match(
      await attempt(f, { ...cred('ci'), clientId: 'ci-3', clean: false }),
      /Not authorized/,
    )
    assert.equal(await attempt(f, { ...cred('ci'), clientId: 'ci-3', clean: true }), 'connected')
    assert.equal(
      await attempt(f, { ...cred('ci'), clientId: 'ci-1', clean: false }),
      'connected',
      'resuming an existing one',
    )
    assert.equal(
      await attempt(f, { ...cred('ha-bridge'), clientId: 'ha-bridge', clean: false }),
      'connected',
      'the third in all',
    )
    assert.match(
      await attempt(f, { ...cred('ha-bridge'), clientId: 'ha-bridge-2', clean: false }),
      /Not authorized/,
      'over the total',
    )
    // One publish then reaches at most the sessions that exist: the quota bounds what it can queue.
    const ci = await f.connect({ ...cred('ci'), clientId: 'ci-pub' })
    await ci.publishAsync('paku/edge/ESP32-CCCCCCCC/cmd/ota', '{}', { qos: 1 })
    assert.equal((await f.health()).broker.quotaRefusals.persistentSessions, 2)
  })

  it('limits subscriptions per client: one more gets SUBACK 0x80', async (t) => {
    const f = await fleet(t, { quotas: { device: { subscriptions: 3 } } })
    const a = await f.connect({ ...cred(A), clientId: A })
    assert.deepEqual(await suback(a, FIRMWARE_SUBSCRIBES(A).slice(0, 4)), [0, 0, 0, 128])
    assert.deepEqual(
      await suback(a, FIRMWARE_SUBSCRIBES(A).slice(0, 1)),
      [0],
      'subscribing again to a topic it has',
    )
    await a.unsubscribeAsync(FIRMWARE_SUBSCRIBES(A)[0] as string)
    assert.deepEqual(
      await suback(a, FIRMWARE_SUBSCRIBES(A).slice(4, 5)),
      [0],
      'an unsubscribe frees a place',
    )
    assert.equal((await f.health()).broker.quotaRefusals.subscriptions, 1)
  })

  it('queues at most queuedMessages and queuedBytes for an offline session; more are dropped for it', async (t) => {
    const f = await fleet(t, { quotas: { bridge: { queuedMessages: 5, queuedBytes: 2000 } } })
    const bridge = await f.connect({ ...cred('ha-bridge'), clientId: 'ha-bridge', clean: false })
    await bridge.subscribeAsync('paku/edge/+/cmd/#', { qos: 1 })
    await bridge.endAsync()
    const ci = await f.connect({ ...cred('ci'), clientId: 'ci-1' })
    for (let i = 0; i < 8; i++) await ci.publishAsync(`paku/edge/${A}/cmd/n`, String(i), { qos: 1 })
    assert.deepEqual(f.app.broker.queueOf('ha-bridge'), { messages: 5, bytes: 5 })
    for (let i = 0; i < 3; i++)
      await ci.publishAsync(`paku/edge/${A}/cmd/big`, 'x'.repeat(800), { qos: 1 })
    assert.equal(f.app.broker.queueOf('ha-bridge').messages, 5, 'no room left by count')
    const h = await f.health()
    assert.equal(h.broker.quotaRefusals.queued, 6)
    const back = await f.connect({ ...cred('ha-bridge'), clientId: 'ha-bridge', clean: false })
    const got = inbox(back)
    await eventually(async () => got.length === 5, { what: 'the five queued messages' })
    assert.deepEqual(
      got.map((m) => m.payload),
      ['0', '1', '2', '3', '4'],
    )
    await back.endAsync()
    await eventually(async () => f.app.broker.queueOf('ha-bridge').messages === 0, {
      what: 'the queue emptied',
    })
    for (let i = 0; i < 3; i++)
      await ci.publishAsync(`paku/edge/${A}/cmd/big`, 'x'.repeat(800), { qos: 1 })
    assert.deepEqual(
      f.app.broker.queueOf('ha-bridge'),
      { messages: 2, bytes: 1600 },
      'the byte quota',
    )
  })

  it('keeps the broker within its total: a retained message over it is refused', async (t) => {
    const f = await fleet(t, { quotas: { totalBytes: 300 * 1024 } })
    const bridge = await f.connect({ ...cred('ha-bridge'), clientId: 'ha-bridge' })
    await bridge.publishAsync('paku/edge/x/big1', blob(200), { qos: 1, retain: true })
    await refused(bridge, 'paku/edge/x/big2', blob(200), { retain: true })
    assert.equal((await f.health()).broker.quotaRefusals.total, 1)
    assert.equal((await f.health()).broker.state.retainedBytes, 200 * 1024)
  })

  it('expires a persistent session whose client stays away longer than sessionExpiryHours', async (t) => {
    let clock = Date.now()
    const f = await fleet(t, { sessionExpiryHours: 24 }, { now: () => clock })
    for (const id of ['ha-bridge']) {
      const c = await f.connect({ ...cred(id), clientId: id, clean: false })
      await c.subscribeAsync('paku/edge/+/cmd/#', { qos: 1 })
      await c.endAsync()
    }
    const ci = await f.connect({ ...cred('ci'), clientId: 'ci-1', clean: false })
    await ci.subscribeAsync('paku/x', { qos: 1 })
    await ci.publishAsync(`paku/edge/${A}/cmd/ota`, '{}', { qos: 1 })
    await eventually(async () => f.app.broker.queueOf('ha-bridge').messages === 1, {
      what: 'a queued message',
    })
    clock += 23 * 3_600_000
    assert.equal(await f.app.broker.expireSessions(), 0, 'not yet')
    await ci.endAsync()
    clock += 2 * 3_600_000
    assert.equal(
      await f.app.broker.expireSessions(),
      1,
      "the bridge's, gone 25 h; not ci's, gone 2 h",
    )
    assert.equal(f.app.broker.queueOf('ha-bridge').messages, 0)
    await eventually(
      async () =>
        (await f.db.query(`SELECT client_id FROM mqtt_sessions ORDER BY 1`)).rows
          .map((r) => r.client_id)
          .join() === 'ci-1',
      { what: 'the session row gone' },
    )
    assert.equal(
      (await f.db.query(`SELECT 1 FROM mqtt_subscriptions WHERE client_id = 'ha-bridge'`)).rowCount,
      0,
    )
    const back = await mqtt.connectAsync(f.mqttUrl, {
      ...cred('ha-bridge'),
      clientId: 'ha-bridge',
      clean: false,
      reconnectPeriod: 0,
    })
    defer(t, () => back.endAsync(true))
    const again = await mqtt.connectAsync(f.mqttUrl, {
      ...cred('ci'),
      clientId: 'ci-1',
      clean: false,
      reconnectPeriod: 0,
    })
    defer(t, () => again.endAsync(true))
    assert.equal(await new Promise<boolean>((resolve) => resolve(again.connected)), true)
    assert.equal((await f.health()).broker.expiredSessions, 1)
  })

  it('loads at most what the quotas allow at start-up, whatever the tables hold', async (t) => {
    const f = await fleet(t)
    await f.app.stop()
    // 300 retained messages of 200 KiB from one device, and 200 persistent sessions of one login with 50 queued messages each.
    await f.db.query(`INSERT INTO mqtt_retained (topic, payload, packet, owner)
      SELECT 'paku/edge/${A}/blob/' || i, convert_to(repeat('x', 204800), 'UTF8'), jsonb_build_object('cmd', 'publish', 'topic', 'paku/edge/${A}/blob/' || i, 'qos', 0, 'retain', true), 'device:${A}'
      FROM generate_series(1, 300) i`)
    await f.db.query(
      `INSERT INTO mqtt_sessions (client_id, principal, kind) SELECT 'ci-' || i, 'service:ci', 'service' FROM generate_series(1, 200) i`,
    )
    await f.db.query(
      `INSERT INTO mqtt_subscriptions (client_id, topic, options) SELECT 'ci-' || i, 'paku/#', '{"qos":1}' FROM generate_series(1, 200) i`,
    )
    await f.db
      .query(`INSERT INTO mqtt_outgoing (client_id, broker_id, broker_counter, payload, packet)
      SELECT 'ci-' || i, 'old', i * 100 + j, convert_to(repeat('y', 1024), 'UTF8'), jsonb_build_object('cmd', 'publish', 'topic', 'paku/x', 'qos', 1)
      FROM generate_series(1, 200) i, generate_series(1, 50) j`)
    const g = await fleet(t, {}, { url: f.url })
    const state = (await g.health()).broker.state
    assert.ok(state.retainedBytes <= 1024 * 1024, `retained ${state.retainedBytes} bytes`)
    assert.equal(state.persistentSessions, 4, "the service's quota of persistent sessions")
    assert.ok(state.queuedBytes <= 4 * 50 * 1024)
    assert.deepEqual(g.app.broker.retainedOf(`device:${A}`), { topics: 5, bytes: 5 * 200 * 1024 })
    const left = (
      await g.db.query(
        `SELECT (SELECT count(*)::int FROM mqtt_retained) AS r, (SELECT count(*)::int FROM mqtt_sessions) AS s, (SELECT count(*)::int FROM mqtt_outgoing) AS o`,
      )
    ).rows[0]
    assert.deepEqual(
      left,
      { r: 5, s: 4, o: 200 },
      'what was not loaded is deleted, so memory and tables agree',
    )
    assert.ok(
      g.lines.some((l) => l.includes('broker state over its quotas was deleted at start-up')),
    )
  })
})

describe('browsers and anonymous clients', () => {
  it('refuses MQTT over WebSocket from browser origins that are not allow-listed', async (t) => {
    const f = await fleet(t, { ws: { allowedOrigins: ['https://dashboard.example'] } })
    // The handshake's answer, as a browser would get it.
    const handshake = (origin?: string) =>
      new Promise<number>((resolve, reject) => {
        const w = new WebSocket(f.wsUrl, 'mqtt', origin ? { headers: { Origin: origin } } : {})
        w.once('upgrade', (res) => {
          resolve(res.statusCode ?? 0)
          w.terminate()
        })
        w.once('unexpected-response', (_req, res) => {
          resolve(res.statusCode ?? 0)
          res.resume()
        })
        w.once('error', (err) =>
          err.message.includes('Unexpected server response') ? undefined : reject(err),
        )
      })
    assert.equal(await handshake('https://evil.example'), 403)
    assert.equal(await handshake('http://localhost:8080'), 403)
    assert.equal(await handshake('https://dashboard.example'), 101)
    assert.equal(await handshake(), 101, 'clients that send no Origin (devices, scripts)')
    const browser = await mqtt.connectAsync(f.wsUrl, {
      ...cred('ha-bridge'),
      reconnectPeriod: 0,
      wsOptions: { headers: { Origin: 'https://dashboard.example' } },
    })
    await browser.endAsync()
    assert.equal((await f.health()).broker.refusedOrigins, 2)
  })

  it('lets anonymous clients read but not publish by default', async (t) => {
    const f = await fleet(t, { allowAnonymous: true, anonymousRole: 'readonly' })
    const anon = await f.connect({})
    assert.deepEqual(await suback(anon, ['paku/#']), [0])
    await refused(anon, `paku/edge/${A}/cmd/ota`, '{"url":"http://evil/fw.bin"}')
  })

  it('scopes anonymous clients as the device named by their client id in role device', async (t) => {
    const f = await fleet(t, { allowAnonymous: true, anonymousRole: 'device' })
    const anon = await f.connect({ clientId: 'ESP32-CCCCCCCC' })
    await anon.publishAsync(
      'paku/edge/ESP32-CCCCCCCC/status',
      '{"online":true,"device_model":"m"}',
      { qos: 1 },
    )
    await refused(anon, `paku/edge/${A}/status`, '{}')
    assert.match(
      await attempt(f, { clientId: A }),
      /Identifier rejected/,
      'not a device with a credential of its own',
    )
  })
})

describe('failed-login limits', () => {
  it("counts guesses at one login's password however often another login succeeds from the same address", async (t) => {
    const f = await fleet(t, { maxAuthFailuresPerMinute: 3 })
    for (let i = 0; i < 3; i++) {
      assert.match(
        await attempt(f, { username: 'ha-bridge', password: `guess-${i}`, clientId: 'ha-bridge' }),
        /Bad username or password/,
      )
      assert.equal(
        await attempt(f, { ...cred(A), clientId: A }),
        'connected',
        'the guesser logs in with its own credential in between',
      )
    }
    assert.match(
      await attempt(f, { ...cred('ha-bridge'), clientId: 'ha-bridge' }),
      /Not authorized/,
      'blocked, even with the right password',
    )
    assert.equal(
      await attempt(f, { ...cred(A), clientId: A }),
      'connected',
      "A's own login is another pair",
    )
  })

  it('blocks an address that fails with many usernames', async (t) => {
    const f = await fleet(t, { maxAuthFailuresPerMinute: 3, maxAuthFailuresPerAddressPerMinute: 4 })
    for (let i = 0; i < 4; i++)
      assert.match(
        await attempt(f, { username: `user-${i}`, password: 'x', clientId: `user-${i}` }),
        /Bad username or password/,
      )
    assert.match(await attempt(f, { ...cred(A), clientId: A }), /Not authorized/)
  })
})
