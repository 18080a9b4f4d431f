/**
 * The Home Assistant path (docs/home-assistant.md): Home Assistant speaks MQTT 5 to its own Mosquitto, and
 * that Mosquitto bridges `paku/#` to paku both ways over MQTT 3.1.1, the newest aedes speaks. A real
 * Debian `mosquitto`, with Mosquitto's default bridge settings apart from the lines in `bridgeConf`.
 */
import assert from 'node:assert/strict'
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import { describe, it, type TestContext } from 'node:test'
import { promisify } from 'node:util'
import mqtt, { type IClientOptions, type IConnackPacket, type MqttClient } from 'mqtt'
import { freePort } from '../../scripts/local-process.js'
import {
  defer,
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'
import { addCredential } from './credentials.js'

const run = promisify(execFile)
// Debian installs the broker in /usr/sbin, which is not on an ordinary user's PATH.
const MOSQUITTO =
  process.env.PAKU_MOSQUITTO ??
  (existsSync('/usr/sbin/mosquitto') ? '/usr/sbin/mosquitto' : 'mosquitto')
const available = await run(MOSQUITTO, ['-h']).then(
  () => true,
  (err: { code?: unknown }) => err.code !== 'ENOENT',
)
// CI installs mosquitto (.ci/run); on a developer machine without it these tests are skipped, loudly.
const skip =
  !available && process.env.CI !== 'true'
    ? 'mosquitto not installed (apt-get install mosquitto)'
    : false

const BRIDGE = 'ha-bridge'
const PASSWORD = 'ha-bridge-password'
/** Where a Mosquitto bridge announces its state ("1" on connect; its will, "0", when the link drops). */
const STATE = `$SYS/broker/connection/${BRIDGE}/state`
const DATA = 'paku/sensors/ruuvi_cabin/data'
const OTA = 'paku/edge/ESP32-AABBCCDD/cmd/ota'
const reading = (temperature: number) =>
  JSON.stringify({ device_id: 'ruuvi_cabin', metrics: { temperature_c: temperature } })

/**
 * The bridge as docs/home-assistant.md gives it. Mosquitto 2.0's defaults already are `cleansession false`
 * and `bridge_protocol_version mqttv311`; both are written out because the bridge depends on them.
 * Everything else is Mosquitto's default: try_private on (the bridge bit in the CONNECT), notifications
 * on (`$SYS/broker/connection/<remote_clientid>/state`, with a will), start_type automatic.
 */
const bridgeConf = (pakuPort: number) => [
  'connection paku',
  `address 127.0.0.1:${pakuPort}`,
  `remote_clientid ${BRIDGE}`,
  `remote_username ${BRIDGE}`,
  `remote_password ${PASSWORD}`,
  'cleansession false',
  'topic paku/# both 1',
  'bridge_protocol_version mqttv311',
]

type Message = { topic: string; payload: string; qos: number }

/** Collects what a client receives. */
function inbox(c: MqttClient): Message[] {
  const got: Message[] = []
  c.on('message', (topic, payload, packet) =>
    got.push({ topic, payload: payload.toString(), qos: packet.qos }),
  )
  return got
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

/**
 * Home Assistant's Mosquitto: a local MQTT 5 listener on a free loopback port, anonymous, with the
 * bridge to paku. Persistence is on, as in Home Assistant's Mosquitto add-on: a local subscriber's
 * persistent session (clean start false) has to outlive a restart of its broker for a command that paku
 * queued during the restart to reach it. Killed by its pid when the test ends.
 */
async function startMosquitto(t: TestContext, pakuPort: number) {
  const dir = mkdtempSync(join(tmpdir(), 'paku-mosquitto-'))
  defer(t, () => rmSync(dir, { recursive: true, force: true }))
  const port = await freePort()
  const conf = join(dir, 'mosquitto.conf')
  writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      'persistence true',
      `persistence_location ${dir}/`,
      // Started as root, Mosquitto would switch to the user `mosquitto`, who cannot write this directory.
      `user ${userInfo().username}`,
      '',
      ...bridgeConf(pakuPort),
      '',
    ].join('\n'),
  )
  let child: ChildProcess | undefined
  let output = ''
  const stop = async (signal: 'SIGTERM' | 'SIGKILL') => {
    const c = child
    if (!c?.pid || c.exitCode !== null || c.signalCode !== null) return
    const exited = new Promise((resolve) => c.once('exit', resolve))
    process.kill(c.pid, signal)
    await exited
  }
  const start = async () => {
    const c = spawn(MOSQUITTO, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] })
    child = c
    let failed: Error | undefined
    c.once('error', (err) => (failed = err))
    for (const s of [c.stdout, c.stderr]) s.on('data', (d: Buffer) => (output += d.toString()))
    await eventually(
      async () => {
        if (failed) throw new Error(`cannot start ${MOSQUITTO}: ${failed.message}`)
        if (c.exitCode !== null) throw new Error(`mosquitto exited with ${c.exitCode}:\n${output}`)
        return listening(port)
      },
      { what: 'mosquitto listening' },
    )
  }
  defer(t, () => stop('SIGKILL'))
  await start()
  return {
    url: `mqtt://127.0.0.1:${port}`,
    start,
    /** SIGTERM: a clean shutdown (Mosquitto saves its database); SIGKILL: the host or the link dies. */
    stop,
    log: () => output,
  }
}

