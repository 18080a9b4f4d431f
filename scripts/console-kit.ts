/**
 * What the console's browser test, its screenshots (scripts/ui-screenshots.ts) and its benchmark
 * (scripts/ui-bench.ts) share: history written straight into PostgreSQL (weeks or a year of readings
 * that the emulators would take that long to send), and Chromium launched as the tests launch it.
 */
import { existsSync } from 'node:fs'
import { chromium, type Browser, type Page } from 'playwright-core'

export const CHROMIUM = process.env.PAKU_CHROMIUM ?? '/usr/bin/chromium'
export const hasChromium = () => existsSync(CHROMIUM)

/** Debian's Chromium, headless. Root in a container has no user namespaces for its sandbox; the pages are our own. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] })
}

type Query = (text: string, params?: unknown[]) => Promise<unknown>

/** Readings like the emulators' (src/emulate): a daily cycle, a yearly one and some noise, in SQL. */
const METRICS = {
  ruuvi: `jsonb_build_object(
    'temperature_c', round((20 + 3 * sin(2 * pi() * extract(epoch FROM ts) / 86400) + 4 * sin(2 * pi() * extract(epoch FROM ts) / 31536000) + random() * 0.4)::numeric, 1),
    'humidity_percent', round((45 + 8 * cos(2 * pi() * extract(epoch FROM ts) / 86400) + random() * 2)::numeric, 1),
    'pressure_hpa', round((1005 + 8 * sin(2 * pi() * extract(epoch FROM ts) / 345600) + random())::numeric, 1),
    'battery_mv', 2950 - (extract(epoch FROM ts) / 86400)::int % 40)`,
  heater: `jsonb_build_object(
    'coolant_temp_c', round((CASE WHEN extract(hour FROM ts) BETWEEN 6 AND 9 OR extract(hour FROM ts) BETWEEN 17 AND 22 THEN 60 ELSE 22 END + random() * 3)::numeric, 1),
    'core_temp_c', CASE WHEN extract(hour FROM ts) BETWEEN 6 AND 9 OR extract(hour FROM ts) BETWEEN 17 AND 22 THEN 95 ELSE 25 END,
    'flow_lpm', round((3 + random() * 0.6)::numeric, 1),
    'battery_v', round((12.4 + random() * 0.3)::numeric, 1),
    'heater_state', CASE WHEN extract(hour FROM ts) BETWEEN 6 AND 9 OR extract(hour FROM ts) BETWEEN 17 AND 22 THEN 'Running' ELSE 'Off' END)`,
} as const

/**
 * Writes `days` of readings, one every `stepMinutes`, ending a minute before `end` (the emulator then
 * carries on live). With `asMeasured` each row is created when it was measured, as a year of live
 * data would be: paku's first rollup pass (at start) backfills such rows, later passes count only rows
 * created since the last one (src/rollup), so write them before paku starts. Without it they are
 * created now, and the next pass counts them. Returns the rows written.
 */
export async function fillHistory(
  q: Query,
  o: {
    site: string
    system: string
    device: string
    location?: string
    kind: keyof typeof METRICS
    days: number
    stepMinutes: number
    end?: Date
    asMeasured?: boolean
  },
): Promise<number> {
  const end = new Date((o.end ?? new Date()).getTime() - 60_000)
  const start = new Date(end.getTime() - o.days * 86_400_000)
  const r = (await q(
    `INSERT INTO measurements (site_id, system, device_id, location, ts, created_at, metrics)
     SELECT $1, $2, $3, $4, ts, ${o.asMeasured ? 'ts' : 'NOW()'}, ${METRICS[o.kind]} FROM generate_series($5::timestamptz, $6::timestamptz, make_interval(mins => $7)) ts`,
    [o.site, o.system, o.device, o.location ?? null, start, end, o.stepMinutes],
  )) as { rowCount: number }
  return r.rowCount
}

/** A week of an edge device's status messages, one every 5 minutes (signal and uptime chart from them). */
export async function fillStatusHistory(
  q: Query,
  o: { site: string; device: string; model: string; firmware: string; days: number },
): Promise<void> {
  const end = new Date(Date.now() - 60_000)
  const start = new Date(end.getTime() - o.days * 86_400_000)
  await q(
    `INSERT INTO edge_device_status (site_id, device_id, ts, status)
     SELECT $1, $2, ts, jsonb_build_object('online', true, 'device_model', $3::text, 'firmware_version', $4::text, 'active_scenario', 'default',
       'signal_strength_dbm', -60 - (random() * 15)::int, 'uptime_seconds', (extract(epoch FROM ts - $5::timestamptz))::int % 604800)
     FROM generate_series($5::timestamptz, $6::timestamptz, interval '5 minutes') ts`,
    [o.site, o.device, o.model, o.firmware, start, end],
  )
}

/**
 * Opens a device page and waits until it has drawn everything: device.js sets `data-render-ms` on
 * <html> once the values and charts are drawn (ms since navigation start), `data-page-ms` (the same,
 * since the page began loading its data) and `data-panels-ms` once the side panels are in too.
 */
export async function openDevicePage(
  page: Page,
  url: string,
  timeout = 30_000,
): Promise<{ renderMs: number; pageMs: number; panelsMs: number }> {
  const html = page.locator('html')
  // A hash change keeps the document: the previous page's marks must not be taken for this one's.
  await html
    .evaluate((e) => {
      const d = (e as unknown as { dataset: Record<string, string> }).dataset
      delete d.renderMs
      delete d.panelsMs
    })
    .catch(() => undefined)
  await page.goto(url)
  await page.locator('html[data-panels-ms]').waitFor({ state: 'attached', timeout })
  const n = async (name: string) => Number(await html.getAttribute(name))
  return {
    renderMs: await n('data-render-ms'),
    pageMs: await n('data-page-ms'),
    panelsMs: await n('data-panels-ms'),
  }
}

/** A station's polls every `stepMinutes` for `days`: solar by day, a load in the evening, the battery between. */
export async function fillEcoflowHistory(
  q: Query,
  o: { sn: string; model: string; days: number; stepMinutes: number },
): Promise<void> {
  const end = new Date(Date.now() - 60_000)
  const start = new Date(end.getTime() - o.days * 86_400_000)
  await q(
    `INSERT INTO ecoflow_measurements (device_sn, ts, model, soc_percent, watts_in_sum, pv_in_watts, watts_out_sum, ac_out_watts, dc_out_watts, remain_time_min, bms_temp)
     SELECT $1, ts, $2, soc, pv, pv, out, out - 20, 20, 60 * soc / 10, 22 + soc / 20
     FROM (SELECT ts, greatest(0, (450 * sin(2 * pi() * (extract(hour FROM ts) - 6) / 24))::int) AS pv,
             (60 + CASE WHEN extract(hour FROM ts) BETWEEN 17 AND 22 THEN 240 ELSE 0 END + random() * 20)::int AS out,
             (60 + 30 * sin(2 * pi() * (extract(hour FROM ts) - 12) / 24))::int AS soc
           FROM generate_series($3::timestamptz, $4::timestamptz, make_interval(mins => $5)) ts) x`,
    [o.sn, o.model, start, end, o.stepMinutes],
  )
}
