/**
 * `npm run adoption-bench [-- --rows N]`: paku adopting an old stack's database the size of a few years of
 * a fleet (10 million measurements by default, one year of EcoFlow polls at 30 s, a year of device status
 * every 5 min), while a writer keeps inserting a measurement every 10 ms the way the old collector did.
 * Prints the adoption's total time, each step's, and the longest time an insert waited: how long writes
 * were blocked. A throwaway PostgreSQL with its default durability (fsync on).
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { migrationFiles } from '../src/assets.js'
import { createDatabase, createEmbeddedPostgres } from '../src/db/index.js'
import { createLogger } from '../src/log/index.js'
import { freePort } from './local-process.js'

const args = process.argv.slice(2)
const flag = (name: string) => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : undefined
}
const ROWS = Number(flag('--rows') ?? 10_000_000)
const ECOFLOW_ROWS = Number(flag('--ecoflow-rows') ?? (365 * 86400) / 30)
const STATUS_ROWS = Number(flag('--status-rows') ?? (365 * 86400) / 300) * 10
const CHUNK = 1_000_000
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`
const quiet = createLogger({ level: 'warn', format: 'pretty' })

const dir = await mkdtemp(join(tmpdir(), 'paku-adopt-'))
await chmod(dir, 0o711)
const server = createEmbeddedPostgres({
  dataDir: dir,
  port: await freePort(),
  log: quiet,
  ephemeral: true,
  settings: { max_wal_size: '4GB' },
})
await server.start()
const pool = new pg.Pool({ connectionString: server.url(), max: 4 })
pool.on('error', () => undefined)
const q = (text: string) => pool.query(text)
try {
  // The old database: init.sql's tables, the 2025-12 hand migration's measurements (no created_at, its
  // idx_measurements_new_* indexes), filled as its years of service left them.
  let t0 = performance.now()
  await q(`CREATE TABLE measurements (id BIGSERIAL PRIMARY KEY, site_id TEXT NOT NULL, system TEXT NOT NULL, device_id TEXT NOT NULL,
    location TEXT, ts TIMESTAMPTZ NOT NULL DEFAULT NOW(), metrics JSONB NOT NULL)`)
  for (let from = 0; from < ROWS; from += CHUNK) {
    const n = Math.min(CHUNK, ROWS - from)
    await q(`INSERT INTO measurements (site_id, system, device_id, location, ts, metrics)
      SELECT 'paku', CASE WHEN i % 5 = 0 THEN 'heater' ELSE 'sensors' END, 'dev' || (i % 20), 'van', NOW() - ((${ROWS} - i) * interval '10 seconds'),
        jsonb_build_object('temperature_c', 20 + (i % 100) / 10.0, 'humidity_percent', 40 + (i % 30), 'battery_mv', 2900 + (i % 100))
      FROM generate_series(${from + 1}, ${from + n}) i`)
  }
  await q(
    `CREATE INDEX idx_measurements_new_site_system_device ON measurements (site_id, system, device_id)`,
  )
  await q(`CREATE INDEX idx_measurements_new_ts ON measurements (ts)`)
  await q(
    `CREATE INDEX idx_measurements_new_site_system_device_ts ON measurements (site_id, system, device_id, ts DESC)`,
  )
  await q(`CREATE INDEX idx_measurements_new_metrics ON measurements USING GIN (metrics)`)
  await q(`CREATE TABLE ecoflow_measurements (id BIGSERIAL PRIMARY KEY, device_sn TEXT NOT NULL, ts TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    soc_percent INTEGER, remain_time_min INTEGER, watts_in_sum INTEGER, watts_out_sum INTEGER, ac_out_watts INTEGER, dc_out_watts INTEGER,
    typec_out_watts INTEGER, usb_out_watts INTEGER, pv_in_watts INTEGER, car_watts INTEGER, bms_temp NUMERIC, inv_out_temp NUMERIC)`)
  await q(`INSERT INTO ecoflow_measurements (device_sn, ts, soc_percent, pv_in_watts, watts_in_sum, watts_out_sum, bms_temp)
    SELECT 'DCABZ8ZE1234567', NOW() - i * interval '30 seconds', 50 + i % 50, (i % 4000), (i % 400), 100, 25 FROM generate_series(1, ${ECOFLOW_ROWS}) i`)
  await q(`CREATE INDEX idx_ecoflow_measurements_ts ON ecoflow_measurements (ts)`)
  await q(`CREATE INDEX idx_ecoflow_measurements_device_sn ON ecoflow_measurements (device_sn)`)
  await q(
    `CREATE INDEX idx_ecoflow_measurements_device_ts ON ecoflow_measurements (device_sn, ts DESC)`,
  )
  await q(`CREATE TABLE edge_device_status (id BIGSERIAL PRIMARY KEY, site_id TEXT NOT NULL, device_id TEXT NOT NULL, status JSONB NOT NULL,
    ts TIMESTAMPTZ NOT NULL DEFAULT NOW(), created_at TIMESTAMPTZ NOT NULL DEFAULT NOW())`)
  await q(`INSERT INTO edge_device_status (site_id, device_id, status, ts, created_at)
    SELECT 'paku', 'ESP32-' || lpad((i % 10)::text, 8, '0'), jsonb_build_object('online', true, 'uptime_seconds', i, 'signal_strength_dbm', -60), NOW() - i * interval '30 seconds', NOW() - i * interval '30 seconds'
    FROM generate_series(1, ${STATUS_ROWS}) i`)
  await q(
    `CREATE INDEX idx_edge_status_site_device_ts ON edge_device_status (site_id, device_id, ts DESC)`,
  )
  await q(`CREATE INDEX idx_edge_status_ts ON edge_device_status (ts DESC)`)
  await q(`CREATE INDEX idx_edge_status_status ON edge_device_status USING GIN (status)`)
  await q('VACUUM ANALYZE')
  const size = (await q(`SELECT pg_size_pretty(pg_total_relation_size('measurements')) AS s`))
    .rows[0].s as string
  console.log(
    `old database: ${ROWS.toLocaleString('en')} measurements (${size} with indexes), ${ECOFLOW_ROWS.toLocaleString('en')} EcoFlow polls, ${STATUS_ROWS.toLocaleString('en')} status rows; filled in ${secs(performance.now() - t0)}`,
  )

  // The old collector keeps writing through the cut-over: one insert every 10 ms, each timed.
  const writer = new pg.Client({ connectionString: server.url() })
  await writer.connect()
  let writing = true
  const waits: number[] = []
  const writes = (async () => {
    while (writing) {
      const s = performance.now()
      await writer.query(
        `INSERT INTO measurements (site_id, system, device_id, metrics) VALUES ('paku', 'sensors', 'writer', '{"temperature_c": 21}')`,
      )
      waits.push(performance.now() - s)
      await new Promise((r) => setTimeout(r, 10))
    }
  })()

  const lines: Array<{ msg: string; time: number; fields: Record<string, unknown> }> = []
  const log = createLogger({
    level: 'info',
    format: 'json',
    write: (l) => {
      const x = JSON.parse(l) as { msg: string; [k: string]: unknown }
      lines.push({ msg: x.msg, time: performance.now(), fields: x })
      if (/index|rescal|migration/.test(x.msg))
        console.log(
          `  ${x.msg} ${JSON.stringify(Object.fromEntries(Object.entries(x).filter(([k]) => !['time', 'level', 'ns', 'msg'].includes(k))))}`,
        )
    },
  })
  t0 = performance.now()
  const db = createDatabase({
    config: { url: server.url(), poolSize: 4, embedded: { port: 0 } },
    dataDir: dir,
    log,
    migrations: migrationFiles(),
    indexes: 'wait',
  })
  await db.start()
  const total = performance.now() - t0
  const migrated = (lines.filter((l) => l.msg === 'applied migration').at(-1)?.time ?? t0) - t0
  await db.stop()
  writing = false
  await writes
  await writer.end()
  waits.sort((a, b) => a - b)
  const p = (x: number) =>
    waits[Math.min(waits.length - 1, Math.floor((x / 100) * waits.length))] ?? 0
  const built = lines
    .filter((l) => l.msg === 'index built')
    .map((l) => `${String(l.fields.index)} ${String(l.fields.seconds)} s`)
  const reused = lines
    .filter((l) => l.msg.includes('an existing one serves it'))
    .map((l) => `${String(l.fields.index)} → ${String(l.fields.uses)}`)
  console.log(`
| adoption of ${ROWS.toLocaleString('en')} measurements | |
|---|---|
| total (migrations, one-time rewrites, index builds) | ${secs(total)} |
| migrations (one transaction) | ${secs(migrated)} |
| indexes built concurrently | ${built.join('; ') || 'none'} |
| indexes used as they are | ${reused.join('; ') || 'none'} |
| inserts during adoption | ${waits.length.toLocaleString('en')} |
| longest insert (writes blocked) | ${p(100).toFixed(0)} ms |
| insert p99 / p50 | ${p(99).toFixed(1)} / ${p(50).toFixed(1)} ms |
`)
} finally {
  await pool.end().catch(() => undefined)
  await server.stop()
  await rm(dir, { recursive: true, force: true })
}