type Health = {
  broker: {
    clients: number
    connections: number
    messagesIn: number
    clientErrors: number
    authFailures: number
    denied: number
    refusedClientIds: number
    refusedConnections: number
  }
  ingest: {
    received: number
    accepted: number
    ignored: number
    duplicates: number
    rejected: number
  }
}

/**
 * paku with anonymous MQTT off and a bridge credential, and Home Assistant's Mosquitto bridged to it.
 * With `watch`, a service client on paku subscribes to the bridge's state topic and to the readings
 * before Mosquitto starts.
 */
async function home(t: TestContext, o: { watch?: boolean } = {}) {
  const url = await testDatabase(t)
  const sut = await startApp(t, testConfig({ databaseUrl: url, mqtt: { allowAnonymous: false } }))
  await addCredential(sut.app.db.db, BRIDGE, PASSWORD, 'bridge')
  const db = await sqlClient(t, url)
  let watched: Message[] = []
  if (o.watch) {
    await addCredential(sut.app.db.db, 'watcher', 'watcher-password', 'service')
    const watcher = await mqtt.connectAsync(sut.mqttUrl, {
      username: 'watcher',
      password: 'watcher-password',
      clientId: 'watcher',
      reconnectPeriod: 0,
    })
    defer(t, () => watcher.endAsync(true))
    watched = inbox(watcher)
    await watcher.subscribeAsync([STATE, 'paku/sensors/#'], { qos: 1 })
  }
  const mosquitto = await startMosquitto(t, Number(new URL(sut.mqttUrl).port))
  const clients: MqttClient[] = []
  defer(t, () => Promise.all(clients.map((c) => c.endAsync(true))))
  /** An MQTT 5 client on the local Mosquitto, as Home Assistant 2027.1 connects (closed after the test). */
  const local = async (opts: IClientOptions) => {
    const c = await mqtt.connectAsync(mosquitto.url, {
      protocolVersion: 5,
      reconnectPeriod: 0,
      connectTimeout: 5000,
      ...opts,
    })
    clients.push(c)
    return c
  }
  const health = async () => (await (await fetch(`${sut.httpUrl}/health`)).json()) as Health
  let probes = 0
  /**
   * Waits for the bridge's connection number `n` to paku, then for a message paku publishes to reach a
   * local subscriber of `paku/#` (its inbox `seen`): the bridge's subscription on paku is live from then on.
   */
  const bridgeUp = async (n: number, seen: Message[]) => {
    await eventually(async () => (await health()).broker.connections === n + (o.watch ? 1 : 0), {
      what: () => `the bridge's connection ${n} to paku; mosquitto:\n${mosquitto.log()}`,
    })
    const before = seen.filter((m) => m.topic === 'paku/probe').length
    // One more probe each time none has arrived yet: eventually's own interval is the wait between them.
    await eventually(
      async () => {
        if (seen.filter((m) => m.topic === 'paku/probe').length > before) return true
        await sut.app.broker.publish('paku/probe', String(++probes))
        return false
      },
      { what: () => `a message from paku through the bridge; mosquitto:\n${mosquitto.log()}` },
    )
  }
  /** The temperatures stored for ruuvi_cabin, oldest first. */
  const stored = async () =>
    (
      await db.query(
        `SELECT (metrics->>'temperature_c')::float8 AS t FROM measurements WHERE device_id = 'ruuvi_cabin' ORDER BY id`,
      )
    ).rows.map((r) => r.t as number)
  /** The bridge states the subscriber on paku received, oldest first (with `watch`). */
  const notifications = () =>
    watched
      .filter((m) => m.topic === STATE)
      .map((m) => m.payload)
      .join('')
  /** The readings the subscriber on paku received (with `watch`). */
  const relayed = () => watched.filter((m) => m.topic === DATA).map((m) => m.payload)
  return { sut, db, mosquitto, local, health, bridgeUp, stored, notifications, relayed }
}

