import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
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

/** A private CA, a server certificate for localhost/127.0.0.1 and a device client certificate, with openssl. */
function pki(dir: string) {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' })
  ssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '2',
    '-subj',
    '/CN=paku-test-ca',
  )
  const issue = (name: string, cn: string, ext: string) => {
    ssl(
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.csr`,
      '-subj',
      `/CN=${cn}`,
    )
    writeFileSync(join(dir, `${name}.ext`), ext)
    ssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
    )
  }
  issue('server', 'paku-mqtt', 'subjectAltName=DNS:localhost,IP:127.0.0.1\n')
  issue('server2', 'paku-mqtt-renewed', 'subjectAltName=DNS:localhost,IP:127.0.0.1\n')
  issue('device', 'ESP32-CAFEBABE', 'extendedKeyUsage=clientAuth\n')
  const f = (n: string) => join(dir, n)
  return {
    ca: f('ca.crt'),
    cert: f('server.crt'),
    key: f('server.key'),
    cert2: f('server2.crt'),
    key2: f('server2.key'),
    deviceCert: f('device.crt'),
    deviceKey: f('device.key'),
  }
}

function peerCN(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ca: readFileSync(ca) }, () => {
      resolve(String(s.getPeerCertificate().subject.CN))
      s.end()
    })
    s.on('error', reject)
  })
}

describe('MQTT over TLS', () => {
  it('serves TLS and WebSocket over TLS with a private CA, logs devices in by client certificate, and reloads certificates without dropping connections', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'paku-tls-'))
    defer(t, () => rmSync(dir, { recursive: true, force: true }))
    const p = pki(dir)
    const live = { cert: join(dir, 'live.crt'), key: join(dir, 'live.key') }
    writeFileSync(live.cert, readFileSync(p.cert))
    writeFileSync(live.key, readFileSync(p.key))
    const url = await testDatabase(t)
    const sut = await startApp(
      t,
      testConfig({
        databaseUrl: url,
        mqtt: {
          allowAnonymous: false,
          sharedCredential: { username: 'edge', password: 'shared-secret' },
          tls: {
            enabled: true,
            host: '127.0.0.1',
            port: 0,
            wsPort: 0,
            certFile: live.cert,
            keyFile: live.key,
            caFile: p.ca,
          },
        },
      }),
    )
    const db = await sqlClient(t, url)
    const { mqtts, wss } = sut.app.broker.addresses()
    const ca = readFileSync(p.ca)

    // Password login over TLS, the way paku-core and the HA bridge connect to port 8883.
    const bridge = await mqtt.connectAsync(`mqtts://127.0.0.1:${mqtts?.port}`, {
      ca,
      username: 'edge',
      password: 'shared-secret',
      reconnectPeriod: 0,
    })
    defer(t, () => bridge.endAsync())
    await bridge.publishAsync(
      'paku/sensors/tls/data',
      JSON.stringify({ device_id: 'tls', metrics: { t: 1 } }),
      { qos: 1 },
    )

    // A device with a client certificate needs no password; its CN is its device id (and its client id) and scope.
    const deviceTls = {
      ca,
      cert: readFileSync(p.deviceCert),
      key: readFileSync(p.deviceKey),
      reconnectPeriod: 0,
    }
    await assert.rejects(
      mqtt.connectAsync(`mqtts://127.0.0.1:${mqtts?.port}`, {
        ...deviceTls,
        clientId: 'ESP32-00000000',
      }),
      /Identifier rejected/,
    )
    const device = await mqtt.connectAsync(`mqtts://127.0.0.1:${mqtts?.port}`, {
      ...deviceTls,
      clientId: 'ESP32-CAFEBABE',
    })
    defer(t, () => device.endAsync(true))
    await device.publishAsync(
      'paku/edge/ESP32-CAFEBABE/status',
      JSON.stringify({ online: true, device_model: 'lilygo-t-display-s3' }),
      { qos: 1 },
    )

    const ws = await mqtt.connectAsync(`wss://127.0.0.1:${wss?.port}/mqtt`, {
      ca,
      username: 'edge',
      password: 'shared-secret',
      reconnectPeriod: 0,
    })
    defer(t, () => ws.endAsync())
    await ws.publishAsync(
      'paku/sensors/wss/data',
      JSON.stringify({ device_id: 'wss', metrics: { t: 1 } }),
      { qos: 1 },
    )
    await eventually(async () => (await db.query('SELECT 1 FROM measurements')).rowCount === 2, {
      what: 'TLS and WSS rows',
    })
    assert.equal(
      (await db.query(`SELECT 1 FROM edge_device_status WHERE device_id = 'ESP32-CAFEBABE'`))
        .rowCount,
      1,
    )

    // Without credentials or a certificate, TLS alone does not let a client in.
    await assert.rejects(
      mqtt.connectAsync(`mqtts://127.0.0.1:${mqtts?.port}`, {
        ca,
        reconnectPeriod: 0,
        connectTimeout: 3000,
      }),
      /Not authorized/,
    )

    // SIGHUP: new certificate for new connections; the open ones stay.
    assert.equal(await peerCN(mqtts?.port as number, p.ca), 'paku-mqtt')
    writeFileSync(live.cert, readFileSync(p.cert2))
    writeFileSync(live.key, readFileSync(p.key2))
    sut.app.broker.reloadTls()
    assert.equal(await peerCN(mqtts?.port as number, p.ca), 'paku-mqtt-renewed')
    assert.equal(bridge.connected, true)
    await bridge.publishAsync(
      'paku/sensors/tls/data',
      JSON.stringify({ device_id: 'tls', metrics: { t: 2 } }),
      { qos: 1 },
    )
    await eventually(async () => (await db.query('SELECT 1 FROM measurements')).rowCount === 3, {
      what: 'a row after the reload',
    })

    // A broken file on reload keeps the running certificate.
    writeFileSync(live.cert, 'not a certificate')
    assert.throws(() => sut.app.broker.reloadTls())
    assert.equal(await peerCN(mqtts?.port as number, p.ca), 'paku-mqtt-renewed')
  })

  it('takes anonymous clients per listener, as the old stack did: plain 1883 open on the LAN, 8883 TLS with a password', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'paku-tls-'))
    defer(t, () => rmSync(dir, { recursive: true, force: true }))
    const p = pki(dir)
    const url = await testDatabase(t)
    const sut = await startApp(
      t,
      testConfig({
        databaseUrl: url,
        mqtt: {
          allowAnonymous: true,
          sharedCredential: { username: 'edge', password: 'shared-secret' },
          ws: { allowAnonymous: false },
          tls: {
            enabled: true,
            host: '127.0.0.1',
            port: 0,
            wsPort: 0,
            certFile: p.cert,
            keyFile: p.key,
            allowAnonymous: false,
          },
        },
      }),
    )
    const { mqtt: plain, mqtts, wss } = sut.app.broker.addresses()
    const ca = readFileSync(p.ca)
    const anonymous = await mqtt.connectAsync(`mqtt://127.0.0.1:${plain?.port}`, {
      reconnectPeriod: 0,
    })
    await anonymous.endAsync()
    await assert.rejects(
      mqtt.connectAsync(`mqtts://127.0.0.1:${mqtts?.port}`, {
        ca,
        reconnectPeriod: 0,
        connectTimeout: 3000,
      }),
      /Not authorized/,
    )
    await assert.rejects(
      mqtt.connectAsync(`wss://127.0.0.1:${wss?.port}/mqtt`, {
        ca,
        reconnectPeriod: 0,
        connectTimeout: 3000,
      }),
      /Not authorized/,
    )
    await assert.rejects(
      mqtt.connectAsync(sut.wsUrl, { reconnectPeriod: 0, connectTimeout: 3000 }),
      /Not authorized/,
      'plain WebSocket closed too',
    )
    const withPassword = await mqtt.connectAsync(`mqtts://127.0.0.1:${mqtts?.port}`, {
      ca,
      username: 'edge',
      password: 'shared-secret',
      reconnectPeriod: 0,
    })
    await withPassword.endAsync()
  })

  it('refuses to start with a missing certificate file, naming it', async (t) => {
    const url = await testDatabase(t)
    const { createApp } = await import('../app.js')
    const { readSqlDir } = await import('../db/index.js')
    const { sqlDir } = await import('../assets.js')
    const { testLogger } = await import('../../scripts/test-helpers.js')
    const app = createApp({
      config: testConfig({
        databaseUrl: url,
        mqtt: {
          tls: {
            enabled: true,
            port: 0,
            certFile: '/nope/server.crt',
            keyFile: '/nope/server.key',
          },
        },
      }),
      log: testLogger(),
      migrations: readSqlDir(sqlDir()),
      version: 't',
    })
    await assert.rejects(
      app.start(),
      /start broker: mqtt\.tls\.certFile: cannot read \/nope\/server\.crt \(ENOENT\)/,
    )
  })
})
