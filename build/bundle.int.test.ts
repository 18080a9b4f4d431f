import assert from 'node:assert/strict'
import { execFile, spawn } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'
import mqtt from 'mqtt'
import pg from 'pg'
import { defer, eventually, testDatabase } from '../scripts/test-helpers.js'
import { bundle } from './bundle.js'

const run = promisify(execFile)
const OUT = `dist/paku-test-${process.pid}.mjs`

describe('the esbuild bundle', () => {
  it('is reproducible and runs every command from one file', async (t) => {
    defer(t, () => rmSync(OUT, { force: true }))
    await bundle(OUT)
    const first = readFileSync(OUT)
    await bundle(OUT)
    assert.ok(first.equals(readFileSync(OUT)), 'the same sources give the same bytes')

    const help = await run(process.execPath, [OUT, '--help'])
    assert.match(help.stdout, /usage: paku <command>/)
    assert.equal(help.stderr, '', 'no warnings at start-up')

    const url = await testDatabase(t)
    const env = {
      ...process.env,
      PAKU_DATABASE_URL: url,
      PAKU_MQTT_PORT: '0',
      PAKU_MQTT_WS_PORT: '0',
      PAKU_HTTP_PORT: '0',
      PAKU_LOG_FORMAT: 'json',
    }
    const migrate = await run(process.execPath, [OUT, 'migrate'], { env })
    assert.match(migrate.stdout, /applied 0001_measurements\.sql/)

    const server = spawn(process.execPath, [OUT, 'serve'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    defer(t, () => server.exitCode === null && server.kill('SIGKILL'))
    let out = ''
    server.stdout.on('data', (b: Buffer) => (out += b.toString()))
    server.stderr.on('data', (b: Buffer) => (out += b.toString()))
    const banner = await eventually(
      async () =>
        out
          .split('\n')
          .map((l) => (l.startsWith('{') ? JSON.parse(l) : {}))
          .find((l) => String(l.msg).endsWith('ready')),
      {
        timeoutMs: 30_000,
        what: () => `ready banner in:\n${out}`,
      },
    )
    const client = await mqtt.connectAsync(banner.mqtt)
    await client.publishAsync(
      'paku/sensors/bundle/data',
      JSON.stringify({ device_id: 'b', metrics: { t: 1 } }),
      { qos: 1 },
    )
    await client.endAsync()
    const exited = new Promise((resolve) => server.on('exit', resolve))
    server.kill('SIGTERM')
    assert.equal(await exited, 0, out)
    assert.doesNotMatch(out, /Warning|ExperimentalWarning/)
    const c = new pg.Client({ connectionString: url })
    await c.connect()
    defer(t, () => c.end())
    assert.equal(
      (await c.query(`SELECT 1 FROM measurements WHERE device_id = 'bundle'`)).rowCount,
      1,
    )
  })
})
