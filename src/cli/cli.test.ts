import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { readFileSync } from 'node:fs'
import { cliPage, COMMANDS, commandHelp } from './help.js'
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
    for (const name of Object.keys(COMMANDS))
      assert.match(text, new RegExp(`^  ${name} `, 'm'), `${name} in the overview`)
    assert.match(text, /docs\/cli\.md/)
    assert.ok(text.split('\n').length <= 20, 'help stays short')
  })

  it('<command> --help and help <command>: usage, options, an example and the docs page, for every command', async () => {
    for (const [name, h] of Object.entries(COMMANDS)) {
      const a = io({ PAKU_CONFIG: '/does/not/exist.json' })
      assert.equal(await runCli([name, '--help'], a.io), 0, name)
      const text = a.out.join('\n')
      assert.match(
        text,
        new RegExp(`^usage: ${h.usage.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'),
        name,
      )
      assert.match(
        text,
        /^example:\n {2}(\S+ )*(\.\/)?paku /m,
        `${name}: an example that runs paku`,
      )
      assert.match(text, new RegExp(`^docs: ${h.docs}$`, 'm'))
      const b = io()
      assert.equal(await runCli(['help', name], b.io), 0)
      assert.deepEqual(b.out, a.out, `help ${name} is the same text`)
    }
    const c = io()
    assert.equal(await runCli(['help', 'nonsense'], c.io), 0)
    assert.match(c.out.join('\n'), /^usage: paku <command>/m, 'an unknown name gets the overview')
  })

  it("docs/cli.md holds each command's help text as paku prints it", () => {
    const page = readFileSync('docs/cli.md', 'utf8')
    assert.equal(page, cliPage(), 'docs/cli.md is what `npm run cli-docs` writes')
    for (const name of Object.keys(COMMANDS)) {
      assert.ok(
        page.includes(`## ${name}\n\n\`\`\`text\n${commandHelp(name) ?? ''}\n\`\`\`\n`),
        `docs/cli.md: the section of ${name} matches paku ${name} --help`,
      )
    }
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
      'every key and variable: docs/configuration.md',
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

  describe('import-env', () => {
    const OLD = [
      '# the old compose/.env',
      'POSTGRES_USER=paku',
      'POSTGRES_PASSWORD="db pass#1"',
      'POSTGRES_DB=paku',
      'MQTT_USER=edge',
      "MQTT_PASSWORD='mqtt-Secret-1'  # the shared one",
      'OTA_API_KEY=ota-0123456789abcdef0123456789abcdef',
      'PAKU_DOMAIN=iot.example.com',
      'MQTT_HOST=mosquitto',
      '',
    ].join('\n')
    const secrets = ['db pass', 'db%20pass', 'mqtt-Secret-1', 'ota-0123456789abcdef']

    async function tempDir(t: { after: (fn: () => void) => void }) {
      const { mkdtempSync, rmSync } = await import('node:fs')
      const { tmpdir } = await import('node:os')
      const { join } = await import('node:path')
      const dir = mkdtempSync(join(tmpdir(), 'paku-import-env-'))
      t.after(() => rmSync(dir, { recursive: true, force: true }))
      return { dir, join: (name: string) => join(dir, name) }
    }

    it('prints the paku variables with secrets masked, without config or database', async (t) => {
      const { writeFileSync } = await import('node:fs')
      const d = await tempDir(t)
      writeFileSync(d.join('old.env'), OLD)
      const a = io({ PAKU_CONFIG: '/does/not/exist.json' })
      assert.equal(await runCli(['import-env', d.join('old.env')], a.io), 0)
      const text = a.out.join('\n')
      for (const s of secrets) assert.ok(!text.includes(s) && !a.err.join('\n').includes(s), s)
      assert.match(text, /^PAKU_DATABASE_URL=postgres:\/\/paku:\*\*\*@127\.0\.0\.1:5432\/paku$/m)
      assert.match(text, /^PAKU_MQTT_USERNAME=edge$/m)
      assert.match(text, /^PAKU_MQTT_PASSWORD=\*\*\*$/m)
      assert.match(text, /^PAKU_OTA_API_KEY=\*\*\*$/m)
      assert.match(text, /^PAKU_PUBLIC_URL=https:\/\/iot\.example\.com\/ota$/m)
      assert.match(text, /^# MQTT_HOST: where the old collectors found the broker/m)
      assert.deepEqual(a.err, [])
    })

    it('--show-secrets shows the real values', async (t) => {
      const { writeFileSync } = await import('node:fs')
      const d = await tempDir(t)
      writeFileSync(d.join('old.env'), OLD)
      const a = io()
      assert.equal(await runCli(['import-env', d.join('old.env'), '--show-secrets'], a.io), 0)
      const text = a.out.join('\n')
      assert.match(
        text,
        /^PAKU_DATABASE_URL=postgres:\/\/paku:db%20pass%231@127\.0\.0\.1:5432\/paku$/m,
      )
      assert.match(text, /^PAKU_MQTT_PASSWORD=mqtt-Secret-1$/m)
    })

    it('--write creates a 0600 file with the real values, shows the masked ones, and never overwrites without --force', async (t) => {
      const { readFileSync, statSync, writeFileSync } = await import('node:fs')
      const d = await tempDir(t)
      writeFileSync(d.join('old.env'), OLD)
      const target = d.join('paku.env')
      const a = io()
      assert.equal(await runCli(['import-env', d.join('old.env'), '--write', target], a.io), 0)
      assert.equal(statSync(target).mode & 0o777, 0o600)
      const written = readFileSync(target, 'utf8')
      assert.match(written, /^PAKU_MQTT_PASSWORD=mqtt-Secret-1$/m)
      assert.match(written, /^PAKU_OTA_API_KEY=ota-0123456789abcdef0123456789abcdef$/m)
      for (const s of secrets) assert.ok(!a.out.join('\n').includes(s), s)
      assert.equal(a.out.at(-1), `written to ${target} (mode 0600)`)

      writeFileSync(target, 'KEEP=1\n')
      const b = io()
      assert.equal(await runCli(['import-env', d.join('old.env'), '--write', target], b.io), 1)
      assert.deepEqual(b.err, [`import-env: ${target} exists; --force replaces it`])
      assert.deepEqual(b.out, [])
      assert.equal(readFileSync(target, 'utf8'), 'KEEP=1\n')

      const { chmodSync } = await import('node:fs')
      chmodSync(target, 0o644)
      const c = io()
      assert.equal(
        await runCli(['import-env', d.join('old.env'), '--write', target, '--force'], c.io),
        0,
      )
      assert.match(readFileSync(target, 'utf8'), /^PAKU_MQTT_PASSWORD=mqtt-Secret-1$/m)
      assert.equal(statSync(target).mode & 0o777, 0o600, 'an existing file is narrowed to 0600 too')
    })

    it('reports bad lines with their number and what paku would refuse, keeps going, and exits 1', async (t) => {
      const { writeFileSync } = await import('node:fs')
      const d = await tempDir(t)
      writeFileSync(
        d.join('old.env'),
        'MQTT_USER=edge\nnot a line\nOTA_API_KEY=short\nMQTT_PASSWORD=mq\n',
      )
      const a = io()
      assert.equal(await runCli(['import-env', d.join('old.env')], a.io), 1)
      assert.deepEqual(
        a.err.filter((l) => !l.startsWith('warning: PAKU_DOMAIN')),
        [
          `${d.join('old.env')}:2: not KEY=VALUE; skipped`,
          "warning: OTA_API_KEY is 5 characters; paku needs at least 32 and does not start with a shorter one: put a new key from `openssl rand -hex 32` here and into the CI workflow's OTA_API_KEY secret",
          'paku would refuse this configuration: http.adminApiKey (from PAKU_OTA_API_KEY): http.adminApiKey must be at least 32 characters (e.g. openssl rand -hex 32)',
        ],
      )
      assert.match(
        a.out.join('\n'),
        /^PAKU_MQTT_PASSWORD=\*\*\*$/m,
        'the lines after the bad one are read',
      )
    })

    it('exits 1 for a file it cannot read and 2 for usage errors', async (t) => {
      const d = await tempDir(t)
      const a = io()
      assert.equal(await runCli(['import-env', d.join('missing.env')], a.io), 1)
      assert.deepEqual(a.err, [`import-env: cannot read ${d.join('missing.env')} (ENOENT)`])
      const b = io()
      assert.equal(await runCli(['import-env', d.dir], b.io), 1)
      assert.match(b.err.join('\n'), /cannot read .* \(EISDIR\)/)
      for (const args of [
        ['import-env'],
        ['import-env', 'a.env', 'b.env'],
        ['import-env', 'a.env', '--force'],
        ['import-env', 'a.env', '--write'],
      ]) {
        const c = io()
        assert.equal(await runCli(args, c.io), 2, args.join(' '))
        assert.match(
          c.err.join('\n'),
          /usage: paku import-env OLD_ENV_FILE|Option '--write <value>' argument missing/,
        )
      }
    })
  })
})
