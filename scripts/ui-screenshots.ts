/**
 * `npm run ui-screenshots`: the console's pages as docs/images/console-*.png. Starts paku on a throwaway
 * embedded PostgreSQL with no admin key, as a new user would, and feeds it as the README's "Run it" does:
 * the Ruuvi and heater emulators, plus an edge device, a week of history, a firmware with a rollout and a
 * fake EcoFlow station (scripts/test-support/fake-ecoflow-api.ts). Opens the setup link paku logs, creates the key,
 * and visits each page on a desktop and a phone viewport.
 */
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt from 'mqtt'
import pg from 'pg'
import type { Page } from 'playwright-core'
import { migrationFiles } from '../src/assets.js'
import { createApp } from '../src/app.js'
import { createEmbeddedPostgres } from '../src/db/index.js'
import { startFakeOpenApi } from './test-support/fake-ecoflow-api.js'
import { runEmulator } from '../src/emulate/index.js'
import { createLogger } from '../src/log/index.js'
import { espImage } from './test-support/esp-image.js'
import {
  fillEcoflowHistory,
  fillHistory,
  fillStatusHistory,
  hasChromium,
  launchChromium,
  openDevicePage,
  CHROMIUM,
} from './console-kit.js'
import { freePort } from './local-process.js'
import { testConfig } from './test-helpers.js'

const OUT = join('docs', 'images')
const EDGE = 'ESP32-A1B2C3'
if (!hasChromium()) {
  console.error(`${CHROMIUM} not found (apt-get install chromium, or set PAKU_CHROMIUM)`)
  process.exit(1)
}

