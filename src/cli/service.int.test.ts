import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import * as v from 'valibot'
import { defer, startApp, testConfig, testDatabase } from '../../scripts/test-helpers.js'
import { ConfigSchema } from '../config/index.js'
import { runCli, type CliIo } from './index.js'
import { waitReady } from './service.js'

function io(env: Record<string, string | undefined> = {}) {
  const out: string[] = []
  const err: string[] = []
  const cli: CliIo = {
    env,
    out: (l) => out.push(l),
    err: (l) => err.push(l),
    waitForStop: () => new Promise(() => undefined),
    isTTY: false,
  }
  return { cli, out, err }
}

describe('paku install-service', () => {
  it('writes the repository unit, a closed production config and a private secrets file; keeps them on a second run', async (t) => {
    const root = await mkdtemp(join(tmpdir(), 'paku-root-'))
    defer(t, () => rm(root, { recursive: true, force: true }))
    const first = io()
    assert.equal(
      await runCli(['install-service', '--root', root], first.cli),
      0,
      first.err.join('\n'),
    )
    const unit = await readFile(join(root, 'etc/systemd/system/paku.service'), 'utf8')
    assert.equal(unit, await readFile('build/systemd/paku.service', 'utf8'))
    for (const line of [
      'Type=exec',
      'User=paku',
      'NoNewPrivileges=true',
      'ProtectSystem=strict',
      'StateDirectory=paku',
      'ConfigurationDirectory=paku',
      'Restart=on-failure',
      'ExecStartPost=/usr/local/bin/paku wait-ready --timeout 120',
      'TimeoutStartSec=150',
      'KillMode=mixed',
    ]) {
      assert.match(unit, new RegExp(`^${line.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'), line)
    }
    const config = JSON.parse(
      await readFile(join(root, 'etc/paku/paku.config.json'), 'utf8'),
    ) as unknown
    const parsed = v.parse(ConfigSchema, config)
    assert.equal(parsed.mqtt.allowAnonymous, false, 'production is closed by default')
    assert.equal(parsed.dataDir, '/var/lib/paku')
    assert.equal((await stat(join(root, 'etc/paku/paku.env'))).mode & 0o777, 0o600)
    assert.ok(first.out.some((l) => l.startsWith('wrote /etc/systemd/system/paku.service')))
    assert.ok(first.out.some((l) => /not copying the executable: this is paku from source/.test(l)))

    await writeFile(join(root, 'etc/paku/paku.config.json'), '{"dataDir":"/srv/paku"}')
    const second = io()
    assert.equal(
      await runCli(
        ['install-service', '--root', root, '--user', 'iot', '--bin', '/opt/paku/paku'],
        second.cli,
      ),
      0,
    )
    assert.ok(second.out.includes('kept /etc/paku/paku.config.json (exists)'))
    assert.equal(
      await readFile(join(root, 'etc/paku/paku.config.json'), 'utf8'),
      '{"dataDir":"/srv/paku"}',
    )
    const custom = await readFile(join(root, 'etc/systemd/system/paku.service'), 'utf8')
    assert.match(custom, /^User=iot$/m)
    assert.match(custom, /^ExecStart=\/opt\/paku\/paku serve$/m)
  })

  it('refuses bad options', async () => {
    for (const args of [
      ['--user', 'Root!'],
      ['--bin', 'relative/paku'],
    ]) {
      const r = io()
      assert.equal(await runCli(['install-service', '--dry-run', ...args], r.cli), 2)
      assert.ok(r.err.length > 0)
    }
  })
})

describe('paku wait-ready', () => {
  it('returns once paku answers /health, and fails after its timeout when nothing answers', async (t) => {
    const s = await startApp(t, testConfig({ databaseUrl: await testDatabase(t) }))
    const ok = await waitReady(`${s.httpUrl}/health`, 5000)
    assert.equal(ok.ok, true)
    const none = await waitReady('http://127.0.0.1:9/health', 400)
    assert.equal(none.ok, false)
    assert.match(
      (none as { error: string }).error,
      /not ready after 0 s at http:\/\/127.0.0.1:9\/health/,
    )
    const cli = io({ PAKU_HTTP_PORT: String(new URL(s.httpUrl).port), PAKU_HTTP_HOST: '0.0.0.0' })
    assert.equal(
      await runCli(['wait-ready', '--timeout', '5', '--config', 'paku.config.json'], cli.cli),
      0,
      cli.err.join('\n'),
    )
    assert.match(cli.out[0] ?? '', /^paku ready \(ok\) after \d+ ms$/)
    const bad = io()
    assert.equal(await runCli(['wait-ready', '--timeout', 'soon'], bad.cli), 2)
  })
})
