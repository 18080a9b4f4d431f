import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import pg from 'pg'
import {
  freePort,
  logRecords as logs,
  runPaku as paku,
  signalGroup as killGroup,
  stopGroup,
} from '../../scripts/local-process.js'
import {
  defer,
  eventually,
  pakuReady as ready,
  pgProxy,
  testDatabase,
  testLogger,
} from '../../scripts/test-helpers.js'
import { sqlDir } from '../assets.js'
import { createEmbeddedPostgres, readSqlDir } from '../db/index.js'

describe('paku serve as a process', () => {
  it('fresh machine: embedded PostgreSQL, emulator rows, Ctrl-C flushes everything and leaves no postgres behind', async (t) => {
    const dataDir = mkdtempSync(join(tmpdir(), 'paku-serve-'))
    defer(t, () => rmSync(dataDir, { recursive: true, force: true }))
    const env = {
      PAKU_DATA_DIR: dataDir,
      PAKU_DATABASE_URL: '',
      PAKU_DATABASE_EMBEDDED_PORT: String(await freePort()),
      PAKU_MQTT_PORT: '0',
      PAKU_MQTT_WS_PORT: '0',
      PAKU_HTTP_PORT: '0',
      // Rows can only reach the database through the shutdown flush.
      PAKU_INGEST_FLUSH_INTERVAL_MS: '60000',
    }
    const server = paku(['serve'], env)
    defer(t, () => stopGroup(server.child))
    const banner = await ready(server)
    assert.equal(banner.migrationsApplied, readSqlDir(sqlDir()).length)
    assert.match(String(banner.database), /^embedded postgres:\/\/paku:\*\*\*@127\.0\.0\.1:/)

    const emulator = paku(
      [
        'emulate',
        'ruuvi',
        '--count',
        '3',
        '--interval',
        '0.1',
        '--legacy',
        '--url',
        String(banner.mqtt),
      ],
      env,
    )
    assert.equal(await emulator.exited, 0, emulator.lines.join('\n'))
    assert.match(emulator.lines.join('\n'), /published 12 messages in 3 rounds/)

    const health = (await (await fetch(String(banner.http))).json()) as {
      ingest: { accepted: number; written: number }
    }
    assert.equal(health.ingest.accepted, 12)
    assert.equal(health.ingest.written, 0)

    // Ctrl-C in a terminal signals the whole process group.
    killGroup(server.child, 'SIGINT')
    assert.equal(await server.exited, 0, server.lines.join('\n'))
    const stopped = logs(server.lines).find((l) => l.msg === 'stopped')
    assert.equal(stopped?.written, 12)
    assert.equal(
      existsSync(join(dataDir, 'postgres', 'postmaster.pid')),
      false,
      'postgres stopped with paku',
    )

    // The rows are really there: start the same cluster again and look.
    const again = createEmbeddedPostgres({
      dataDir,
      port: Number(env.PAKU_DATABASE_EMBEDDED_PORT),
      log: testLogger(),
    })
    await again.start()
    defer(t, () => again.stop())
    const c = new pg.Client({ connectionString: again.url() })
    await c.connect()
    defer(t, () => c.end())
    const { rows } = await c.query(
      `SELECT device_id, count(*)::int AS n FROM measurements GROUP BY device_id ORDER BY device_id`,
    )
    assert.deepEqual(
      rows,
      [
        { device_id: 'ruuvi_cabin', n: 3 },
        { device_id: 'ruuvi_van_inside', n: 3 },
        { device_id: 'cabin', n: 3 },
        { device_id: 'van_inside', n: 3 },
      ].sort((a, b) => a.device_id.localeCompare(b.device_id)),
    )
  })

  it('SIGTERM with an external database: flushes and exits 0; a second start applies no migration', async (t) => {
    const url = await testDatabase(t)
    const env = {
      PAKU_DATABASE_URL: url,
      PAKU_MQTT_PORT: '0',
      PAKU_MQTT_WS_ENABLED: 'false',
      PAKU_HTTP_PORT: '0',
      PAKU_INGEST_FLUSH_INTERVAL_MS: '60000',
    }
    const first = paku(['serve'], env)
    defer(t, () => stopGroup(first.child))
    const banner = await ready(first)
    const heater = paku(
      ['emulate', 'heater', '--count', '2', '--interval', '0.1', '--url', String(banner.mqtt)],
      env,
    )
    assert.equal(await heater.exited, 0, heater.lines.join('\n'))
    first.child.kill('SIGTERM')
    assert.equal(await first.exited, 0)

    const migrate = paku(['migrate'], env)
    assert.equal(await migrate.exited, 0)
    assert.ok(migrate.lines.includes('no pending migrations'), migrate.lines.join('\n'))

    const c = new pg.Client({ connectionString: url })
    await c.connect()
    defer(t, () => c.end())
    const { rows } = await c.query(
      `SELECT site_id, system, device_id, metrics->>'heater_state' AS state FROM measurements`,
    )
    // The heater emulator's /state topic is HA's and is not stored; /data is, under the topic's device id.
    assert.deepEqual(rows, [
      { site_id: 'paku', system: 'heater', device_id: 'emu01', state: 'Off' },
      { site_id: 'paku', system: 'heater', device_id: 'emu01', state: 'Off' },
    ])
  })

  it('refuses to start, with an actionable message, when the database is unreachable', async () => {
    const p = paku(['serve'], {
      PAKU_DATABASE_URL: 'postgres://paku:pw@127.0.0.1:1/paku',
      PAKU_MQTT_PORT: '0',
      PAKU_HTTP_PORT: '0',
      PAKU_MQTT_WS_ENABLED: 'false',
    })
    assert.equal(await p.exited, 1)
    const text = p.lines.join('\n')
    assert.match(
      text,
      /start db: database: connect postgres:\/\/paku:\*\*\*@127\.0\.0\.1:1\/paku: .*ECONNREFUSED.* set PAKU_DATABASE_URL/,
    )
    assert.doesNotMatch(text, /:pw@/)
  })
})