const dir = await mkdtemp(join(tmpdir(), 'paku-shots-'))
// As root, the embedded PostgreSQL runs as user postgres, which must be able to enter the directory.
await chmod(dir, 0o711)
const pgLog = createLogger({ level: 'warn', format: 'pretty' })
const server = createEmbeddedPostgres({
  dataDir: join(dir, 'pg'),
  port: await freePort(),
  log: pgLog,
  ephemeral: true,
  settings: { fsync: 'off' },
})
await server.start()
const lines: string[] = []
const log = createLogger({ level: 'info', format: 'json', write: (l) => lines.push(l) })
const ecoflow = await startFakeOpenApi({
  accessKey: 'AK',
  secretKey: 'SK',
  devices: [{ sn: 'DCABZ8ZE1234567', productName: 'DELTA Pro', fixture: 'delta-pro-quota.json' }],
})
const config = testConfig({
  databaseUrl: server.url(),
  dataDir: join(dir, 'data'),
  rollup: { intervalSeconds: 5 },
  ecoflow: { accessKey: 'AK', secretKey: 'SK', apiUrl: ecoflow.url, pollSeconds: 5 },
})
const app = createApp({ config, log, migrations: migrationFiles(), version: 'screenshots' })
const stops: Array<() => Promise<unknown>> = []
try {
  await app.start()
  const http = `http://127.0.0.1:${app.http.address()?.port}`
  const mqttUrl = `mqtt://127.0.0.1:${app.broker.addresses().mqtt?.port}`
  const pool = new pg.Pool({ connectionString: server.url(), max: 2 })
  stops.push(() => pool.end())
  const q = (text: string, params?: unknown[]) => pool.query(text, params)

  // A week of history, so the charts have something to show beside what the emulators add.
  for (const loc of ['van_inside', 'cabin'])
    await fillHistory(q, {
      site: 'paku',
      system: 'sensors',
      device: `ruuvi_${loc}`,
      location: loc,
      kind: 'ruuvi',
      days: 7,
      stepMinutes: 5,
    })
  await fillHistory(q, {
    site: 'paku',
    system: 'heater',
    device: 'emu01',
    location: 'van',
    kind: 'heater',
    days: 7,
    stepMinutes: 5,
  })
  await fillStatusHistory(q, {
    site: 'paku',
    device: EDGE,
    model: 'esp32-heater',
    firmware: '1.4.2',
    days: 7,
  })
  await fillEcoflowHistory(q, {
    sn: 'DCABZ8ZE1234567',
    model: 'delta_pro',
    days: 7,
    stepMinutes: 5,
  })
  await app.rollup.pass()

  const abort = new AbortController()
  const quiet = () => undefined
  const emulators = [
    runEmulator({
      kind: 'ruuvi',
      url: mqttUrl,
      site: 'paku',
      devices: ['van_inside', 'cabin'],
      legacy: false,
      intervalMs: 1000,
      count: 0,
      signal: abort.signal,
      log: quiet,
    }),
    runEmulator({
      kind: 'heater',
      url: mqttUrl,
      site: 'paku',
      devices: ['emu01'],
      legacy: false,
      intervalMs: 1000,
      count: 0,
      signal: abort.signal,
      log: quiet,
    }),
  ]
  stops.push(async () => {
    abort.abort()
    await Promise.all(emulators)
  })
  const device = await mqtt.connectAsync(mqttUrl, { clientId: EDGE, clean: false })
  stops.push(() => device.endAsync())
  await device.subscribeAsync(
    [`paku/edge/${EDGE}/cmd/#`, `paku/edge/${EDGE}/config/set`, `paku/edge/${EDGE}/control`],
    { qos: 1 },
  )
  await device.publishAsync(
    `paku/edge/${EDGE}/status`,
    JSON.stringify({
      online: true,
      device_model: 'esp32-heater',
      firmware_version: '1.4.2',
      active_scenario: 'default',
      signal_strength_dbm: -63,
      uptime_seconds: 86400,
    }),
    { qos: 1, retain: true },
  )
  await device.publishAsync(
    `paku/edge/${EDGE}/config/report`,
    JSON.stringify({ timing: { wake_interval_s: 60 }, power: { mode: 'auto' } }),
    { qos: 1 },
  )

  // The first key, as the setup page would make it, for the API calls that set the scene.
  const link = lines
    .map((l) => JSON.parse(l) as { msg: string; url?: string })
    .find((l) => l.msg.startsWith('no admin key yet'))?.url
  if (!link) throw new Error('paku logged no setup link')

  const browser = await launchChromium()
  stops.push(() => browser.close())
  await mkdir(OUT, { recursive: true })
  const page = await browser.newPage({
    viewport: { width: 1280, height: 900 },
    colorScheme: 'light',
  })
  const shot = async (p: Page, name: string, full = true) => {
    await p.waitForTimeout(300)
    await p.screenshot({ path: join(OUT, `console-${name}.png`), fullPage: full })
    console.log(`wrote ${join(OUT, `console-${name}.png`)}`)
  }
  await page.goto(link)
  await page.getByRole('heading', { name: 'Welcome: create the first key' }).waitFor()
  await shot(page, 'setup', false)
  await page.getByRole('button', { name: 'Create admin key' }).click()
  await page.getByLabel('Your new key').waitFor()
  const key = await page.getByLabel('Your new key').inputValue()
  const api = async (method: string, path: string, body?: unknown, raw?: Buffer) => {
    const r = await fetch(`${http}${path}`, {
      method,
      headers: {
        'x-api-key': key,
        'content-type': raw ? 'application/octet-stream' : 'application/json',
      },
      body: raw ? new Uint8Array(raw) : body === undefined ? undefined : JSON.stringify(body),
    })
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`)
    return r.json() as Promise<Record<string, unknown>>
  }
  await api(
    'PUT',
    '/api/admin/firmware/esp32-heater/1.4.2',
    undefined,
    espImage({ size: 900_000, version: '1.4.2', project: 'paku-core', chipId: 9 }),
  )
  await api(
    'PUT',
    '/api/admin/firmware/esp32-heater/1.5.0',
    undefined,
    espImage({ size: 912_384, version: '1.5.0', project: 'paku-core', chipId: 9 }),
  )
  const created = (await api('POST', '/api/admin/rollouts', {
    name: 'heater-1.5.0',
    device_model: 'esp32-heater',
    firmware_version: '1.5.0',
    target_type: 'all',
    stages: [50, 100],
    auto_advance: true,
    success_threshold_percent: 90,
  })) as { id: number }
  for (const [state, percent] of [
    ['Downloading', 30],
    ['Downloading', 80],
    ['Installing', 100],
  ] as const) {
    await device.publishAsync(
      `paku/edge/${EDGE}/ota/progress`,
      JSON.stringify({ state, percent, version: '1.5.0' }),
      { qos: 1 },
    )
  }
  await api('POST', '/api/v1/commands', {
    device_id: EDGE,
    type: 'control',
    scenario: 'heater_active',
  })

  await page.getByRole('button', { name: 'Continue to the console' }).click()
  await page.getByRole('link', { name: 'ruuvi_cabin' }).waitFor()
  await page.locator('#devices-body tr').nth(4).waitFor({ timeout: 30_000 })
  await shot(page, 'fleet')
  await openDevicePage(page, `${http}/ui/#device/paku/ruuvi_cabin?range=7d`)
  await shot(page, 'device')
  await openDevicePage(page, `${http}/ui/#device/paku/emu01?range=24h`)
  await shot(page, 'heater')
  await openDevicePage(page, `${http}/ui/#device/paku/${EDGE}?range=7d`)
  await shot(page, 'edge-device')
  await openDevicePage(page, `${http}/ui/#station/DCABZ8ZE1234567?range=24h`)
  await shot(page, 'ecoflow')
  await page.goto(`${http}/ui/#rollouts/${created.id}`)
  await page.locator('#rd-body tr').first().waitFor()
  await shot(page, 'rollouts')
  await page.goto(`${http}/ui/#firmware`)
  await page.getByRole('cell', { name: '1.5.0', exact: true }).waitFor()
  await shot(page, 'firmware', false)
  await page.goto(`${http}/ui/#live`)
  await page.getByLabel('Topic filter').fill('paku/#')
  await page.getByLabel('Pretty-print payloads').check()
  await page.getByRole('button', { name: 'Start' }).click()
  await page.locator('#live-list li').nth(3).waitFor()
  await page.getByRole('button', { name: 'Pause' }).click()
  await shot(page, 'live', false)

  const phone = await browser.newPage({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
  })
  await phone.goto(`${http}/ui/`)
  await phone.getByLabel('Admin key').fill(key)
  await phone.getByRole('button', { name: 'Log in' }).click()
  await phone.getByRole('link', { name: 'ruuvi_cabin' }).waitFor()
  await shot(phone, 'phone-fleet', false)
  await openDevicePage(phone, `${http}/ui/#device/paku/ruuvi_cabin?range=24h`)
  await shot(phone, 'phone-device', false)
} finally {
  while (stops.length > 0) await (stops.pop() as () => Promise<unknown>)().catch(() => undefined)
  await app.stop().catch(() => undefined)
  await ecoflow.close()
  await server.stop()
  await rm(dir, { recursive: true, force: true })
}
