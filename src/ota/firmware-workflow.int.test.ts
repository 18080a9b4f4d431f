/**
 * Runs the firmware repository's CI workflow (docs/firmware-ci/ota-update-esp.yaml) step by step with
 * bash, curl and jq against a real paku: the steps that talk to paku, with the environment GitHub
 * Actions would give them. A step that should fail must exit non-zero (the old workflow did not).
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it, type TestContext } from 'node:test'
import { promisify } from 'node:util'
import { parse } from 'yaml'
import {
  defer,
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'
import { createKey } from '../http/index.js'
import { espImage } from '../../scripts/test-support/esp-image.js'
import { PushDevice } from '../../scripts/test-support/ota-devices.js'

const run = promisify(execFile)
const KEY = 'ci-key-0123456789abcdef-padded-to-32-characters'
const MODEL = 'esp32-heater'
const workflowPath = new URL('../../docs/firmware-ci/ota-update-esp.yaml', import.meta.url)

type Step = { id?: string; name?: string; run?: string }

async function steps(): Promise<Map<string, string>> {
  const doc = parse(await readFile(workflowPath, 'utf8')) as { jobs: { ota: { steps: Step[] } } }
  const out = new Map<string, string>()
  for (const s of doc.jobs.ota.steps) if (s.id && s.run) out.set(s.id, s.run)
  return out
}

async function setup(t: TestContext) {
  const databaseUrl = await testDatabase(t)
  const s = await startApp(
    t,
    testConfig({ databaseUrl, http: { adminApiKey: KEY }, ota: { rolloutTickSeconds: 1 } }),
  )
  const db = await sqlClient(t, databaseUrl)
  const dir = await mkdtemp(join(tmpdir(), 'paku-ci-'))
  defer(t, () => rm(dir, { recursive: true, force: true }))
  const all = await steps()
  // The key docs/ota.md, "Firmware CI", tells CI to use: read, upload and rollout, not admin.
  const ciKey = await createKey(s.app.db.db, 'firmware-ci', ['read', 'upload', 'rollout'])
  /** Runs one step's script as Actions would: bash, the job env, GITHUB_OUTPUT; returns exit code, output and the step outputs. */
  const step = async (id: string, env: Record<string, string>) => {
    const script = all.get(id)
    assert.ok(script, `workflow has no step ${id}`)
    const output = join(dir, `out-${id}-${Math.random()}`)
    await writeFile(output, '')
    const base = {
      PATH: process.env.PATH ?? '',
      HOME: dir,
      PAKU_URL: s.httpUrl,
      PAKU_API_KEY: ciKey,
      DEVICE_MODEL: MODEL,
      DEVICE_FAMILY: '',
      STRATEGY: 'full',
      TEST_DEVICES: '',
      RELEASE_NOTES: 'CI build',
      WAIT_MINUTES: '0',
      RUN_ID: '42-1',
      GITHUB_OUTPUT: output,
      GITHUB_ENV: join(dir, 'env'),
      POLL_SECONDS: '1',
    }
    let code = 0
    let text = ''
    try {
      const r = await run('bash', ['-e', '-c', script], { cwd: dir, env: { ...base, ...env } })
      text = r.stdout + r.stderr
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string }
      code = e.code
      text = e.stdout + e.stderr
    }
    const outputs = Object.fromEntries(
      (await readFile(output, 'utf8'))
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split('=', 2) as [string, string]),
    )
    return { code, text, outputs }
  }
  return { ...s, db, dir, step }
}

