import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import mqtt from 'mqtt'
import { defer, testConfig, testDatabase } from '../scripts/test-helpers.js'
import { createApp } from './app.js'
import { sqlDir } from './assets.js'
import { runCli, type CliIo } from './cli/index.js'
import { readSqlDir } from './db/index.js'
import { startFakeOpenApi } from '../scripts/test-support/fake-ecoflow-api.js'
import { createLogger } from './log/index.js'

const SECRETS = {
  admin: 'ADMIN-s3cret-key-0001-padded-to-32-chars',
  mqtt: 'MQTT-s3cret-pass-0002',
  ecoflow: 'ECOFLOW-s3cret-0003',
  db: 'DB-s3cret-pw-0004',
  redis: 'REDIS-s3cret-pw-0005',
  dbQuery: 'DB-QUERY-s3cret-0006',
}

describe('no secret reaches logs or error responses', () => {
  it('across logins, admin errors, EcoFlow failures, check-config and a failed start', async (t) => {
    const lines: string[] = []
    const log = createLogger({ level: 'debug', format: 'json', write: (l) => lines.push(l) })
    const fake = await startFakeOpenApi({
      accessKey: 'AK',
      secretKey: 'the-real-one',
      devices: [{ sn: 'DCABZ8ZE1234567', productName: 'DELTA Pro' }],
    })
    defer(t, () => fake.close())
    const url = await testDatabase(t)
    const config = testConfig({
      databaseUrl: url,
      log: { level: 'debug' },
      http: { adminApiKey: SECRETS.admin },
      mqtt: {
        allowAnonymous: false,
        sharedCredential: { username: 'edge', password: SECRETS.mqtt },
      },
      // A wrong secret: EcoFlow answers 8521, which paku logs.
      ecoflow: {
        accessKey: 'AK',
        secretKey: SECRETS.ecoflow,
        apiUrl: fake.url,
        signing: 'documented',
      },
    })
    const app = createApp({ config, log, migrations: readSqlDir(sqlDir()), version: 't' })
    await app.start()
    defer(t, () => app.stop())
    const http = `http://127.0.0.1:${app.http.address()?.port}`
    const mqttUrl = `mqtt://127.0.0.1:${app.broker.addresses().mqtt?.port}`

    const bodies: string[] = []
    const call = async (path: string, headers: Record<string, string>, init: RequestInit = {}) => {
      const res = await fetch(`${http}${path}`, { ...init, headers })
      bodies.push(await res.text())
    }
    await call('/api/admin/ecoflow/devices', { 'x-api-key': `${SECRETS.admin}x` })
    await call('/api/admin/ecoflow/devices', { authorization: `Bearer ${SECRETS.mqtt}` })
    await call('/api/admin/ecoflow/poll', { 'x-api-key': SECRETS.admin }, { method: 'POST' })
    await call('/health', {})
    for (const password of [SECRETS.mqtt + 'x', SECRETS.admin]) {
      const c = mqtt.connect(mqttUrl, { username: 'edge', password, reconnectPeriod: 0 })
      await new Promise<void>((r) => c.once('error', () => r()).once('close', () => r()))
      c.end(true)
    }
    const ok = await mqtt.connectAsync(mqttUrl, { username: 'edge', password: SECRETS.mqtt })
    await ok.endAsync()

    const out: string[] = []
    const io: CliIo = {
      env: {
        PAKU_DATABASE_URL: `postgres://paku:${SECRETS.db}@127.0.0.1:1/paku`,
        PAKU_ADMIN_API_KEY: SECRETS.admin,
        PAKU_MQTT_PASSWORD: SECRETS.mqtt,
        PAKU_ECOFLOW_SECRET_KEY: SECRETS.ecoflow,
        PAKU_ECOFLOW_ACCESS_KEY: 'AK',
        PAKU_CLUSTER_REDIS_URL: `redis://:${SECRETS.redis}@127.0.0.1:1/0`,
      },
      out: (l) => out.push(l),
      err: (l) => out.push(l),
      waitForStop: () => Promise.resolve('SIGTERM'),
      isTTY: false,
    }
    assert.equal(await runCli(['check-config'], io), 0)
    assert.equal(
      await runCli(['serve'], {
        ...io,
        env: { ...io.env, PAKU_MQTT_PORT: '0', PAKU_HTTP_PORT: '0', PAKU_MQTT_WS_ENABLED: 'false' },
      }),
      1,
      'the database is unreachable',
    )
    // libpq and node-postgres also take the password as a query parameter.
    const queryUrl = {
      ...io.env,
      PAKU_DATABASE_URL: `postgres://paku@127.0.0.1:1/paku?sslmode=disable&password=${SECRETS.dbQuery}`,
    }
    assert.equal(await runCli(['check-config'], { ...io, env: queryUrl }), 0)
    assert.equal(
      await runCli(['serve'], {
        ...io,
        env: {
          ...queryUrl,
          PAKU_MQTT_PORT: '0',
          PAKU_HTTP_PORT: '0',
          PAKU_MQTT_WS_ENABLED: 'false',
        },
      }),
      1,
      'the database is unreachable',
    )
    assert.match(
      out.join('\n'),
      /127\.0\.0\.1:1\/paku\?sslmode=disable&password=\*\*\*/,
      'the query-string password was masked where the URL was shown',
    )
    assert.equal(
      await runCli(['check-config'], {
        ...io,
        env: { ...io.env, PAKU_DATABASE_URL: `mysql://root:${SECRETS.db}@x/y` },
      }),
      1,
    )
    assert.equal(
      await runCli(['check-config'], {
        ...io,
        env: { ...io.env, PAKU_CLUSTER_REDIS_URL: `http://:${SECRETS.redis}@x:6379` },
      }),
      1,
    )

    const everything = [...lines, ...bodies, ...out].join('\n')
    assert.ok(
      lines.some((l) => l.includes('EcoFlow polling failing')),
      'the failing paths really ran',
    )
    assert.ok(lines.some((l) => l.includes('MQTT login refused')))
    assert.match(out.join('\n'), /"secretKey": "\*\*\*"/, 'check-config printed the config, masked')
    assert.match(
      out.join('\n'),
      /postgres:\/\/paku:\*\*\*@127\.0\.0\.1:1\/paku/,
      'the failed start named the database, masked',
    )
    assert.match(
      out.join('\n'),
      /"redisUrl": "redis:\/\/:\*\*\*@127\.0\.0\.1:1\/0"/,
      'check-config printed the Redis URL, masked',
    )
    assert.match(
      out.join('\n'),
      /cluster\.redisUrl must be a redis:\/\/ or rediss:\/\/ URL/,
      'a bad Redis URL is refused without echoing it',
    )
    for (const [name, secret] of Object.entries(SECRETS))
      assert.ok(!everything.includes(secret), `the ${name} secret leaked`)
  })
})
