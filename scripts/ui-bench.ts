/**
 * `npm run ui-bench`: how fast the console's device page is with a year of data. Fills a throwaway
 * embedded PostgreSQL with a year of 5-minute readings for one Ruuvi-like device (4 metrics, 105,120
 * rows), lets paku's rollup backfill its buckets, then opens the device page in Chromium at each range
 * and prints:
 *   - load: a fresh page load (HTML, scripts, the device lookup, every series, the latest values and
 *     all charts drawn), from the navigation's start (the budget: 500 ms at a year);
 *   - panels: the same until the side panels (firmware, commands, MQTT, history) are in too;
 *   - switch: pressing another range on the open page, until every chart is redrawn;
 *   - series: one metric's /api/v1/measurements/series request at that range, by itself.
 * Medians and maxima of `--runs N` (default 7) after one warm-up. `--days N` changes the history.
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { migrationFiles, uiFiles } from '../src/assets.js'
import { createApp } from '../src/app.js'
import { Kysely, PostgresDialect } from 'kysely'
import { createEmbeddedPostgres, migrate, type DB } from '../src/db/index.js'
import { createLogger } from '../src/log/index.js'
import {
  fillHistory,
  hasChromium,
  launchChromium,
  openDevicePage,
  CHROMIUM,
} from './console-kit.js'
import { freePort } from './local-process.js'
import { testConfig } from './test-helpers.js'

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '7' }, days: { type: 'string', default: '365' } },
})
const RUNS = Number(values.runs)
const DAYS = Number(values.days)
const KEY = 'ui-bench-admin-key-0123456789-padded-to-32-characters'
const DEVICE = 'ruuvi_bench'
const RANGES = ['24h', '7d', '30d', '1y'] as const
const BUCKET = { '24h': '5m', '7d': '1h', '30d': '1h', '1y': '6h' } as const
const SPAN = { '24h': 1, '7d': 7, '30d': 30, '1y': 365 } as const
if (!hasChromium()) {
  console.error(`${CHROMIUM} not found (apt-get install chromium, or set PAKU_CHROMIUM)`)
  process.exit(1)
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  return { median: s[Math.floor(s.length / 2)] as number, max: s[s.length - 1] as number }
}
const ms = (x: number) => `${Math.round(x)} ms`

const dir = await mkdtemp(join(tmpdir(), 'paku-uibench-'))
// As root, the embedded PostgreSQL runs as user postgres, which must be able to enter the directory.
await chmod(dir, 0o711)
const log = createLogger({ level: 'warn', format: 'pretty' })
const server = createEmbeddedPostgres({
  dataDir: join(dir, 'pg'),
  port: await freePort(),
  log,
  ephemeral: true,
  settings: { fsync: 'off' },
})
await server.start()
const config = testConfig({
  databaseUrl: server.url(),
  dataDir: join(dir, 'data'),
  http: { adminApiKey: KEY },
  rollup: { intervalSeconds: 3600 },
  log: { level: 'warn' },
})
// The history is written before paku first starts, as if it had arrived over the year (created_at =
// ts): paku's first rollup pass then backfills it, as it does for an adopted database.
const pool = new pg.Pool({ connectionString: server.url(), max: 2 })
await migrate(new Kysely<DB>({ dialect: new PostgresDialect({ pool }) }), migrationFiles())
let t0 = performance.now()
const rows = await fillHistory((text, params) => pool.query(text, params), {
  site: 'paku',
  system: 'sensors',
  device: DEVICE,
  location: 'bench',
  kind: 'ruuvi',
  days: DAYS,
  stepMinutes: 5,
  asMeasured: true,
})
console.log(
  `filled ${rows.toLocaleString()} rows (${DAYS} days at 5 min, 4 metrics) in ${ms(performance.now() - t0)}`,
)
const indexesBuilt = async (a: { db: { indexes(): { state: string } | undefined } }) => {
  while (a.db.indexes()?.state === 'building') await new Promise((r) => setTimeout(r, 100))
}
const app = createApp({ config, log, migrations: migrationFiles(), version: 'ui-bench' })
try {
  t0 = performance.now()
  await app.start()
  const http = `http://127.0.0.1:${app.http.address()?.port}`
  while (app.rollup.health().lastPass === null) await new Promise((r) => setTimeout(r, 100))
  await indexesBuilt(app)
  const counts = (
    await pool.query(
      `SELECT (SELECT count(*) FROM rollup_5m)::int AS r5, (SELECT count(*) FROM rollup_1h)::int AS r1, (SELECT count(*) FROM rollup_6h)::int AS r6`,
    )
  ).rows[0] as { r5: number; r1: number; r6: number }
  console.log(
    `paku's first rollup pass ${ms(performance.now() - t0)}: rollup_5m ${counts.r5.toLocaleString()}, rollup_1h ${counts.r1.toLocaleString()}, rollup_6h ${counts.r6.toLocaleString()} rows`,
  )
  await pool.end()
  const files = uiFiles()
  console.log(
    `UI files: ${[...files].map(([n, b]) => `${n} ${(b.length / 1024).toFixed(1)} KiB`).join(', ')}`,
  )

  const browser = await launchChromium()
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
    await page.goto(`${http}/ui/`)
    await page.getByLabel('Admin key').fill(KEY)
    await page.getByRole('button', { name: 'Log in' }).click()
    await page.locator('#devices-h').waitFor()
    const url = (range: string) => `${http}/ui/#device/paku/${DEVICE}?range=${range}`
    const series = async (range: (typeof RANGES)[number]) => {
      const to = new Date()
      const from = new Date(to.getTime() - SPAN[range] * 86_400_000)
      const t = performance.now()
      const r = await fetch(
        `${http}/api/v1/measurements/series?metric=temperature_c&site_id=paku&system=sensors&device_id=${DEVICE}&bucket=${BUCKET[range]}&from=${from.toISOString()}&to=${to.toISOString()}`,
        { headers: { 'x-api-key': KEY } },
      )
      const body = (await r.json()) as { series: Array<{ points: unknown[] }> }
      return { ms: performance.now() - t, points: body.series[0]?.points.length ?? 0 }
    }
    console.log(
      `\nrange  bucket  points/chart  load median (max)   panels median (max)  switch median (max)  series median (max)`,
    )
    const results: Record<string, number> = {}
    for (const range of RANGES) {
      const load: number[] = []
      const panels: number[] = []
      const sw: number[] = []
      const api: number[] = []
      let points = 0
      for (let i = 0; i <= RUNS; i++) {
        // A fresh load: leave the page, then open the device page itself.
        await page.goto('about:blank')
        const cold = await openDevicePage(page, url(range))
        // A range switch on the open page: from another range to this one.
        await openDevicePage(page, url(range === '24h' ? '7d' : '24h'))
        await page
          .locator('html')
          .evaluate(
            (e) => delete (e as unknown as { dataset: Record<string, string> }).dataset.renderMs,
          )
        const t = performance.now()
        await page.getByRole('button', { name: range.replace(/(\d+)/, '$1 ') }).click()
        await page.locator('html[data-render-ms]').waitFor({ state: 'attached' })
        const switched = performance.now() - t
        const s = await series(range)
        points = s.points
        if (i === 0) continue // warm-up
        load.push(cold.renderMs)
        panels.push(cold.panelsMs)
        sw.push(switched)
        api.push(s.ms)
      }
      const [l, p, w, a] = [stats(load), stats(panels), stats(sw), stats(api)]
      results[range] = l.median
      const cell = (x: { median: number; max: number }, width: number) =>
        `${ms(x.median)} (${ms(x.max)})`.padEnd(width)
      console.log(
        `${range.padEnd(6)} ${BUCKET[range].padEnd(7)} ${String(points).padStart(12)}  ${cell(l, 19)} ${cell(p, 20)} ${cell(w, 20)} ${ms(a.median)} (${ms(a.max)})`,
      )
    }
    const year = results['1y'] as number
    console.log(
      `load average during the runs: ${loadavg()
        .map((x) => x.toFixed(2))
        .join(', ')} on ${cpus().length} CPUs`,
    )
    console.log(
      `\na year of data: the device page loads and draws in ${ms(year)} (median of ${RUNS}); budget 500 ms: ${year <= 500 ? 'met' : 'NOT met'}`,
    )
  } finally {
    await browser.close()
  }
} finally {
  await app.stop().catch(() => undefined)
  await server.stop()
  await rm(dir, { recursive: true, force: true })
}
