import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { runCli, type CliIo } from './index.js'

function io(env: Record<string, string> = {}) {
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

describe('paku cli', () => {
  it('--help works without config or database, even with a broken environment', async () => {
    const t = io({ PAKU_CONFIG: '/does/not/exist.json', PAKU_MQTT_PORT: 'abc' })
    assert.equal(await runCli(['--help'], t.io), 0)
    const text = t.out.join('\n')
    for (const word of ['serve', 'migrate', 'check-config', 'emulate', 'version', 'README']) assert.match(text, new RegExp(word))
    assert.ok(text.split('\n').length <= 14, 'help stays short')
  })

  it('version prints version and commit', async () => {
    const t = io({ PAKU_COMMIT: 'abc123' })
    assert.equal(await runCli(['version'], t.io), 0)
    assert.match(t.out[0] as string, /^paku \d+\.\d+\.\d+ \(abc123\) node v\d+/)
  })

  it('check-config prints the resolved config with the password masked', async () => {
    const t = io({ PAKU_DATABASE_URL: 'postgres://paku:topsecret@db/paku' })
    assert.equal(await runCli(['check-config'], t.io), 0)
    const text = t.out.join('\n')
    assert.doesNotMatch(text, /topsecret/)
    assert.match(text, /config ok \(paku\.config\.json\)/)
    assert.equal(JSON.parse(t.out[0] as string).mqtt.port, 1883)
  })

  it('check-config fails with one "path: message" line per problem and a non-zero exit', async () => {
    const t = io({ PAKU_MQTT_PORT: 'abc', PAKU_HTTP_PORT: '99999' })
    assert.equal(await runCli(['check-config'], t.io), 1)
    assert.deepEqual(t.err, [
      'invalid configuration (paku.config.json):',
      '  PAKU_MQTT_PORT: expected an integer, got "abc"',
      '  http.port (from PAKU_HTTP_PORT): port must be between 0 and 65535',
      'see the configuration table in README.md',
    ])
  })

  it('serve refuses to start on an invalid config before touching anything', async () => {
    const t = io({ PAKU_CONFIG: '/does/not/exist.json' })
    assert.equal(await runCli(['serve'], t.io), 1)
    assert.match(t.err.join('\n'), /\/does\/not\/exist\.json: cannot read config file \(ENOENT\)/)
  })

  it('rejects unknown commands and options with usage', async () => {
    const a = io()
    assert.equal(await runCli(['frobnicate'], a.io), 2)
    assert.match(a.err.join('\n'), /unknown command "frobnicate"/)
    const b = io()
    assert.equal(await runCli(['serve', '--bogus'], b.io), 2)
    assert.match(b.err.join('\n'), /Unknown option '--bogus'/)
  })

  it('grafana export writes the provisioning tree, without config or database', async (t) => {
    const { mkdtempSync, readdirSync, rmSync } = await import('node:fs')
    const { tmpdir } = await import('node:os')
    const { join } = await import('node:path')
    const dir = mkdtempSync(join(tmpdir(), 'paku-grafana-'))
    t.after(() => rmSync(dir, { recursive: true, force: true }))
    const a = io({ PAKU_CONFIG: '/does/not/exist.json' })
    assert.equal(await runCli(['grafana', 'export', dir], a.io), 0)
    assert.deepEqual(readdirSync(join(dir, 'datasources')), ['paku-postgres.yaml'])
    assert.ok(readdirSync(join(dir, 'dashboards', 'paku')).includes('heater-overview.json'))
    const b = io()
    assert.equal(await runCli(['grafana', 'export'], b.io), 2)
    const { writeFileSync } = await import('node:fs')
    writeFileSync(join(dir, 'a-file'), 'x')
    const c = io()
    assert.equal(await runCli(['grafana', 'export', join(dir, 'a-file', 'sub')], c.io), 1)
    assert.match(c.err.join('\n'), /grafana export failed/)
  })

  it('emulate validates its arguments', async () => {
    const a = io()
    assert.equal(await runCli(['emulate', 'toaster'], a.io), 2)
    assert.match(a.err.join('\n'), /emulate needs ruuvi or heater/)
    const b = io()
    assert.equal(await runCli(['emulate', 'ruuvi', '--interval', 'soon'], b.io), 2)
    assert.match(b.err.join('\n'), /--interval must be a positive number/)
  })
})
