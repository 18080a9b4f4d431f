/**
 * The single executable: built from this checkout with the pinned Node 24 runtime, run from a
 * directory with no repository files (everything it needs is inside), byte-for-byte reproducible.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'
import { gitCommit } from '../src/assets.js'
import { buildExecutable } from './sea.js'

const run = promisify(execFile)
const sha = async (p: string) =>
  createHash('sha256')
    .update(await readFile(p))
    .digest('hex')

async function tree(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true }))
    if (e.isFile()) out.push(relative(dir, join(e.parentPath, e.name)))
  return out.sort()
}

describe('dist/paku, the single executable', () => {
  it('is reproducible, carries its assets, and runs with no repository around it and no warnings', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'paku-sea-'))
    t.after(() => rm(dir, { recursive: true, force: true }))
    const a = await buildExecutable(join(dir, 'a', 'paku'))
    const b = await buildExecutable(join(dir, 'b', 'paku'))
    assert.equal(a.sha256, b.sha256, 'same commit, same executable')
    assert.equal(await sha(a.path), a.sha256)
    assert.ok(a.bytes > 50 * 1048576, 'it contains a Node runtime')
    // The bundle's `debug` is the stand-in (build/debug-when-enabled.cjs), not the package's own entry.
    const bundle = await readFile(join('dist', 'sea', 'paku.cjs'), 'utf8')
    assert.match(bundle, /"debugWhenEnabled"/)
    assert.doesNotMatch(
      bundle,
      /Detect Electron renderer|process\.__nwjs/,
      "debug's own entry (src/index.js) is not bundled",
    )

    const cwd = await mkdtemp(join(tmpdir(), 'paku-empty-'))
    t.after(() => rm(cwd, { recursive: true, force: true }))
    const env = { PATH: process.env.PATH ?? '', HOME: cwd }
    const version = await run(a.path, ['version'], { cwd, env })
    assert.equal(version.stdout.trim(), `paku 0.1.0 (${gitCommit(process.cwd())}) node v24.21.0`)
    assert.equal(version.stderr, '', 'no warnings at start-up')
    const help = await run(a.path, ['--help'], { cwd, env })
    assert.match(help.stdout, /install-service/)
    const check = await run(a.path, ['check-config'], {
      cwd,
      env: { ...env, PAKU_MQTT_PORT: '1999' },
    })
    assert.match(check.stdout, /"port": 1999/)
    assert.match(check.stdout, /config ok \(defaults\)/)

    // Assets: the Grafana tree comes out of the executable exactly as it is in the repository.
    const out = join(cwd, 'grafana')
    await run(a.path, ['grafana', 'export', out], { cwd, env })
    const want = await tree('grafana-provisioning')
    assert.deepEqual(await tree(out), want)
    for (const f of want)
      assert.equal(await sha(join(out, f)), await sha(join('grafana-provisioning', f)), f)
    // And the unit install-service writes.
    const root = join(cwd, 'root')
    const installed = await run(a.path, ['install-service', '--root', root], { cwd, env })
    assert.match(
      installed.stdout,
      new RegExp(
        `installed ${a.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} as /usr/local/bin/paku`,
      ),
    )
    assert.equal(
      await readFile(join(root, 'etc/systemd/system/paku.service'), 'utf8'),
      await readFile('build/systemd/paku.service', 'utf8'),
    )
    assert.equal(await sha(join(root, 'usr/local/bin/paku')), a.sha256)
  })
})
