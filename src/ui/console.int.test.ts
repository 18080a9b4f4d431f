/**
 * The console in a real browser (Debian's Chromium through playwright-core) against a running paku fed
 * by the emulators (src/emulate), paku-core-like devices (scripts/test-support/ota-devices.ts) and a fake EcoFlow
 * cloud over real HTTP: first run, the fleet, device pages, rollouts, the live view, and a phone.
 */
import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import mqtt from 'mqtt'
import type { Browser, Page } from 'playwright-core'
import { hasChromium, launchChromium, openDevicePage, CHROMIUM } from '../../scripts/console-kit.js'
import {
  defer,
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'
import { startFakeOpenApi } from '../../scripts/test-support/fake-ecoflow-api.js'
import { runEmulator } from '../emulate/index.js'
import { createLogger } from '../log/index.js'
import { PushDevice } from '../../scripts/test-support/ota-devices.js'
import { espImage } from '../../scripts/test-support/esp-image.js'

const KEY = 'console-test-admin-key-0123456789-padded-to-32'
const MODEL = 'esp32-heater'
const SN = 'DCABZ8ZE1234567'
// CI installs Debian's chromium (.ci/run); on a developer machine without it these tests are skipped, loudly.
const skip =
  !hasChromium() && !process.env.CI ? `${CHROMIUM} not installed (apt-get install chromium)` : false

/** A browser page that records script errors and CSP violations (the page must have none). */
async function browserPage(
  t: TestContext,
  o: { viewport?: { width: number; height: number } } = {},
): Promise<{ browser: Browser; page: Page; problems: string[] }> {
  const browser = await launchChromium()
  defer(t, () => browser.close())
  const page = await browser.newPage(
    o.viewport
      ? { viewport: o.viewport, isMobile: o.viewport.width < 500, hasTouch: o.viewport.width < 500 }
      : {},
  )
  const problems: string[] = []
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text())
  })
  page.on('pageerror', (e) => problems.push(e.message))
  return { browser, page, problems }
}

async function logIn(page: Page, httpUrl: string, key = KEY) {
  await page.goto(`${httpUrl}/ui/`)
  await page.getByLabel('Admin key').fill(key)
  await page.getByRole('button', { name: 'Log in' }).click()
  await page.locator('#devices-h').waitFor()
}

const fleetIds = (page: Page) => page.locator('#devices-body tr td:first-child').allInnerTexts()

