import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import mqtt from 'mqtt'
import {
  defer,
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'
import { runCli, type CliIo } from '../cli/index.js'
import { addCredential, checkCredential, hashPassword, verifyPassword } from './credentials.js'

/** 'connected', the refusal message, or 'closed' when the server dropped the socket before CONNACK. */
function refusal(url: string, opts: mqtt.IClientOptions): Promise<string> {
  return new Promise((resolve) => {
    const c = mqtt.connect(url, { ...opts, reconnectPeriod: 0, connectTimeout: 3000 })
    const finish = (result: string) => {
      c.end(true)
      resolve(result)
    }
    c.once('connect', () => finish('connected'))
    c.once('error', (err) => finish(err.message))
    c.once('close', () => finish('closed'))
  })
}

describe('MQTT authentication and topic permissions', () => {
  async function setup(t: Parameters<typeof defer>[0]) {
    const url = await testDatabase(t)
    const sut = await startApp(
      t,
      testConfig({
        databaseUrl: url,
        mqtt: {
          allowAnonymous: false,
          sharedCredential: { username: 'edge', password: 'shared-secret' },
        },
      }),
    )
    await addCredential(sut.app.db.db, {
      username: 'ESP32-AABBCCDD',
      password: 'device-pass-1',
      role: 'device',
    })
    return { url, sut, db: await sqlClient(t, url) }
  }

  it('refuses anonymous clients and wrong passwords with the MQTT 3.1.1 CONNACK codes', async (t) => {
    const { sut } = await setup(t)
    assert.match(await refusal(sut.mqttUrl, {}), /Not authorized/)
    assert.match(
      await refusal(sut.mqttUrl, { username: 'edge', password: 'wrong' }),
      /Bad username or password/,
    )
    assert.match(
      await refusal(sut.mqttUrl, { username: 'ESP32-AABBCCDD', password: 'nope' }),
      /Bad username or password/,
    )
    assert.match(
      await refusal(sut.mqttUrl, { username: 'nobody', password: 'device-pass-1' }),
      /Bad username or password/,
    )
    assert.equal(
      await refusal(sut.wsUrl, { username: 'edge', password: 'shared-secret' }),
      'connected',
      'WebSocket too',
    )
    const h = (await (await fetch(`${sut.httpUrl}/health`)).json()) as {
      broker: { authFailures: number }
    }
    assert.equal(h.broker.authFailures, 4)
  })

  it('lets the shared legacy credential (devices, HA bridge) do anything', async (t) => {
    const { sut, db } = await setup(t)
    const bridge = await mqtt.connectAsync(sut.mqttUrl, {
      username: 'edge',
      password: 'shared-secret',
      clientId: 'ha-bridge',
      clean: false,
    })
    defer(t, () => bridge.endAsync())
    const granted = await bridge.subscribeAsync('paku/#', { qos: 1 })
    assert.equal(granted[0]?.qos, 1)
    await bridge.publishAsync(
      'paku/edge/ESP32-99/status',
      JSON.stringify({ online: true, device_model: 'm' }),
      { qos: 1 },
    )
    await eventually(
      async () => (await db.query('SELECT 1 FROM edge_device_status')).rowCount === 1,
      { what: 'status row' },
    )
  })

  it('keeps a device to its own topics: other devices’ topics close the connection, foreign subscriptions get SUBACK 0x80', async (t) => {
    const { sut, db } = await setup(t)
    const device = await mqtt.connectAsync(sut.mqttUrl, {
      username: 'ESP32-AABBCCDD',
      password: 'device-pass-1',
      clientId: 'ESP32-AABBCCDD',
      reconnectPeriod: 0,
    })
    defer(t, () => device.endAsync(true))
    // mqtt.js rejects a SUBACK with failures; the packet says which were granted.
    const suback = await device
      .subscribeAsync([
        'paku/edge/ESP32-AABBCCDD/cmd/ota',
        'paku/edge/ESP32-11111111/cmd/ota',
        'paku/#',
      ])
      .then(
        () => undefined,
        (err: { packet?: { granted?: number[] } }) => err.packet?.granted,
      )
    assert.deepEqual(suback, [0, 128, 128])
    await device.publishAsync(
      'paku/edge/ESP32-AABBCCDD/status',
      JSON.stringify({ online: true, device_model: 'lilygo-t-display-s3' }),
      { qos: 1 },
    )
    await device.publishAsync(
      'paku/sensors/ruuvi_cabin/data',
      JSON.stringify({ device_id: 'ruuvi_cabin', metrics: { t: 1 } }),
      { qos: 1 },
    )
    const closed = new Promise<void>((resolve) => device.on('close', () => resolve()))
    device.publish(
      'paku/edge/ESP32-11111111/status',
      JSON.stringify({ online: true, device_model: 'spoof' }),
      { qos: 1 },
    )
    await closed
    await eventually(async () => (await db.query('SELECT 1 FROM measurements')).rowCount === 1, {
      what: 'the ruuvi row',
    })
    const statuses = (await db.query('SELECT device_id FROM edge_device_status')).rows.map(
      (r) => r.device_id,
    )
    assert.deepEqual(statuses, ['ESP32-AABBCCDD'], 'the spoofed status was not stored')
    const h = (await (await fetch(`${sut.httpUrl}/health`)).json()) as {
      broker: { denied: number }
    }
    assert.equal(h.broker.denied, 3)
  })
})

describe('paku device add|list|remove', () => {
  const io = (env: Record<string, string>) => {
    const out: string[] = []
    const err: string[] = []
    const value: CliIo = {
      env,
      out: (l) => out.push(l),
      err: (l) => err.push(l),
      waitForStop: () => new Promise(() => {}),
      isTTY: false,
    }
    return { io: value, out, err }
  }

  it('stores hashed credentials, shows a generated password once, never echoes a given one', async (t) => {
    const url = await testDatabase(t)
    const env = { PAKU_DATABASE_URL: url, PAKU_LOG_LEVEL: 'silent' }
    const a = io(env)
    assert.equal(await runCli(['device', 'add', 'ESP32-00000001'], a.io), 0)
    const generated = /password: (\S+)$/.exec(a.out.join('\n'))?.[1]
    assert.ok(generated && generated.length >= 20)
    const b = io(env)
    assert.equal(
      await runCli(
        ['device', 'add', 'ha-bridge', '--password', 'bridge-pass-123', '--role', 'bridge'],
        b.io,
      ),
      0,
    )
    assert.doesNotMatch(b.out.join('\n'), /bridge-pass-123/)
    const c = io(env)
    assert.equal(await runCli(['device', 'list'], c.io), 0)
    assert.deepEqual(
      c.out.map((l) => l.split('\t').slice(0, 2)),
      [
        ['ESP32-00000001', 'device'],
        ['ha-bridge', 'bridge'],
      ],
    )
    const db = await sqlClient(t, url)
    const hashes = (
      await db.query('SELECT password_hash FROM mqtt_credentials ORDER BY username')
    ).rows.map((r) => r.password_hash as string)
    for (const h of hashes) assert.match(h, /^scrypt\$16384\$8\$1\$/)
    assert.equal(await verifyPassword(generated, hashes[0] as string), true)
    assert.doesNotMatch(JSON.stringify(hashes), /bridge-pass-123/)
    const d = io(env)
    assert.equal(await runCli(['device', 'remove', 'ESP32-00000001'], d.io), 0)
    const e = io(env)
    assert.equal(await runCli(['device', 'remove', 'ESP32-00000001'], e.io), 1)
    assert.match(e.err.join('\n'), /no credential for ESP32-00000001/)
  })

  const bad: Array<[string[], RegExp]> = [
    [['device', 'add', 'bad id!'], /device id must be/],
    [['device', 'add', 'a/#'], /device id must be/],
    [
      ['device', 'add', 'ESP32-1', '--role', 'god'],
      /--role must be one of device, bridge, service/,
    ],
    [['device', 'add', 'ESP32-1', '--password', 'short'], /at least 8 characters/],
    [['device', 'frobnicate'], /usage: paku device/],
  ]
  for (const [argv, message] of bad) {
    it(`refuses ${argv.join(' ')}`, async () => {
      const x = io({ PAKU_DATABASE_URL: 'postgres://x:y@127.0.0.1:1/none' })
      assert.equal(await runCli(argv, x.io), 2)
      assert.match(x.err.join('\n'), message)
    })
  }

  it('checks an unknown username with scrypt too, so a refusal does not tell which usernames exist', async (t) => {
    const url = await testDatabase(t)
    const sut = await startApp(t, testConfig({ databaseUrl: url }))
    const db = sut.app.db.db
    await addCredential(db, {
      username: 'ESP32-0000KNOWN',
      password: 'the-right-password',
      role: 'device',
    })
    const took = async (username: string) => {
      const t0 = performance.now()
      assert.equal(await checkCredential(db, username, 'a-wrong-password'), undefined)
      return performance.now() - t0
    }
    const median = (xs: number[]) =>
      [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number
    await took('ESP32-0000KNOWN')
    const known: number[] = []
    const unknown: number[] = []
    for (let i = 0; i < 5; i++) {
      known.push(await took('ESP32-0000KNOWN'))
      unknown.push(await took(`ESP32-NOBODY-${i}`))
    }
    // scrypt (N=2^14) costs tens of ms; a bare lookup well under one. Both answers cost the scrypt.
    assert.ok(
      median(unknown) >= 0.3 * median(known),
      `unknown ${median(unknown).toFixed(1)} ms, known ${median(known).toFixed(1)} ms`,
    )
  })

  it('verifyPassword rejects malformed hashes instead of throwing', async () => {
    assert.equal(await verifyPassword('x', 'plain-text'), false)
    assert.equal(await verifyPassword('x', 'scrypt$16384$8$1$$'), false)
    assert.equal(await verifyPassword('pw', await hashPassword('pw')), true)
  })
})

describe('abuse limits per address', () => {
  it('refuses MQTT logins from an address after repeated failures, even with the right password', async (t) => {
    const url = await testDatabase(t)
    const sut = await startApp(
      t,
      testConfig({
        databaseUrl: url,
        mqtt: {
          allowAnonymous: false,
          sharedCredential: { username: 'edge', password: 'shared-secret' },
          maxAuthFailuresPerMinute: 3,
        },
      }),
    )
    for (let i = 0; i < 3; i++)
      assert.match(
        await refusal(sut.mqttUrl, { username: 'edge', password: `guess-${i}` }),
        /Bad username or password/,
      )
    assert.match(
      await refusal(sut.mqttUrl, { username: 'edge', password: 'shared-secret' }),
      /Not authorized/,
    )
  })

  it('caps open connections per address', async (t) => {
    const url = await testDatabase(t)
    const sut = await startApp(
      t,
      testConfig({ databaseUrl: url, mqtt: { maxConnectionsPerAddress: 2 } }),
    )
    const a = await mqtt.connectAsync(sut.mqttUrl, { reconnectPeriod: 0 })
    const b = await mqtt.connectAsync(sut.mqttUrl, { reconnectPeriod: 0 })
    assert.notEqual(await refusal(sut.mqttUrl, {}), 'connected')
    await a.endAsync()
    await eventually(async () => (await refusal(sut.mqttUrl, {})) === 'connected', {
      what: 'a free slot again',
    })
    await b.endAsync()
    const h = (await (await fetch(`${sut.httpUrl}/health`)).json()) as {
      broker: { refusedConnections: number }
    }
    assert.ok(h.broker.refusedConnections >= 1)
  })

  it('answers 429 with Retry-After after repeated wrong admin keys from one address', async (t) => {
    const url = await testDatabase(t)
    const sut = await startApp(
      t,
      testConfig({
        databaseUrl: url,
        http: { adminApiKey: 'right-key-0123456789abcdefghijklmnop', maxAuthFailuresPerMinute: 3 },
      }),
    )
    const get = (key: string) =>
      fetch(`${sut.httpUrl}/api/admin/ecoflow/devices`, { headers: { 'x-api-key': key } })
    assert.equal((await get('right-key-0123456789abcdefghijklmnop')).status, 200)
    for (let i = 0; i < 3; i++) assert.equal((await get(`wrong-${i}`)).status, 401)
    const blocked = await get('right-key-0123456789abcdefghijklmnop')
    assert.equal(blocked.status, 429)
    assert.ok(Number(blocked.headers.get('retry-after')) > 0)
    assert.match(
      ((await blocked.json()) as { message: string }).message,
      /too many failed attempts/,
    )
  })
})

describe('named admin keys with scopes', () => {
  it('paku key create/list/revoke: keys work with their scopes, are stored hashed, and stop working when revoked', async (t) => {
    const url = await testDatabase(t)
    const env = { PAKU_DATABASE_URL: url, PAKU_LOG_LEVEL: 'silent' }
    const run = async (argv: string[]) => {
      const out: string[] = []
      const io: CliIo = {
        env,
        out: (l) => out.push(l),
        err: (l) => out.push(l),
        waitForStop: () => new Promise(() => {}),
        isTTY: false,
      }
      return { code: await runCli(argv, io), text: out.join('\n') }
    }
    const reader = await run(['key', 'create', 'grafana-reader', '--scopes', 'read'])
    const ci = await run(['key', 'create', 'firmware-ci', '--scopes', 'upload,rollout'])
    const admin = await run(['key', 'create', 'ops', '--scopes', 'admin'])
    for (const r of [reader, ci, admin]) assert.equal(r.code, 0, r.text)
    const keyOf = (text: string) => /key \(shown once\): (paku_\S+)$/.exec(text)?.[1] as string
    assert.equal(
      (await run(['key', 'create', 'ops', '--scopes', 'read'])).code,
      1,
      'names are unique',
    )
    assert.equal((await run(['key', 'create', 'x', '--scopes', 'root'])).code, 2)

    const sut = await startApp(t, testConfig({ databaseUrl: url }))
    const call = (key: string, method = 'GET', path = '/api/admin/ecoflow/devices') =>
      fetch(`${sut.httpUrl}${path}`, { method, headers: { 'x-api-key': key } })
    assert.equal((await call(keyOf(reader.text))).status, 200, 'read scope reads')
    const denied = await call(keyOf(reader.text), 'POST', '/api/admin/ecoflow/poll')
    assert.equal(denied.status, 403)
    assert.match(((await denied.json()) as { message: string }).message, /lacks the "admin" scope/)
    assert.equal(
      (await call(keyOf(ci.text))).status,
      403,
      'upload/rollout keys cannot read device state',
    )
    assert.equal(
      (await call(keyOf(admin.text), 'POST', '/api/admin/ecoflow/poll')).status,
      409,
      'admin passes auth (EcoFlow is off)',
    )

    const db = await sqlClient(t, url)
    const stored = JSON.stringify((await db.query('SELECT * FROM admin_keys')).rows)
    assert.doesNotMatch(stored, new RegExp(keyOf(reader.text)))
    assert.equal((await run(['key', 'revoke', 'grafana-reader'])).code, 0)
    assert.equal((await call(keyOf(reader.text))).status, 401, 'revoked')
    const list = await run(['key', 'list'])
    assert.match(list.text, /grafana-reader\tread\tcreated .*\trevoked /)
    assert.doesNotMatch(list.text, /paku_/)
  })
})

describe('MQTT credentials over the admin API', () => {
  it('adds (generated or given password), lists and removes credentials, validating input', async (t) => {
    const url = await testDatabase(t)
    const sut = await startApp(
      t,
      testConfig({
        databaseUrl: url,
        http: { adminApiKey: 'ops-key-0123456789abcdefghijklmnopqrs' },
        mqtt: { allowAnonymous: false },
      }),
    )
    const api = (method: string, path: string, body?: unknown) =>
      fetch(`${sut.httpUrl}/api/admin/mqtt/credentials${path}`, {
        method,
        headers: {
          'x-api-key': 'ops-key-0123456789abcdefghijklmnopqrs',
          'content-type': 'application/json',
        },
        body:
          body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      })
    const gen = await api('POST', '', { username: 'ESP32-12345678' })
    assert.equal(gen.status, 201)
    const { password } = (await gen.json()) as { password: string }
    assert.ok(password.length >= 20)
    const given = await api('POST', '', {
      username: 'ha-bridge',
      password: 'bridge-pass-123',
      role: 'bridge',
    })
    assert.deepEqual(await given.json(), { username: 'ha-bridge', role: 'bridge' })
    const list = (await (await api('GET', '')).json()) as {
      credentials: Array<{ username: string; role: string }>
    }
    assert.deepEqual(
      list.credentials.map((c) => [c.username, c.role]),
      [
        ['ESP32-12345678', 'device'],
        ['ha-bridge', 'bridge'],
      ],
    )
    assert.equal(
      await refusal(sut.mqttUrl, {
        username: 'ESP32-12345678',
        password,
        clientId: 'ESP32-12345678',
      }),
      'connected',
    )
    for (const [body, message] of [
      [{ username: 'bad id' }, /username must be/],
      [{ username: 'ok', password: 'short' }, /at least 8/],
      [{ username: 'ok', role: 'root' }, /role must be one of/],
      [{ username: 'ok', extra: 1 }, /Invalid key/],
      ['{not json', /body must be JSON/],
    ] as Array<[unknown, RegExp]>) {
      const res = await api('POST', '', body)
      assert.equal(res.status, 400)
      assert.match(((await res.json()) as { message: string }).message, message)
    }
    assert.equal((await api('DELETE', '/ESP32-12345678')).status, 204)
    assert.equal((await api('DELETE', '/ESP32-12345678')).status, 404)
    assert.match(
      await refusal(sut.mqttUrl, {
        username: 'ESP32-12345678',
        password,
        clientId: 'ESP32-12345678',
      }),
      /Bad username or password/,
    )
  })
})