describe('the firmware CI workflow against paku', () => {
  it('uploads, reuses an identical upload, refuses a changed one, and starts each kind of rollout', async (t) => {
    const s = await setup(t)
    const fw = join(s.dir, 'firmware.bin')
    await writeFile(fw, espImage({ size: 50_000 }))
    const env = { VERSION: '1.4.2', FIRMWARE: fw }
    assert.equal((await s.step('preflight', {})).code, 0)
    const check = await s.step('check', env)
    assert.equal(check.code, 0, check.text)
    assert.equal(check.outputs.exists, 'false')
    const up = await s.step('upload', env)
    assert.equal(up.code, 0, up.text)
    assert.match(up.text, /uploaded 1\.4\.2 [0-9a-f]{64}/)
    assert.equal(
      (
        await s.db.query('SELECT release_notes FROM firmware_releases WHERE version = $1', [
          '1.4.2',
        ])
      ).rows[0].release_notes,
      'CI build',
    )
    const full = await s.step('rollout', { ...env, STRATEGY: 'full' })
    assert.equal(full.code, 0, full.text)
    const r1 = (
      await s.db.query(
        'SELECT name, target_type, target_filter FROM rollout_configurations WHERE id = $1',
        [full.outputs.id],
      )
    ).rows[0]
    assert.deepEqual(r1, {
      name: `${MODEL}-1.4.2-full-42-1`,
      target_type: 'all',
      target_filter: null,
    })

    // A re-run of the same tag: the release is reused, not uploaded again.
    const again = await s.step('check', env)
    assert.equal(again.code, 0, again.text)
    assert.equal(again.outputs.exists, 'true')
    const staged = await s.step('rollout', {
      ...env,
      STRATEGY: 'staged',
      RUN_ID: '43-1',
      DEVICE_FAMILY: 'lilygo-t-display-s3',
    })
    assert.equal(staged.code, 0, staged.text)
    const r2 = (
      await s.db.query(
        'SELECT stages, auto_advance, error_threshold_percent, target_filter FROM rollout_configurations WHERE id = $1',
        [staged.outputs.id],
      )
    ).rows[0]
    assert.deepEqual(r2, {
      stages: [10, 25, 50, 100],
      auto_advance: true,
      error_threshold_percent: 20,
      target_filter: { device_models: ['lilygo-t-display-s3'] },
    })
    const single = await s.step('rollout', {
      ...env,
      STRATEGY: 'single-device',
      TEST_DEVICES: 'ESP32-A, ESP32-B',
      RUN_ID: '44-1',
    })
    assert.equal(single.code, 0, single.text)
    assert.deepEqual(
      (
        await s.db.query(
          'SELECT target_type, target_filter FROM rollout_configurations WHERE id = $1',
          [single.outputs.id],
        )
      ).rows[0],
      { target_type: 'specific', target_filter: { device_ids: ['ESP32-A', 'ESP32-B'] } },
    )
    const canary = await s.step('rollout', { ...env, STRATEGY: 'canary-25', RUN_ID: '45-1' })
    assert.equal(canary.code, 0, canary.text)
    assert.deepEqual(
      (
        await s.db.query(
          'SELECT target_type, rollout_percentage FROM rollout_configurations WHERE id = $1',
          [canary.outputs.id],
        )
      ).rows[0],
      { target_type: 'canary', rollout_percentage: 25 },
    )

    // The same tag with other bytes: the check fails loudly instead of overwriting (or deleting) the release.
    await writeFile(fw, espImage({ size: 50_000 }))
    const changed = await s.step('check', env)
    assert.notEqual(changed.code, 0)
    assert.match(changed.text, /already uploaded with different content/)
  })

  it('fails loudly: wrong key, unreachable paku, a refused image, an impossible rollout', async (t) => {
    const s = await setup(t)
    const fw = join(s.dir, 'firmware.bin')
    await writeFile(fw, espImage({ size: 5000 }))
    const env = { VERSION: '1.4.2', FIRMWARE: fw }
    const wrongKey = await s.step('check', { ...env, PAKU_API_KEY: 'wrong' })
    assert.notEqual(wrongKey.code, 0)
    assert.match(wrongKey.text, /checking the release failed: HTTP 401/)
    const upWrong = await s.step('upload', { ...env, PAKU_API_KEY: 'wrong' })
    assert.notEqual(upWrong.code, 0)
    assert.match(upWrong.text, /upload failed: .*API key/)
    const down = await s.step('preflight', { PAKU_URL: 'http://127.0.0.1:9' })
    assert.notEqual(down.code, 0)
    assert.match(down.text, /unreachable/)
    const noKey = await s.step('preflight', { PAKU_API_KEY: '' })
    assert.notEqual(noKey.code, 0)
    await writeFile(fw, Buffer.from('this is not an ESP image'))
    const bad = await s.step('upload', env)
    assert.notEqual(bad.code, 0)
    assert.match(bad.text, /upload failed: .*0xe9/)
    const missing = await s.step('rollout', { ...env, VERSION: '9.9.9' })
    assert.notEqual(missing.code, 0)
    assert.match(missing.text, /creating the rollout failed: .*upload it before/)
    const noDevices = await s.step('rollout', { ...env, STRATEGY: 'single-device' })
    assert.notEqual(noDevices.code, 0)
  })

  it('waits for the rollout: exit 0 when the devices updated, non-zero when it pauses on errors', async (t) => {
    const s = await setup(t)
    const fw = join(s.dir, 'firmware.bin')
    await writeFile(fw, espImage({ size: 5000 }))
    const good = new PushDevice({
      mqttUrl: s.mqttUrl,
      id: 'ESP32-CI000001',
      model: MODEL,
      version: '1.4.1',
    })
    await good.connect()
    defer(t, () => good.disconnect())
    await eventually(
      async () =>
        (await s.db.query(`SELECT 1 FROM devices WHERE device_id = 'ESP32-CI000001'`)).rowCount,
    )
    const env = { VERSION: '1.4.2', FIRMWARE: fw, WAIT_MINUTES: '1' }
    assert.equal((await s.step('upload', env)).code, 0)
    const r = await s.step('rollout', {
      ...env,
      STRATEGY: 'single-device',
      TEST_DEVICES: 'ESP32-CI000001',
    })
    assert.equal(r.code, 0, r.text)
    const waited = await s.step('wait', { ...env, ROLLOUT_ID: r.outputs.id as string })
    assert.equal(waited.code, 0, waited.text)
    assert.match(waited.text, /completed/)
    assert.equal(good.version, '1.4.2')

    await writeFile(fw, espImage({ size: 5000 }))
    const bad = new PushDevice({
      mqttUrl: s.mqttUrl,
      id: 'ESP32-CI000002',
      model: MODEL,
      version: '1.4.2',
      failWith: { code: 8, message: 'Insufficient space' },
    })
    await bad.connect()
    defer(t, () => bad.disconnect())
    assert.equal((await s.step('upload', { ...env, VERSION: '1.4.3' })).code, 0)
    const fails = await fetch(`${s.httpUrl}/api/admin/rollouts`, {
      method: 'POST',
      headers: { 'x-api-key': KEY, 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'will-pause',
        firmware_version: '1.4.3',
        device_model: MODEL,
        target_type: 'specific',
        target_device_ids: ['ESP32-CI000002'],
        error_threshold: { count: 1 },
      }),
    })
    const id = ((await fails.json()) as { id: number }).id
    const paused = await s.step('wait', { ...env, ROLLOUT_ID: String(id) })
    assert.notEqual(paused.code, 0)
    assert.match(paused.text, /rollout paused: error threshold/)
  })
})
