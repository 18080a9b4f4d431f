/**
 * `npm run cluster-bench`: end-to-end throughput of 1, 2 and 3 paku instances on one PostgreSQL and one
 * Redis, all on this machine (a simulation: on one machine the instances share its cores, so the ratio
 * is what the figures show, not what separate VMs would do).
 *
 * Starts a real PostgreSQL (embedded binaries, fsync on), a redis-server, and for each run N paku
 * processes (`src/main.ts serve`); splits DEVICES devices evenly over the instances, one load
 * generator (scripts/bench-load.ts) per instance, all at once, publishing MESSAGES QoS 1 messages in
 * total as fast as PUBACKs come back; then waits for every row and prints, per run: rows/s end to end
 * (first publish → last PUBACK, which paku sends only once the row is committed), acknowledged, stored, lost (acknowledged, not stored),
 * duplicated (stored twice), PUBACK p50/p99.
 * Runs: "1 (no Redis)" — today's single instance — then 1, 2 and 3 instances with Redis.
 *
 * Options (env): MESSAGES=30000 DEVICES=100 RUNS=single,1,2,3
 * Loopback only; everything it starts it stops.
 */
import { spawn } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { createEmbeddedPostgres } from '../src/db/embedded.js'
import { createLogger } from '../src/log/index.js'
import { freePort, startInstance, startRedis, type Instance } from './cluster-kit.js'

const MESSAGES = Number(process.env.MESSAGES ?? 30_000)
const DEVICES = Number(process.env.DEVICES ?? 100)
const RUNS = (process.env.RUNS ?? 'single,1,2,3').split(',')
const log = (line: string) => console.log(`[cluster-bench] ${line}`)

type Load = {
  sent: number
  errors: number
  firstPublishMs: number
  lastDoneMs: number
  pubackP50Ms: number | null
  pubackP99Ms: number | null
}

function runLoad(port: number, devices: number, messages: number, prefix: string): Promise<Load> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'scripts/bench-load.ts',
        '--port',
        String(port),
        '--devices',
        String(devices),
        '--messages',
        String(messages),
        '--qos',
        '1',
        '--prefix',
        prefix,
      ],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    )
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.once('exit', (code) => {
      const line = out.trim().split('\n').pop() ?? ''
      if (code !== 0) return reject(new Error(`bench-load exited with ${code}: ${out}`))
      resolve(JSON.parse(line) as Load)
    })
  })
}

const root = mkdtempSync(join(tmpdir(), 'paku-cluster-bench-'))
// As root, PostgreSQL runs as user postgres, which must be able to pass through this directory.
chmodSync(root, 0o711)
const database = createEmbeddedPostgres({
  dataDir: join(root, 'pg'),
  port: await freePort(),
  log: createLogger({ level: 'warn', format: 'pretty' }),
  settings: { max_connections: '200' },
})
await database.start()
const redis = await startRedis()
const db = new pg.Client({ connectionString: database.url() })
await db.connect()
const results: Array<Record<string, unknown>> = []

try {
  for (const run of RUNS) {
    const n = run === 'single' ? 1 : Number(run)
    const label = run === 'single' ? '1 (no Redis)' : String(n)
    const nodes: Instance[] = []
    try {
      for (let k = 0; k < n; k++)
        nodes.push(
          await startInstance({
            name: `bench-${k}`,
            databaseUrl: database.url(),
            redisUrl: run === 'single' ? '' : redis.url,
          }),
        )
      await db.query('TRUNCATE measurements, ingest_dedup')
      await new Promise((r) => setTimeout(r, 1000))
      log(`${label}: ${MESSAGES} QoS 1 messages from ${DEVICES} devices over ${n} instance(s)`)
      const loads = await Promise.all(
        nodes.map((node, k) => {
          const devices = Math.floor(DEVICES / n) + (k < DEVICES % n ? 1 : 0)
          const messages = Math.floor(MESSAGES / n) + (k < MESSAGES % n ? 1 : 0)
          return runLoad(node.mqttPort, devices, messages, `i${k}`)
        }),
      )
      const acked = loads.reduce((s, l) => s + l.sent, 0)
      const first = Math.min(...loads.map((l) => l.firstPublishMs))
      // Every acknowledged message is committed already (the PUBACK waits for it); wait anyway, bounded.
      let stored = 0
      for (let i = 0; i < 100; i++) {
        stored = Number((await db.query('SELECT count(*)::int AS n FROM measurements')).rows[0].n)
        if (stored >= acked) break
        await new Promise((r) => setTimeout(r, 100))
      }
      const distinct = Number(
        (
          await db.query(
            `SELECT count(DISTINCT (device_id, metrics->>'measurement_sequence'))::int AS n FROM measurements`,
          )
        ).rows[0].n,
      )
      // A PUBACK goes out only once its row is committed: the last PUBACK is the end.
      const seconds = (Math.max(...loads.map((l) => l.lastDoneMs)) - first) / 1000
      const r = {
        instances: label,
        acknowledged: acked,
        errors: loads.reduce((s, l) => s + l.errors, 0),
        stored,
        lost: Math.max(0, acked - distinct),
        duplicated: stored - distinct,
        seconds: Math.round(seconds * 100) / 100,
        rowsPerSecond: Math.round(stored / seconds),
        pubackP50Ms: Math.max(...loads.map((l) => l.pubackP50Ms ?? 0)),
        pubackP99Ms: Math.max(...loads.map((l) => l.pubackP99Ms ?? 0)),
      }
      log(JSON.stringify(r))
      results.push(r)
    } finally {
      await Promise.all(nodes.map((node) => node.stop()))
    }
  }
} finally {
  await db.end()
  await redis.stop()
  await database.stop()
  rmSync(root, { recursive: true, force: true })
}

const base = Number(results[0]?.rowsPerSecond ?? 1)
console.log(
  '\n| instances | acknowledged | stored | lost | duplicated | seconds | rows/s | vs first | PUBACK p50 / p99 ms |',
)
console.log('|---|---|---|---|---|---|---|---|---|')
for (const r of results) {
  console.log(
    `| ${r.instances} | ${r.acknowledged} | ${r.stored} | ${r.lost} | ${r.duplicated} | ${r.seconds} | ${r.rowsPerSecond} | ${(Number(r.rowsPerSecond) / base).toFixed(2)}× | ${r.pubackP50Ms} / ${r.pubackP99Ms} |`,
  )
}