describe('crashes', () => {
  it('kill -9 mid-load loses no acknowledged message, and a redelivery after restart is not a duplicate', async (t) => {
    const url = await testDatabase(t)
    const dataDir = mkdtempSync(join(tmpdir(), 'paku-kill-'))
    defer(t, () => rmSync(dataDir, { recursive: true, force: true }))
    const mqttPort = String(await freePort())
    const env = {
      PAKU_DATABASE_URL: url,
      PAKU_DATA_DIR: dataDir,
      PAKU_MQTT_PORT: mqttPort,
      PAKU_MQTT_WS_ENABLED: 'false',
      PAKU_HTTP_PORT: '0',
    }
    const first = paku(['serve'], env)
    defer(t, () => stopGroup(first.child))
    await ready(first)

    // Ten devices publish QoS 1 as fast as their acks come back; the client keeps unacked messages
    // in its in-flight store and redelivers them (DUP) when it reconnects to the restarted paku.
    const { default: mqtt } = await import('mqtt')
    const acked = new Set<string>()
    let stop = false
    const clients = await Promise.all(
      Array.from({ length: 10 }, (_, d) =>
        mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, {
          clientId: `ESP32-KILL${d}`,
          clean: false,
          reconnectPeriod: 200,
        }),
      ),
    )
    defer(t, () => Promise.all(clients.map((c) => c.endAsync(true))))
    const loops = clients.map(async (c, d) => {
      for (let i = 0; !stop; i++) {
        await c.publishAsync(
          `paku/sensors/kill${d}/data`,
          JSON.stringify({ device_id: `kill${d}`, metrics: { i } }),
          { qos: 1 },
        )
        acked.add(`kill${d}:${i}`)
      }
    })
    await eventually(async () => acked.size >= 500, {
      timeoutMs: 30_000,
      what: '500 acknowledged messages',
    })
    killGroup(first.child, 'SIGKILL')
    await first.exited
    const ackedAtKill = acked.size

    const second = paku(['serve'], env)
    defer(t, () => stopGroup(second.child))
    await ready(second)
    await eventually(async () => acked.size >= ackedAtKill + 200, {
      timeoutMs: 30_000,
      what: '200 more after the restart',
    })
    stop = true
    await Promise.all(loops)
    second.child.kill('SIGTERM')
    assert.equal(await second.exited, 0)

    const c = new pg.Client({ connectionString: url })
    await c.connect()
    defer(t, () => c.end())
    const { rows } = await c.query(
      `SELECT device_id || ':' || (metrics->>'i') AS k, count(*)::int AS n FROM measurements GROUP BY 1`,
    )
    const stored = new Map(rows.map((r) => [r.k as string, r.n as number]))
    const lost = [...acked].filter((k) => !stored.has(k))
    const duplicated = rows.filter((r) => r.n > 1).map((r) => r.k)
    assert.deepEqual(lost, [], 'every acknowledged message is stored')
    assert.deepEqual(duplicated, [], 'no message is stored twice')
  })
})

describe('SIGTERM during a database outage', () => {
  it('spools what is buffered, exits 0 within the deadline, and the next start writes it', async (t) => {
    const url = await testDatabase(t)
    const proxy = await pgProxy(t, url)
    const dataDir = mkdtempSync(join(tmpdir(), 'paku-outage-'))
    defer(t, () => rmSync(dataDir, { recursive: true, force: true }))
    const env = {
      PAKU_DATABASE_URL: proxy.url,
      PAKU_DATA_DIR: dataDir,
      PAKU_MQTT_PORT: '0',
      PAKU_MQTT_WS_ENABLED: 'false',
      PAKU_HTTP_PORT: '0',
      PAKU_INGEST_FLUSH_INTERVAL_MS: '60000',
    }
    const server = paku(['serve'], env)
    defer(t, () => stopGroup(server.child))
    const banner = await ready(server)
    proxy.cut()
    const { default: mqtt } = await import('mqtt')
    const client = await mqtt.connectAsync(String(banner.mqtt))
    for (let i = 0; i < 30; i++)
      await client.publishAsync(
        'paku/sensors/out/data',
        JSON.stringify({ device_id: 'o', metrics: { i } }),
        { qos: 0 },
      )
    await client.endAsync()
    // Signalled once paku has taken all 30 into its buffer (QoS 0: nothing acknowledges them).
    await eventually(
      async () =>
        (
          (await (await fetch(String(banner.http))).json()) as {
            ingest: { accepted: number }
          }
        ).ingest.accepted === 30,
      { what: '30 messages accepted' },
    )
    const t0 = Date.now()
    server.child.kill('SIGTERM')
    assert.equal(await server.exited, 0, server.lines.join('\n'))
    assert.ok(Date.now() - t0 < 15_000)
    proxy.restore()
    const next = paku(['serve'], { ...env, PAKU_DATABASE_URL: url })
    defer(t, () => stopGroup(next.child))
    await ready(next)
    const c = new pg.Client({ connectionString: url })
    await c.connect()
    defer(t, () => c.end())
    await eventually(async () => (await c.query('SELECT 1 FROM measurements')).rowCount === 30, {
      timeoutMs: 10_000,
      what: '30 rows from the spool',
    })
    next.child.kill('SIGTERM')
    assert.equal(await next.exited, 0)
  })
})
