/**
 * `npm run grafana-bench [-- --rows N]`: one year of data for 20 devices, then every dashboard panel's
 * query at 24 h, 7 d and 365 d, as Grafana would send it. The full rate — one message per
 * 10 s per device — is ~63M rows; the default fills 10M rows over the same year (one message per ~63 s)
 * and prints the factor. EcoFlow (one station polled every 30 s) and device status (every 5 min) are at
 * their real rates. A throwaway PostgreSQL with default memory settings (shared_buffers 128 MB, as a
 * small VM has); the rollups are paku's own code (src/rollup), backfilled and timed.
 */
import { mkdtemp, readdir, readFile, rm, chmod } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import * as v from 'valibot'
import { grafanaDir, migrationFiles } from '../src/assets.js'
import { ConfigSchema } from '../src/config/index.js'
import { buildIndexes, createEmbeddedPostgres, migrate, type DB } from '../src/db/index.js'
import { createLogger } from '../src/log/index.js'
import { createRollup } from '../src/rollup/index.js'
import { expandGrafanaSql, grafanaInterval } from './grafana-sql.js'
import { freePort } from './local-process.js'

const args = process.argv.slice(2)
const flag = (name: string) => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : undefined
}
const ROWS = Number(flag('--rows') ?? 10_000_000)
const RUNS = Number(flag('--runs') ?? 3)
const DEVICES = 20
const SENSORS = 18
const YEAR_S = 365 * 86400
const FULL_RATE_ROWS = (YEAR_S / 10) * DEVICES
const stepS = Math.max(10, Math.round((YEAR_S * DEVICES) / ROWS))
const GOAL_MS = 300
const log = createLogger({ level: 'warn', format: 'pretty' })
const t = () => performance.now()
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`

const dir = await mkdtemp(join(tmpdir(), 'paku-gbench-'))
await chmod(dir, 0o711)
const server = createEmbeddedPostgres({
  dataDir: dir,
  port: await freePort(),
  log,
  ephemeral: true,
  settings: {
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    max_wal_size: '4GB',
  },
})
await server.start()
const pool = new pg.Pool({ connectionString: server.url(), max: 4 })
// Stopping the server at the end terminates idle clients; unhandled, that error killed the process before
// the finally block removed the ~12 GB data directory.
pool.on('error', () => undefined)
const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) })
const q = (text: string, params: unknown[] = []) => pool.query(text, params)
try {
  await migrate(db, migrationFiles())
  await buildIndexes({ pool, db, log })
  const end = new Date(Math.floor(Date.now() / 60_000) * 60_000)
  const start = new Date(end.getTime() - YEAR_S * 1000)
  console.log(
    `one year ${start.toISOString().slice(0, 10)} … ${end.toISOString().slice(0, 10)}, ${DEVICES} devices, one message per ${stepS} s per device`,
  )

  // Bulk load as a restore would: indexes dropped during the fill, rebuilt after (timed separately).
  const indexes = (
    await q(
      `SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('measurements', 'ecoflow_measurements', 'edge_device_status') AND indexname NOT LIKE '%pkey'`,
    )
  ).rows as Array<{ indexname: string; indexdef: string }>
  for (const i of indexes) await q(`DROP INDEX ${i.indexname}`)
  let t0 = t()
  for (let d = 0; d < DEVICES; d++) {
    const heater = d >= SENSORS
    const id = heater ? `heater0${d - SENSORS + 1}` : `ruuvi_${String(d + 1).padStart(2, '0')}`
    const metrics = heater
      ? `jsonb_build_object('coolant_temp_c', round((60 + 15 * sin(e / 3000.0) + random())::numeric, 1), 'core_temp_c', round((150 + 40 * sin(e / 2000.0))::numeric, 1), 'battery_v', round((12.6 + random() * 0.4)::numeric, 2), 'flow_lpm', round((4 + random())::numeric, 2), 'heater_state', (ARRAY['Off','Starting','Warming','Running','Running','Running','Cooling'])[1 + (e / 600)::int % 7], 'safety_ok', 1)`
      : `jsonb_build_object('temperature_c', round((15 + 10 * sin(e / 13750.0) + 3 * sin(e / 86400.0 * 6.283) + random())::numeric, 2), 'humidity_percent', round((55 + 20 * sin(e / 50000.0) + random() * 2)::numeric, 2), 'pressure_hpa', round((1010 + 15 * sin(e / 200000.0))::numeric, 1), 'battery_mv', 3000 - (e / 100000)::int)`
    await q(
      `INSERT INTO measurements (site_id, system, device_id, location, ts, metrics, created_at)
      SELECT 'paku', $1, $2, $3, to_timestamp(e), ${metrics}, to_timestamp(e)
      FROM generate_series($4::bigint + $6::bigint, $5::bigint, $7::bigint) e`,
      [
        heater ? 'heater' : 'sensors',
        id,
        heater ? null : `room_${d + 1}`,
        Math.floor(start.getTime() / 1000),
        Math.floor(end.getTime() / 1000),
        d,
        stepS,
      ],
    )
    const status = `jsonb_build_object('online', true, 'device_id', 'ESP32-${String(d).padStart(8, '0')}', 'signal_strength_dbm', -50 - (random() * 30)::int, 'uptime_seconds', e % 864000, 'firmware_version', '1.4.2', 'state', 'continuous')`
    await q(
      `INSERT INTO edge_device_status (site_id, device_id, status, ts, created_at)
      SELECT 'paku', $1, ${status}, to_timestamp(e), to_timestamp(e) FROM generate_series($2::bigint, $3::bigint, 300) e`,
      [
        `ESP32-${String(d).padStart(8, '0')}`,
        Math.floor(start.getTime() / 1000) + d,
        Math.floor(end.getTime() / 1000),
      ],
    )
    process.stdout.write(`\r  filled ${d + 1}/${DEVICES} devices`)
  }
  await q(
    `INSERT INTO ecoflow_measurements (device_sn, ts, created_at, soc_percent, remain_time_min, watts_in_sum, watts_out_sum, ac_out_watts, dc_out_watts,
      typec_out_watts, usb_out_watts, pv_in_watts, car_watts, usb1_watts, usb2_watts, qcusb1_watts, qcusb2_watts, typec1_watts, typec2_watts, inv_out_temp,
      bms_temp, bms_max_cell_temp, bms_min_cell_temp, mppt_temp, inv_input_watts, inv_ac_in_vol, inv_out_vol, inv_ac_in_amp, inv_out_amp, bms_amp, bms_vol,
      bms_min_cell_vol, bms_max_cell_vol, bms_remain_cap, bms_full_cap, bms_cycles, wifi_rssi, model)
    SELECT 'DCABZ8ZE1234567', to_timestamp(e), to_timestamp(e), 50 + (40 * sin(e / 40000.0))::int, 600, (200 * random())::int, (150 * random())::int, (100 * random())::int,
      (20 * random())::int, (10 * random())::int, (5 * random())::int, greatest(0, (300 * sin(e / 86400.0 * 6.283))::int), 12, 2, 2, 0, 0, 5, 5, 35 + random() * 5,
      25 + random() * 3, 27, 24, 30 + random() * 5, 0, 230000, 230000, 0, 400, -2000 + (4000 * random())::int, 52000 + (1000 * random())::int,
      3300, 3340, 30000, 40000, 120 + (e / 2000000)::int, -55, 'delta_pro'
    FROM generate_series($1::bigint, $2::bigint, 30) e`,
    [Math.floor(start.getTime() / 1000), Math.floor(end.getTime() / 1000)],
  )
  const fillMs = t() - t0
  t0 = t()
  for (const i of indexes) await q(i.indexdef)
  await q('ANALYZE')
  const indexMs = t() - t0
  const counts = (
    await q(
      `SELECT (SELECT count(*) FROM measurements)::int AS m, (SELECT count(*) FROM edge_device_status)::int AS s, (SELECT count(*) FROM ecoflow_measurements)::int AS e`,
    )
  ).rows[0] as { m: number; s: number; e: number }
  console.log(
    `\r  measurements ${counts.m.toLocaleString('en')} rows (factor ${(FULL_RATE_ROWS / counts.m).toFixed(1)} below the full 10 s rate of ${Math.round(FULL_RATE_ROWS).toLocaleString('en')}), edge_device_status ${counts.s.toLocaleString('en')}, ecoflow_measurements ${counts.e.toLocaleString('en')}`,
  )
  console.log(`  fill ${secs(fillMs)}, indexes + ANALYZE ${secs(indexMs)}`)

  // paku's rollup, as it backfills an adopted database on its first pass.
  const config = v.parse(ConfigSchema, {})
  const rollup = createRollup({
    config: config.rollup,
    retention: config.retention,
    db: () => db,
    log,
  })
  t0 = t()
  const pass = await rollup.pass()
  await q('ANALYZE')
  const sizes = (
    await q(`SELECT (SELECT count(*) FROM rollup_5m)::int AS r5, (SELECT count(*) FROM rollup_1h)::int AS r1,
    pg_size_pretty(pg_total_relation_size('measurements')) AS m, pg_size_pretty(pg_total_relation_size('rollup_5m')) AS s5, pg_size_pretty(pg_total_relation_size('rollup_1h')) AS s1`)
  ).rows[0] as Record<string, string | number>
  console.log(
    `  rollup backfill ${secs(t() - t0)} (${pass.buckets.toLocaleString('en')} buckets; ${Object.entries(
      pass.sources,
    )
      .map(([k, x]) => `${k} ${secs(x.ms)}`)
      .join(
        ', ',
      )}): rollup_5m ${Number(sizes.r5).toLocaleString('en')} rows (${sizes.s5}), rollup_1h ${Number(sizes.r1).toLocaleString('en')} rows (${sizes.s1}); measurements ${sizes.m}`,
  )
  // A steady-state pass: what paku does every minute (the last minute's rows).
  await q(
    `INSERT INTO measurements (site_id, system, device_id, location, ts, metrics) SELECT 'paku', 'sensors', 'ruuvi_01', 'room_1', NOW() - g * INTERVAL '1 second', '{"temperature_c": 21}' FROM generate_series(1, 120) g`,
  )
  t0 = t()
  const steady = await rollup.pass()
  console.log(`  steady-state pass ${Math.round(t() - t0)} ms (${steady.buckets} buckets)\n`)

  const sensors = Array.from(
    { length: SENSORS },
    (_, i) => `'ruuvi_${String(i + 1).padStart(2, '0')}'`,
  ).join(', ')
  const edges = Array.from(
    { length: DEVICES },
    (_, i) => `'ESP32-${String(i).padStart(8, '0')}'`,
  ).join(', ')
  const VARS: Record<string, Record<string, string>> = {
    'ruuvi-overview.json': { site: "'paku'", device: sensors },
    'heater-overview.json': { site: "'paku'", heater: "'heater01'" },
    'edge-devices.json': { device: edges },
    'ecoflow-overview.json': { device_sn: "'DCABZ8ZE1234567'" },
    'ecoflow-full.json': { device_sn: "'DCABZ8ZE1234567'" },
    'ota-monitoring.json': {},
  }
  const RANGES: Array<[string, number]> = [
    ['24 h', 86_400_000],
    ['7 d', 7 * 86_400_000],
    ['365 d', 365 * 86_400_000],
  ]
  const dashDir = join(grafanaDir(), 'dashboards', 'paku')
  type Panel = { title: string; targets?: Array<{ refId: string; rawSql: string }> }
  const rows: Array<{ panel: string; ms: number[] }> = []
  const timeIt = async (sql: string) => {
    await q(sql) // warm-up: Grafana's refresh hits a warm cache the same way
    const runs: number[] = []
    for (let i = 0; i < RUNS; i++) {
      const s = t()
      await q(sql)
      runs.push(t() - s)
    }
    return runs.sort((a, b) => a - b)[Math.floor(runs.length / 2)] as number
  }
  for (const file of (await readdir(dashDir)).filter((f) => f.endsWith('.json')).sort()) {
    const dash = JSON.parse(await readFile(join(dashDir, file), 'utf8')) as {
      panels: Panel[]
      templating: { list: Array<{ name: string; query: string }> }
    }
    const vars = VARS[file] ?? {}
    for (const variable of dash.templating.list) {
      const sql = expandGrafanaSql(variable.query, {
        from: start.toISOString(),
        to: end.toISOString(),
        intervalSeconds: 60,
        vars,
      })
      const ms = await timeIt(sql)
      rows.push({
        panel: `${file.replace('.json', '')} · variable $${variable.name}`,
        ms: [ms, ms, ms],
      })
    }
    for (const p of dash.panels) {
      const targets = p.targets ?? []
      if (targets.length === 0) continue
      const ms: number[] = []
      for (const [, rangeMs] of RANGES) {
        const from = new Date(end.getTime() - rangeMs).toISOString()
        let total = 0
        // A panel's queries run one after another here; Grafana runs them in parallel, so this is the worst case.
        for (const target of targets)
          total += await timeIt(
            expandGrafanaSql(target.rawSql, {
              from,
              to: end.toISOString(),
              intervalSeconds: grafanaInterval(rangeMs),
              vars,
            }),
          )
        ms.push(total)
      }
      rows.push({
        panel: `${file.replace('.json', '')} · ${p.title}${targets.length > 1 ? ` (${targets.length} queries)` : ''}`,
        ms,
      })
    }
  }
  const width = Math.max(...rows.map((r) => r.panel.length))
  console.log(
    `${'panel (median of '.padEnd(0)}${RUNS} warm runs, ms)`.padEnd(width + 2) +
      RANGES.map(([n]) => n.padStart(9)).join(''),
  )
  for (const r of rows)
    console.log(
      `${r.panel.padEnd(width + 2)}${r.ms.map((m) => `${m.toFixed(1).padStart(8)}${m >= GOAL_MS ? '!' : ' '}`).join('')}`,
    )
  const slow = rows.filter((r) => r.ms.some((m) => m >= GOAL_MS))
  const worst = Math.max(...rows.flatMap((r) => r.ms))
  console.log(
    `\n${rows.length} panels and variables; slowest ${worst.toFixed(1)} ms; ${slow.length === 0 ? `all under ${GOAL_MS} ms at every range` : `${slow.length} at or over ${GOAL_MS} ms (marked !)`}`,
  )
} finally {
  await db.destroy().catch(() => undefined)
  await server.stop().catch(() => undefined)
  await rm(dir, { recursive: true, force: true })
}