describe(
  'a Mosquitto bridge from Home Assistant (MQTT 5 on its side, MQTT 3.1.1 to paku)',
  { skip, timeout: 60_000 },
  () => {
    it('a reading an MQTT 5 client publishes on the local side is stored once, and delivered there once: paku sends nothing back', async (t) => {
      const h = await home(t, { watch: true })
      const ha = await h.local({ clientId: 'homeassistant' })
      const seen = inbox(ha)
      await ha.subscribeAsync('paku/#', { qos: 1 })
      await h.bridgeUp(1, seen)
      const sensor = await h.local({ clientId: 'ruuvi-gateway' })
      /** paku publishes a marker once it has handed the last reading to its subscribers; waits for it locally. */
      const marker = async (n: string) => {
        await eventually(async () => h.relayed().length === Number(n), {
          what: `reading ${n} relayed by paku`,
        })
        await h.sut.app.broker.publish('paku/edge/ESP32-AABBCCDD/cmd/marker', n, { qos: 1 })
        await eventually(
          async () => seen.some((m) => m.payload === n && m.topic.endsWith('/marker')),
          {
            what: () =>
              `marker ${n}; received ${JSON.stringify(seen)}; mosquitto:\n${h.mosquitto.log()}`,
          },
        )
      }

      await sensor.publishAsync(DATA, reading(21.5), { qos: 1 })
      await eventually(async () => (await h.stored()).length === 1, {
        what: 'the reading stored by paku',
      })
      // paku would send an echo to the bridge when it hands the reading to its subscribers, ahead of anything
      // it publishes after that on the same connection: once this marker has arrived locally, an echo would have too.
      await marker('1')
      assert.deepEqual(
        seen.filter((m) => m.topic === DATA),
        [{ topic: DATA, payload: reading(21.5), qos: 1 }],
        'delivered locally once',
      )

      // And a copy Mosquitto sent back to paku would reach paku ahead of the next reading.
      await sensor.publishAsync(DATA, reading(22), { qos: 1 })
      await eventually(async () => (await h.stored()).length === 2, {
        what: 'the second reading stored',
      })
      await marker('2')

      assert.deepEqual(await h.stored(), [21.5, 22], 'each reading stored once')
      assert.deepEqual(
        h.relayed(),
        [reading(21.5), reading(22)],
        'each reading published once on paku',
      )
      assert.deepEqual(
        seen.filter((m) => m.topic === DATA).map((m) => m.payload),
        [reading(21.5), reading(22)],
        'each reading delivered locally once',
      )
      const { broker, ingest } = await h.health()
      assert.equal(
        broker.messagesIn,
        3,
        'paku received its connection state and the two readings from the bridge, nothing else',
      )
      assert.deepEqual(
        {
          received: ingest.received,
          accepted: ingest.accepted,
          ignored: ingest.ignored,
          duplicates: ingest.duplicates,
          rejected: ingest.rejected,
        },
        { received: 3, accepted: 2, ignored: 1, duplicates: 0, rejected: 0 },
        'the readings stored, the state not',
      )
      assert.deepEqual(
        {
          connections: broker.connections,
          clients: broker.clients,
          clientErrors: broker.clientErrors,
          denied: broker.denied,
        },
        { connections: 2, clients: 2, clientErrors: 0, denied: 0 },
        "the watcher's connection and the bridge's, which stayed up",
      )
    })

    it('a command paku publishes while the bridge is down reaches an MQTT 5 subscriber on the local side when the bridge returns', async (t) => {
      const h = await home(t)
      // A persistent MQTT 5 session (clean start false, kept for an hour); mqtt.js reconnects on its own.
      const ha = await h.local({
        clientId: 'homeassistant',
        clean: false,
        properties: { sessionExpiryInterval: 3600 },
        reconnectPeriod: 100,
      })
      const seen = inbox(ha)
      await ha.subscribeAsync('paku/#', { qos: 1 })
      await h.bridgeUp(1, seen)

      await h.mosquitto.stop('SIGTERM')
      await eventually(async () => (await h.health()).broker.clients === 0, {
        what: 'paku seeing the bridge gone',
      })
      const command = JSON.stringify({
        url: 'http://paku:8080/api/firmware/download/esp32/1.2.0',
        version: '1.2.0',
      })
      await h.sut.app.broker.publish(OTA, command, { qos: 1 })
      await eventually(async () => h.sut.app.broker.queueOf(BRIDGE).messages === 1, {
        what: "the command queued for the bridge's session",
      })
      assert.equal(seen.filter((m) => m.topic === OTA).length, 0)

      const resumed = new Promise<IConnackPacket>((resolve) => ha.once('connect', resolve))
      await h.mosquitto.start()
      assert.equal(
        (await resumed).sessionPresent,
        true,
        'the subscriber’s session survived its broker’s restart (persistence)',
      )
      await eventually(async () => seen.some((m) => m.topic === OTA), {
        what: () => `the command on the local side; mosquitto:\n${h.mosquitto.log()}`,
      })
      await eventually(async () => h.sut.app.broker.queueOf(BRIDGE).messages === 0, {
        what: 'the queue emptied',
      })
      // Positive control: anything after the command comes after a second copy of it.
      await h.bridgeUp(2, seen)
      assert.deepEqual(
        seen.filter((m) => m.topic === OTA),
        [{ topic: OTA, payload: command, qos: 1 }],
      )
    })

    it('the bridge stays connected: paku takes its connection notification on every connect, and publishes its will when the link drops', async (t) => {
      const h = await home(t, { watch: true })
      const ha = await h.local({ clientId: 'homeassistant', reconnectPeriod: 100 })
      const seen = inbox(ha)
      await ha.subscribeAsync('paku/#', { qos: 1 })
      const retained = async () =>
        (
          await h.db.query(
            `SELECT convert_from(payload, 'UTF8') AS p FROM mqtt_retained WHERE topic = $1`,
            [STATE],
          )
        ).rows[0]?.p as string | undefined
      const states = (want: RegExp) =>
        eventually(async () => want.test(h.notifications()), {
          what: () =>
            `notifications ${want}, got "${h.notifications()}"; mosquitto:\n${h.mosquitto.log()}`,
        })

      // The message paku publishes once the bridge is connected arrives over that same connection, after
      // the notification: a connection closed for the notification (CONNACK, PUBLISH $SYS/…, close) never gets there.
      await h.bridgeUp(1, seen)
      await states(/^1$/)
      await eventually(async () => (await retained()) === '1', {
        what: 'the notification kept as a retained message',
      })

      // A clean restart (Home Assistant's host reboots). Debian's Mosquitto 2.0.11 closes the bridge without
      // a DISCONNECT, so paku publishes the bridge's will, "0"; one that sends a DISCONNECT has no will sent.
      await h.mosquitto.stop('SIGTERM')
      await eventually(async () => (await h.health()).broker.clients === 1, {
        what: 'paku seeing the bridge gone',
      })
      await h.mosquitto.start()
      await h.bridgeUp(2, seen)
      await states(/^10?1$/)

      // The link dies (the host crashes): paku publishes the will, and takes the bridge back after.
      await h.mosquitto.stop('SIGKILL')
      await states(/^10?10$/)
      await h.mosquitto.start()
      await h.bridgeUp(3, seen)
      await states(/^10?101$/)
      await eventually(async () => (await retained()) === '1', {
        what: 'the retained state back to "1"',
      })

      const { broker } = await h.health()
      assert.deepEqual(
        {
          connections: broker.connections,
          clients: broker.clients,
          clientErrors: broker.clientErrors,
          authFailures: broker.authFailures,
          denied: broker.denied,
          refusedClientIds: broker.refusedClientIds,
          refusedConnections: broker.refusedConnections,
        },
        {
          connections: 4,
          clients: 2,
          clientErrors: 0,
          authFailures: 0,
          denied: 0,
          refusedClientIds: 0,
          refusedConnections: 0,
        },
        "the watcher's connection and one per start of Mosquitto: none refused, none closed by paku",
      )
    })

    it('stays connected when paku publishes to the bridge while it hands out a reading from that bridge', async (t) => {
      const h = await home(t)
      const ha = await h.local({ clientId: 'homeassistant' })
      const seen = inbox(ha)
      await ha.subscribeAsync('paku/#', { qos: 1 })
      await h.bridgeUp(1, seen)
      const sensor = await h.local({ clientId: 'ruuvi-gateway' })
      for (let i = 0; i < 20; i++) {
        await sensor.publishAsync(DATA, reading(i), { qos: 1 })
        // A command published the moment the reading is stored, while paku may still be handing the reading out.
        while ((await h.stored()).length <= i) await new Promise((r) => setImmediate(r))
        await h.sut.app.broker.publish('paku/edge/ESP32-AABBCCDD/cmd/n', String(i), { qos: 1 })
        await eventually(
          async () => seen.some((m) => m.topic.endsWith('/cmd/n') && m.payload === String(i)),
          { timeoutMs: 2000, what: `command ${i} on the local side` },
        )
      }
      const { broker } = await h.health()
      assert.deepEqual(
        { connections: broker.connections, clientErrors: broker.clientErrors },
        { connections: 1, clientErrors: 0 },
      )
    })
  },
)
