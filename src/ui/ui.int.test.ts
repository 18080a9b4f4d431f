import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import mqtt from 'mqtt'
import { chromium } from 'playwright-core'
import {
  defer,
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'
import { espImage } from '../../scripts/test-support/esp-image.js'

const KEY = 'ui-test-admin-key-0123456789-padded-to-32-characters'
const MODEL = 'esp32-heater'
const DEVICE = 'ESP32-0017AB01'
const CHROMIUM = process.env.PAKU_CHROMIUM ?? '/usr/bin/chromium'
// CI installs Debian's chromium (.ci/run); on a developer machine without it these tests are skipped, loudly.
const skip =
  !existsSync(CHROMIUM) && !process.env.CI
    ? `${CHROMIUM} not installed (apt-get install chromium)`
    : false

describe('admin UI in a real browser', { skip }, () => {
  it('logs in, uploads a firmware, starts a rollout, sends a command and shows a live message', async (t) => {
    const databaseUrl = await testDatabase(t)
    const s = await startApp(t, testConfig({ databaseUrl, http: { adminApiKey: KEY } }))
    const db = await sqlClient(t, databaseUrl)
    const device = await mqtt.connectAsync(s.mqttUrl, { clientId: DEVICE })
    defer(t, () => device.endAsync())
    await device.publishAsync(
      `paku/edge/${DEVICE}/status`,
      JSON.stringify({
        online: true,
        device_model: MODEL,
        firmware_version: '1.0.0',
        active_scenario: 'default',
      }),
      { qos: 1, retain: true },
    )
    await eventually(
      async () => (await db.query('SELECT 1 FROM devices WHERE device_id = $1', [DEVICE])).rowCount,
    )

    const dir = await mkdtemp(join(tmpdir(), 'paku-ui-'))
    defer(t, () => rm(dir, { recursive: true, force: true }))
    const image = join(dir, 'firmware.bin')
    await writeFile(image, espImage({ size: 8192, version: '1.1.0' }))

    // Root in a container has no user namespaces for Chromium's sandbox; the page is our own.
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu'],
    })
    defer(t, () => browser.close())
    const page = await browser.newPage()
    const problems: string[] = []
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(m.text())
    })
    page.on('pageerror', (e) => problems.push(e.message))

    await page.goto(`${s.httpUrl}/ui/`)
    assert.equal(await page.title(), 'paku admin')
    // Every form control has a label (screen readers name it; clicking the label focuses it).
    assert.deepEqual(
      await page.$$eval('input, select, textarea', (els) =>
        els
          .filter(
            (e) => (e as unknown as { labels: { length: number } | null }).labels?.length === 0,
          )
          .map((e) => e.id),
      ),
      [],
    )

    await page.getByLabel('Admin key').fill('wrong-key')
    await page.getByRole('button', { name: 'Log in' }).click()
    await page.getByRole('alert').filter({ hasText: 'missing or wrong API key' }).waitFor()
    // That refusal is the one failed request the browser may log.
    problems.length = 0
    await page.getByLabel('Admin key').fill(KEY)
    await page.getByRole('button', { name: 'Log in' }).click()
    await page.getByRole('cell', { name: DEVICE }).waitFor()
    await page.getByRole('row', { name: new RegExp(`${DEVICE} online 1\\.0\\.0`) }).waitFor()

    await page.getByRole('link', { name: 'Firmware' }).click()
    const fw = page.locator('#firmware')
    await fw.getByLabel('Device model').fill(MODEL)
    await fw.getByLabel('Version').fill('1.1.0')
    await fw.getByLabel('Image (.bin)').setInputFiles(image)
    await fw.getByRole('button', { name: 'Upload' }).click()
    await fw
      .getByRole('status')
      .filter({ hasText: `Uploaded ${MODEL} 1.1.0 (8192 bytes).` })
      .waitFor()
    await page.getByRole('cell', { name: '1.1.0', exact: true }).waitFor()

    await page.getByRole('link', { name: 'Rollouts' }).click()
    await page.locator('#ro-name').fill('ui-rollout')
    await page.locator('#ro-model').fill(MODEL)
    await page.locator('#ro-version').fill('1.1.0')
    await page.getByRole('button', { name: 'Start rollout' }).click()
    await page
      .locator('#rollouts')
      .getByRole('status')
      .filter({ hasText: 'Rollout ui-rollout started.' })
      .waitFor()
    await page.getByRole('cell', { name: 'ui-rollout', exact: true }).waitFor()
    const rollout = await db.query(
      `SELECT status, firmware_version FROM rollout_configurations WHERE name = 'ui-rollout'`,
    )
    assert.deepEqual(rollout.rows, [{ status: 'running', firmware_version: '1.1.0' }])
    await page.getByRole('button', { name: 'pause ui-rollout' }).click()
    await page.getByRole('row', { name: /ui-rollout .* paused/ }).waitFor()
    await page.getByRole('button', { name: 'resume ui-rollout' }).click()
    await page.getByRole('row', { name: /ui-rollout .* running/ }).waitFor()

    await page.getByRole('link', { name: 'Commands' }).click()
    const cmds = page.locator('#commands')
    await cmds.getByLabel('Device id').fill(DEVICE)
    await cmds.getByLabel('Scenario', { exact: true }).selectOption('heater_active')
    await cmds.getByRole('button', { name: 'Send' }).click()
    await cmds
      .getByRole('status')
      .filter({ hasText: /^Sent cmd_/ })
      .waitFor()
    await device.publishAsync(
      `paku/edge/${DEVICE}/status`,
      JSON.stringify({ online: true, active_scenario: 'heater_active' }),
      { qos: 1 },
    )
    await page
      .getByRole('row', { name: new RegExp(`${DEVICE} control acknowledged`) })
      .waitFor({ timeout: 10_000 })

    await page.getByRole('link', { name: 'Live' }).click()
    await page.getByLabel('Topic filter').fill('paku/sensors/#')
    await page.getByRole('button', { name: 'Start' }).click()
    await page
      .locator('#live')
      .getByRole('status')
      .filter({ hasText: 'Listening on paku/sensors/#' })
      .waitFor()
    await device.publishAsync(
      'paku/heater/ESP32-0017AB01/data',
      JSON.stringify({ device_id: 'x', metrics: { t: 1 } }),
      { qos: 1 },
    )
    await device.publishAsync(
      'paku/sensors/ruuvi_cabin/data',
      JSON.stringify({ device_id: 'ruuvi_cabin', metrics: { temperature_c: 21.25 } }),
      { qos: 1 },
    )
    const item = page.locator('#live-list li').first()
    await item.filter({ hasText: 'paku/sensors/ruuvi_cabin/data' }).waitFor()
    assert.match(await item.innerText(), /temperature_c":21\.25/)
    assert.equal(
      await page.locator('#live-list li').count(),
      1,
      'the filter kept the heater message out',
    )
    await page.getByRole('button', { name: 'Stop' }).click()

    assert.deepEqual(problems, [], 'no script errors or CSP violations')
  })

  it('serves the UI files with their types, a CSP and no other files', async (t) => {
    const databaseUrl = await testDatabase(t)
    const s = await startApp(t, testConfig({ databaseUrl, http: { adminApiKey: KEY } }))
    const cases: Array<[string, number, RegExp | null]> = [
      ['/ui/', 200, /^text\/html/],
      ['/ui/app.js', 200, /^text\/javascript/],
      ['/ui/style.css', 200, /^text\/css/],
      ['/ui/nope.js', 404, null],
      ['/ui/..%2Fpackage.json', 404, null],
      ['/ui/index.ts', 404, null],
    ]
    for (const [path, status, type] of cases) {
      const r = await fetch(`${s.httpUrl}${path}`)
      assert.equal(r.status, status, path)
      if (type) {
        assert.match(r.headers.get('content-type') ?? '', type, path)
        assert.match(
          r.headers.get('content-security-policy') ?? '',
          /default-src 'none'; script-src 'self'/,
        )
        assert.equal(r.headers.get('x-content-type-options'), 'nosniff')
        const again = await fetch(`${s.httpUrl}${path}`, {
          headers: { 'if-none-match': r.headers.get('etag') ?? '' },
        })
        assert.equal(again.status, 304, `${path} revalidates`)
      } else assert.equal(((await r.json()) as { status: number }).status, 404)
    }
    const redirect = await fetch(`${s.httpUrl}/ui`, { redirect: 'manual' })
    assert.equal(redirect.status, 301)
    assert.equal(redirect.headers.get('location'), '/ui/')
  })
})