describe('the console in a real browser', { skip }, () => {
  it('a new user: the setup link, every emulated device with its readings as charts, a command acknowledged, the MQTT session', async (t) => {
    const databaseUrl = await testDatabase(t)
    const ecoflow = await startFakeOpenApi({
      accessKey: 'AK',
      secretKey: 'SK',
      devices: [{ sn: SN, productName: 'DELTA Pro', fixture: 'delta-pro-quota.json' }],
    })
    defer(t, () => ecoflow.close())
    const lines: string[] = []
    const log = createLogger({ level: 'info', format: 'json', write: (l) => lines.push(l) })
    const s = await startApp(
      t,
      testConfig({
        databaseUrl,
        ecoflow: { accessKey: 'AK', secretKey: 'SK', apiUrl: ecoflow.url, pollSeconds: 5 },
      }),
      { log },
    )
    const link = lines
      .map((l) => JSON.parse(l) as { msg: string; url?: string })
      .find((l) => l.msg.startsWith('no admin key yet'))?.url as string
    assert.ok(link, 'paku logged a setup link')
    // The README's two emulators, and a paku-core-like edge device.
    const abort = new AbortController()
    const emulators = [
      runEmulator({
        kind: 'ruuvi',
        url: s.mqttUrl,
        site: 'paku',
        devices: ['van_inside', 'cabin'],
        legacy: false,
        intervalMs: 250,
        count: 0,
        signal: abort.signal,
        log: () => undefined,
      }),
      runEmulator({
        kind: 'heater',
        url: s.mqttUrl,
        site: 'paku',
        devices: ['emu01'],
        legacy: false,
        intervalMs: 250,
        count: 0,
        signal: abort.signal,
        log: () => undefined,
      }),
    ]
    defer(t, async () => {
      abort.abort()
      await Promise.all(emulators)
    })
    const edge = new PushDevice({
      mqttUrl: s.mqttUrl,
      id: 'ESP32-0017AB01',
      model: MODEL,
      version: '1.0.0',
    })
    await edge.connect()
    defer(t, () => edge.disconnect())

    const { page, problems } = await browserPage(t)
    const requests: string[] = []
    page.on('request', (r) => requests.push(r.url()))
    await page.goto(link)
    await page.getByRole('heading', { name: 'Welcome: create the first key' }).waitFor()
    assert.ok(page.url().endsWith('/ui/#setup'), `the token left the address bar: ${page.url()}`)
    await page.getByLabel('Key name').fill('first-admin')
    await page.getByRole('button', { name: 'Create admin key' }).click()
    await page.locator('#setup-done').waitFor()
    const key = await page.getByLabel('Your new key').inputValue()
    assert.match(key, /^paku_[A-Za-z0-9_-]{43}$/)
    await page
      .getByRole('status')
      .filter({ hasText: 'Created the admin key first-admin with every scope' })
      .waitFor()
    await page.getByRole('button', { name: 'Continue to the console' }).click()

    // Every device the emulators, the edge device and the EcoFlow poller produced.
    const want = ['DCABZ8ZE1234567', 'ESP32-0017AB01', 'emu01', 'ruuvi_cabin', 'ruuvi_van_inside']
    await eventually(
      async () =>
        JSON.stringify((await fleetIds(page)).sort()) === JSON.stringify(want) || undefined,
      { what: 'every device in the fleet', timeoutMs: 15_000 },
    )
    await page
      .getByRole('row', { name: /ruuvi_cabin online .*sensor.*Temperature [\d.]+ °C/ })
      .waitFor()
    await page.getByRole('row', { name: /emu01 online .*heater.*Coolant temp/ }).waitFor()
    await page.getByRole('row', { name: /ESP32-0017AB01 online 1\.0\.0 edge device/ }).waitFor()
    await page.getByRole('row', { name: /DCABZ8ZE1234567 online .*EcoFlow station/ }).waitFor()
    // Filter by text, by system; sort by name.
    await page.getByLabel('Search').fill('CABIN')
    assert.deepEqual(await fleetIds(page), ['ruuvi_cabin'])
    await page.getByLabel('Search').fill('')
    await page.getByLabel('System').selectOption('heater')
    assert.deepEqual(await fleetIds(page), ['emu01'])
    await page.getByLabel('System').selectOption('')
    await page.getByLabel('Sort by').selectOption('name')
    assert.deepEqual(
      await fleetIds(page),
      [...want].sort((a, b) => a.localeCompare(b)),
    )
    await page.getByRole('status').filter({ hasText: '5 of 5 devices, 5 online' }).waitFor()

    // A sensor's page: its latest values and a chart per metric, at 24 h and 7 d.
    await page.getByRole('link', { name: 'ruuvi_cabin' }).click()
    await page.getByRole('heading', { name: 'ruuvi_cabin (cabin)' }).waitFor()
    await page.locator('html[data-render-ms]').waitFor({ state: 'attached' })
    const charts = page.locator('#device-charts figure.chart')
    assert.deepEqual(await page.locator('#device-charts .chart-title').allInnerTexts(), [
      'Temperature',
      'Humidity',
      'Pressure',
      'Battery',
    ])
    assert.equal(await charts.locator('canvas').count(), 4, 'uPlot drew four charts')
    assert.match(
      (await charts.first().locator('.plot').getAttribute('aria-label')) ?? '',
      /^Temperature over the last 24 hours: \d+ points, from [\d.]+ °C to [\d.]+ °C, latest/,
    )
    await page.locator('#device-tiles').getByText('Humidity').waitFor()
    await page.getByRole('button', { name: '7 d' }).click()
    await page.waitForURL(/#device\/paku\/ruuvi_cabin\?range=7d$/)
    await page.getByRole('button', { name: '7 d', pressed: true }).waitFor()
    await charts.first().locator('.plot[aria-label*="over the last 7 days"]').waitFor()
    await page.locator('#ota-body').getByText('No firmware history').waitFor()
    await page.locator('#dcmd-form').getByText('This device takes no commands').waitFor()

    // The heater: a command from its page, acknowledged by the emulator's state; its MQTT client and subscription.
    await openDevicePage(page, `${s.httpUrl}/ui/#device/paku/emu01`)
    await page.locator('#broker-body').getByText('paku/heater/emu01/cmd (QoS 0)').waitFor()
    await page
      .locator('#broker-body')
      .getByText(/^Connected since .* from .*127\.0\.0\.1$/)
      .waitFor()
    const commands = page.locator('#device-commands')
    await commands.getByLabel('Heater command').selectOption('start')
    await page.locator('#dcmd-form').getByRole('button', { name: 'Send' }).click()
    await page
      .locator('#device-commands')
      .getByRole('status')
      .filter({ hasText: /^Sent cmd_/ })
      .waitFor()
    await page.getByRole('row', { name: /heater start acknowledged/ }).waitFor({ timeout: 10_000 })

    // The edge device: firmware, status history, config form.
    await openDevicePage(page, `${s.httpUrl}/ui/#device/paku/ESP32-0017AB01`)
    await page.locator('#ota-body').getByText(`Running 1.0.0 (model ${MODEL})`).waitFor()
    await page
      .locator('#hist-body')
      .getByText(/online · -60 dBm · 1\.0\.0/)
      .first()
      .waitFor()
    await commands.getByLabel('Command', { exact: true }).selectOption('config')
    assert.equal(
      await commands.getByLabel('Scenario').isVisible(),
      false,
      'only the chosen command’s field',
    )
    await commands.getByLabel('Configuration (JSON)').waitFor()

    // The EcoFlow station: its power flow and switches; it has no MQTT session.
    await openDevicePage(page, `${s.httpUrl}/ui/#station/${SN}`)
    await page.locator('#device-flow').getByText('Battery').waitFor()
    await page.getByRole('button', { name: 'AC output on' }).waitFor()
    await page.locator('#broker-body').getByText('polled over the EcoFlow cloud API').waitFor()
    assert.ok((await page.locator('#device-charts canvas').count()) >= 3)

    // The link was used: opening it again creates nothing.
    const second = await browserPage(t)
    await second.page.goto(link)
    await second.page.getByRole('button', { name: 'Create admin key' }).click()
    await second.page
      .getByRole('status')
      .filter({ hasText: /Not created: no setup link is open/ })
      .waitFor()
    const db = await sqlClient(t, databaseUrl)
    assert.deepEqual((await db.query('SELECT name FROM admin_keys')).rows, [
      { name: 'first-admin' },
    ])
    assert.deepEqual(problems, [], 'no script errors or CSP violations')
    // Nothing from elsewhere: every request went to paku (uPlot included), and none carried the token or the key.
    assert.ok(
      requests.some((u) => u.endsWith('/ui/uplot.js')),
      'positive control: requests were recorded',
    )
    assert.deepEqual(
      requests.filter((u) => !u.startsWith(`${s.httpUrl}/`)),
      [],
    )
    const token = new URL(link).hash.slice('#setup='.length)
    assert.deepEqual(
      requests.filter((u) => u.includes(token) || u.includes(key)),
      [],
    )
  })

  it('rollouts as they happen: each device with the time of each step, the stage against its thresholds, pause, resume, cancel; what paku read from each image', async (t) => {
    const databaseUrl = await testDatabase(t)
    const s = await startApp(
      t,
      testConfig({
        databaseUrl,
        http: { adminApiKey: KEY },
        ota: { rolloutTickSeconds: 1, renotifySeconds: 1 },
      }),
    )
    const db = await sqlClient(t, databaseUrl)
    // Hash buckets 3 and 82: in the first stage (50 %) and not. The first acts on its command only
    // once the page has shown the first stage; otherwise the rollout can be past it before the page looks.
    let act = () => {}
    const actAfter = new Promise<void>((resolve) => (act = resolve))
    const inStage = new PushDevice({
      mqttUrl: s.mqttUrl,
      id: 'ESP32-0017AB01',
      model: MODEL,
      version: '1.0.0',
      actAfter,
    })
    const later = new PushDevice({
      mqttUrl: s.mqttUrl,
      id: 'ESP32-C0FFEE',
      model: MODEL,
      version: '1.0.0',
    })
    for (const d of [inStage, later]) {
      await d.connect()
      defer(t, () => (act(), d.disconnect()))
    }
    await eventually(
      async () => (await db.query('SELECT 1 FROM devices')).rowCount === 2 || undefined,
      { what: 'both devices registered' },
    )
    // The second device is away (asleep, its command lost): the rollout stays running in its second stage.
    await later.disconnect()
    const up = await fetch(`${s.httpUrl}/api/admin/firmware/${MODEL}/1.1.0`, {
      method: 'PUT',
      headers: { 'x-api-key': KEY },
      body: new Uint8Array(
        espImage({ size: 8192, version: '1.1.0', project: 'paku-core', chipId: 9 }),
      ),
    })
    assert.equal(up.status, 201)

    const { page, problems } = await browserPage(t)
    await logIn(page, s.httpUrl)
    await page.getByRole('link', { name: 'Firmware' }).click()
    await page
      .getByRole('row', {
        name: /esp32-heater 1\.1\.0 8 KiB esp32s3 · project paku-core · app 1\.1\.0 · IDF v5\.1\.4/,
      })
      .waitFor()

    await page.getByRole('link', { name: 'Rollouts' }).click()
    await page.locator('#ro-name').fill('staged')
    await page.locator('#ro-model').fill(MODEL)
    await page.locator('#ro-version').fill('1.1.0')
    await page.locator('#ro-stages').fill('50, 100')
    await page.getByRole('button', { name: 'Start rollout' }).click()
    await page
      .locator('#rollouts')
      .getByRole('status')
      .filter({ hasText: 'Rollout staged started.' })
      .waitFor()
    await page.getByRole('link', { name: 'staged', exact: true }).click()
    await page.getByRole('heading', { name: `staged: ${MODEL} 1.1.0, running` }).waitFor()
    await page.locator('#rd-stages .stage.current').filter({ hasText: '50 %' }).waitFor()
    await page
      .locator('#rd-thresholds')
      .filter({ hasText: /the next stage starts at 100 %/ })
      .waitFor()
    act()
    // The device in the first stage goes through every step while the page watches.
    const steps = page
      .getByRole('row', { name: /ESP32-0017AB01 succeeded 50 % 1\.0\.0/ })
      .locator('.steps li')
    await steps.filter({ hasText: /^succeeded \d/ }).waitFor({ timeout: 15_000 })
    assert.deepEqual(
      (await steps.allInnerTexts()).map((x) => x.split(' ')[0]),
      ['pending', 'notified', 'accepted', 'downloading', 'installing', 'installed', 'succeeded'],
    )
    // The whole rollout then moved on to its second stage by itself (auto advance at 100 %).
    await page
      .locator('#rd-stages .stage.current')
      .filter({ hasText: '100 %' })
      .waitFor({ timeout: 15_000 })
    await page.getByRole('row', { name: /ESP32-C0FFEE/ }).waitFor({ timeout: 15_000 })

    await page.getByRole('button', { name: 'pause staged' }).click()
    await page.getByRole('row', { name: /staged .* paused/ }).waitFor()
    assert.equal(await page.getByRole('button', { name: 'pause staged' }).isDisabled(), true)
    await page.getByRole('button', { name: 'resume staged' }).click()
    await page.getByRole('row', { name: /staged .* running/ }).waitFor()
    await page.getByRole('button', { name: 'cancel staged' }).click()
    await page.getByRole('row', { name: /staged .* cancelled/ }).waitFor()
    assert.equal(
      (await db.query(`SELECT status FROM rollout_configurations WHERE name = 'staged'`)).rows[0]
        ?.status,
      'cancelled',
    )
    assert.deepEqual(problems, [])
  })

  it('live view: a topic filter, pause that holds messages back, pretty-printed payloads', async (t) => {
    const s = await startApp(
      t,
      testConfig({ databaseUrl: await testDatabase(t), http: { adminApiKey: KEY } }),
    )
    const client = await mqtt.connectAsync(s.mqttUrl, { clientId: 'live-feeder' })
    defer(t, () => client.endAsync())
    const { page, problems } = await browserPage(t)
    await logIn(page, s.httpUrl)
    await page.getByRole('link', { name: 'Live' }).click()
    await page.getByLabel('Topic filter').fill('paku/sensors/+/data')
    await page.getByRole('button', { name: 'Start' }).click()
    await page
      .locator('#live')
      .getByRole('status')
      .filter({ hasText: 'Listening on paku/sensors/+/data' })
      .waitFor()
    const send = (device: string, t: number) =>
      client.publishAsync(
        `paku/sensors/${device}/data`,
        JSON.stringify({ device_id: device, metrics: { temperature_c: t } }),
        { qos: 1 },
      )
    const items = page.locator('#live-list li')
    await send('a', 1)
    await items.first().filter({ hasText: 'paku/sensors/a/data' }).waitFor()
    await page.getByRole('button', { name: 'Pause' }).click()
    await send('b', 2)
    await send('c', 3)
    await client.publishAsync('paku/heater/h/data', '{"device_id":"h","metrics":{"x":1}}', {
      qos: 1,
    })
    await page
      .locator('#live')
      .getByRole('status')
      .filter({ hasText: 'Paused: 2 new messages held back.' })
      .waitFor()
    assert.equal(await items.count(), 1, 'held back while paused')
    await page.getByRole('button', { name: 'Resume' }).click()
    await items.nth(2).waitFor()
    assert.deepEqual(
      await items.locator('code.topic').allInnerTexts(),
      ['paku/sensors/c/data', 'paku/sensors/b/data', 'paku/sensors/a/data'],
      'newest first; the heater filtered out',
    )
    assert.equal(await items.first().locator('pre').isVisible(), false)
    await page.getByLabel('Pretty-print payloads').check()
    const pre = items.first().locator('pre')
    await pre.waitFor()
    assert.equal(
      await pre.innerText(),
      JSON.stringify({ device_id: 'c', metrics: { temperature_c: 3 } }, null, 2),
    )
    await page.getByRole('button', { name: 'Stop' }).click()
    assert.deepEqual(problems, [])
  })

  it('works on a phone: no page scrolls sideways at 390 px, and the device list turns into cards', async (t) => {
    const s = await startApp(
      t,
      testConfig({ databaseUrl: await testDatabase(t), http: { adminApiKey: KEY } }),
    )
    const client = await mqtt.connectAsync(s.mqttUrl, { clientId: 'phone-feeder' })
    defer(t, () => client.endAsync())
    await client.publishAsync(
      'paku/sensors/ruuvi_a_sensor_with_a_rather_long_name/data',
      JSON.stringify({
        device_id: 'x',
        location: 'the far end of the garden shed',
        metrics: {
          temperature_c: 21.5,
          humidity_percent: 40,
          pressure_hpa: 1001,
          battery_mv: 2900,
        },
      }),
      { qos: 1 },
    )
    await client.publishAsync(
      'paku/edge/ESP32-PHONE1/status',
      JSON.stringify({
        online: true,
        device_model: MODEL,
        firmware_version: '1.0.0',
        signal_strength_dbm: -60,
      }),
      { qos: 1 },
    )
    const { page, problems } = await browserPage(t, { viewport: { width: 390, height: 844 } })
    // How far the page is wider than the viewport (the test files have no DOM types: the element is described).
    const overflow = () =>
      page.locator('html').evaluate((e) => {
        const html = e as unknown as {
          scrollWidth: number
          ownerDocument: { defaultView: { innerWidth: number } }
        }
        return html.scrollWidth - html.ownerDocument.defaultView.innerWidth
      })
    await logIn(page, s.httpUrl)
    await page.getByRole('link', { name: 'ruuvi_a_sensor_with_a_rather_long_name' }).waitFor()
    assert.equal(
      await page.locator('#fleet-table thead').isVisible(),
      false,
      'cards: no table head',
    )
    assert.equal(await overflow(), 0, 'devices')
    for (const hash of [
      '#device/paku/ruuvi_a_sensor_with_a_rather_long_name',
      '#device/paku/ESP32-PHONE1',
      '#rollouts',
      '#firmware',
      '#ecoflow',
      '#commands',
      '#live',
    ]) {
      if (hash.startsWith('#device')) await openDevicePage(page, `${s.httpUrl}/ui/${hash}`)
      else {
        await page.goto(`${s.httpUrl}/ui/${hash}`)
        await page.locator(`${hash}-h`).waitFor()
      }
      assert.ok((await overflow()) <= 0, `${hash} scrolls sideways by ${await overflow()} px`)
    }
    // Positive control: the measurement sees an element that is too wide.
    await page
      .locator('main')
      .evaluate((m) =>
        (
          m as unknown as { insertAdjacentHTML(where: string, html: string): void }
        ).insertAdjacentHTML('beforeend', `<div>${'x'.repeat(400)}</div>`),
      )
    assert.ok((await overflow()) > 0)
    // And at a desktop width the same list is a table with its head.
    await page.setViewportSize({ width: 1280, height: 800 })
    await page.goto(`${s.httpUrl}/ui/#devices`)
    await page.locator('#fleet-table thead').waitFor()
    assert.deepEqual(problems, [])
  })
})
