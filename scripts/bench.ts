/**
 * `npm run bench`: paku's ingest throughput side by side with PostgreSQL's own ceiling and with the old
 * stack, and what paku costs a small machine, in one run on one machine (the machines are noisy: compare
 * ratios within a run).
 *
 *  1. Starts a fresh PostgreSQL (embedded binaries, default settings: fsync and synchronous_commit on)
 *     and applies paku's migrations.
 *  2. COPY ceiling: 500-row COPYs (one commit each) and one COPY stream into paku's `measurements`
 *     table, with all its indexes, from one node-postgres connection.
 *  3. paku as a user runs it (`paku serve`, default ingest settings) under scripts/bench-load.ts:
 *     100 devices, QoS 0 and QoS 1 at maximum rate (50k and 200k messages), fixed rates for 30 s
 *     each (QoS 1 at 1,000 msg/s for the PUBACK latency target, QoS 0 at 1,000 msg/s, QoS 1 at
 *     5,000 msg/s), and a 1M-message QoS 0 burst (peak RSS: backpressure, not OOM). After the 200k and
 *     the 1M QoS 0 bursts, paku's RSS once a second for 60 s from the last row stored: what it keeps, and
 *     how soon it is under 120 MiB.
 *  4. What a small fleet costs paku, on this machine's cores:
 *     - 50 and 200 msg/s at QoS 0 and QoS 1, 30 s each: with the 1,000 msg/s loads above, CPU per 1,000
 *       messages of paku and PostgreSQL (timers and idle work included) and the PUBACK latency at three
 *       fleet sizes;
 *     - idle: 100 connected devices that only ping (keepalive 60), 60 s after 5 s of settling: paku's and
 *       PostgreSQL's CPU per minute and paku's wakeups per second (context switches of all its threads);
 *     - the six steady loads (50, 200 and 1,000 msg/s × QoS 0 and 1) again with paku, PostgreSQL and the
 *       load generator pinned to one core (taskset), as on a 1-vCPU VM; the affinities are restored after.
 *  5. When the old stack is available (Debian's `mosquitto`, `python3-paho-mqtt`, `python3-psycopg` and
 *     the old collector's seed_collector.py in PEER_DIR, see below), Mosquitto + the old collector under
 *     the same loads, writing to a database of the same cluster with the old schema.
 *
 * Each run starts from an empty table; it prints rows/s end to end (first publish → last row
 * committed), the ratio to the COPY ceiling and to the peer, messages lost (acknowledged or written
 * to the socket but not stored) and duplicated, CPU per 1,000 messages of each process and peak RSS;
 * then the memory after the bursts, the idle figures, and a summary of the small-machine figures with
 * the machine they were measured on (CPU model, cores, RAM).
 *
 * Each system first gets an unmeasured warm-up load (10k messages at QoS 0, then at QoS 1; --no-warmup
 * to measure it cold).
 *
 * Options: --quick (a tenth of the messages and of each fixed rate's 30 s, no 1M burst, 10 s instead of
 * 60 s after the bursts and idle), --no-peer, --no-million, --no-warmup, --no-idle, --no-1cpu,
 * --devices N, --bin dist/paku (the single executable instead of the sources), --pg-bin DIR (other
 * PostgreSQL binaries, e.g. Debian's /usr/lib/postgresql/15/bin, as the old stack's bench ran), --only TEXT
 * (the paku loads whose label contains it, or any of several separated by |: e.g. "200k", "msg/s",
 * "idle", "1 vCPU", "5,000|1M"), --profile DIR.
 * Results also go to bench-results/<time>.jsonl. Loopback only; everything it starts it stops.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
  appendFileSync,
} from 'node:fs'
import { cpus, tmpdir, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import { parseArgs } from 'node:util'
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { from as copyFrom } from 'pg-copy-streams'
import { createEmbeddedPostgres, preparingPool, type DB } from '../src/db/index.js'
import type { Row } from '../src/ingest/index.js'
import { writeTelemetry } from '../src/ingest/store.js'
import { freePort, serveEnv, unitMallocEnv } from './local-process.js'
import { createLogger } from '../src/log/index.js'

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    'no-peer': { type: 'boolean', default: false },
    'no-million': { type: 'boolean', default: false },
    devices: { type: 'string', default: '100' },
    /** Runs only the paku loads whose label contains this text (and no peer). */
    only: { type: 'string' },
    /** Writes V8 CPU profiles of paku (node --cpu-prof) to this directory (from source only). */
    profile: { type: 'string' },
    /** Runs this paku executable (npm run build → dist/paku) instead of the sources under Node. */
    bin: { type: 'string' },
    /** PostgreSQL binaries to run the cluster with, e.g. /usr/lib/postgresql/15/bin (default: npm's embedded ones). */
    'pg-bin': { type: 'string' },
    /** Measures each system cold: no unmeasured warm-up load after it starts. */
    'no-warmup': { type: 'boolean', default: false },
    /** Skips the idle measurement (100 connected devices that only ping). */
    'no-idle': { type: 'boolean', default: false },
    /** Skips the steady loads on one core. */
    'no-1cpu': { type: 'boolean', default: false },
  },
})
const SCALE = flags.quick ? 0.1 : 1
const DEVICES = Number(flags.devices)
const STALL_S = 15
/**
 * Where the old stack's bench files are (its collector seed_collector.py, schema.sql, the Mosquitto
 * scripts mosq-up.sh and mosq-down.sh): PEER_DIR, by default ../shared/bench, a directory beside this
 * checkout where the development setup keeps them. Without them the old stack is skipped.
 */
const PEER_DIR = resolve(process.env.PEER_DIR ?? '../shared/bench')
const CLK_TCK = 100

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const say = (line: string) => console.log(`[bench] ${line}`)

// ---------------------------------------------------------------- process accounting (/proc)

/** CPU seconds (user + system) of one process. */
function cpuOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK
  } catch {
    return 0
  }
}

/**
 * CPU seconds of PostgreSQL: the postmaster, its live children (backends come and go with the
 * connection pools) and, through the postmaster's cutime/cstime, the children that already exited.
 */
function treeCpu(pid: number): number {
  let total = 0
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
    total +=
      (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) / CLK_TCK
  } catch {
    return 0
  }
  for (const child of childrenOf(pid)) total += cpuOf(child)
  return total
}

/** The live processes whose parent is `pid`. */
function childrenOf(pid: number): number[] {
  const children: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid)
        children.push(Number(name))
    } catch {
      // gone meanwhile
    }
  }
  return children
}

/**
 * Context switches so far of each thread of a process, by thread id: voluntary (it slept and something
 * woke it: a timer, a socket, another thread) plus nonvoluntary (preempted).
 */
function switchesOf(pid: number): Map<string, number> {
  const byThread = new Map<string, number>()
  let tids: string[] = []
  try {
    tids = readdirSync(`/proc/${pid}/task`)
  } catch {
    return byThread
  }
  for (const tid of tids) {
    try {
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8')
      const n = (field: string) =>
        Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0)
      byThread.set(tid, n('voluntary_ctxt_switches') + n('nonvoluntary_ctxt_switches'))
    } catch {
      // thread gone meanwhile
    }
  }
  return byThread
}

/** The switches between two readings, over the threads alive at the second (one that exited took its count along). */
function switchesBetween(before: Map<string, number>, after: Map<string, number>): number {
  let sum = 0
  for (const [tid, n] of after) sum += n - (before.get(tid) ?? 0)
  return sum
}

function statusField(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(
      readFileSync(`/proc/${pid}/status`, 'utf8'),
    )
    return m ? Number(m[1]) / 1024 : 0
  } catch {
    return 0
  }
}

/** The cores a process may run on (taskset's list, e.g. "0-1"). */
function cpusAllowed(pid: number): string {
  return /^Cpus_allowed_list:\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? ''
}

/** Sets the cores of processes and of all their threads (taskset -a); false if any of them failed. */
function pin(pids: number[], cores: string): boolean {
  return pids
    .map(
      (pid) =>
        spawnSync('taskset', ['-a', '-p', '-c', cores, String(pid)], { stdio: 'ignore' }).status ===
        0,
    )
    .every(Boolean)
}

/** What the figures were measured on. */
function machine(): { cpu: string; cores: number; ramMiB: number } {
  const model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]
  return {
    cpu: model ?? 'unknown CPU',
    cores: cpus().length,
    ramMiB: Math.round(totalmem() / 2 ** 20),
  }
}

/** CPU seconds the whole host has spent busy (all cores), from /proc/stat. */
function hostBusy(): number {
  const f = (readFileSync('/proc/stat', 'utf8').split('\n')[0] as string)
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number)
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f
  return (user + nice + system + irq + softirq + steal) / CLK_TCK
}

/** Resets the peak-RSS counter (VmHWM) so each run reports its own peak. */
function resetPeak(pid: number): void {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5')
  } catch {
    // older kernels: the peak then covers earlier runs too
  }
}

// ---------------------------------------------------------------- PostgreSQL

const root = mkdtempSync(join(tmpdir(), 'paku-bench-'))
// As root, PostgreSQL runs as user postgres, which must be able to pass through this directory.
chmodSync(root, 0o711)
const pgPort = await freePort()
// track_commit_timestamp: each row's commit time, for when a load's last row was stored (see e2e()).
const database = createEmbeddedPostgres({
  dataDir: join(root, 'pg'),
  port: pgPort,
  log: createLogger({ level: 'warn', format: 'pretty' }),
  binDir: flags['pg-bin'],
  settings: { track_commit_timestamp: 'on' },
})
const started: Array<() => Promise<void> | void> = [async () => database.stop()]
async function cleanup(): Promise<void> {
  while (started.length > 0) await (started.pop() as () => Promise<void>)()
  rmSync(root, { recursive: true, force: true })
}
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.once(signal, () => void cleanup().finally(() => process.exit(130)))

await database.start()
const pakuUrl = database.url()
const postmasterPid = Number(
  readFileSync(join(root, 'pg', 'postgres', 'postmaster.pid'), 'utf8').split('\n')[0],
)

function sqlClient(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url })
  return c.connect().then(() => c)
}

function runPaku(args: string[], env: Record<string, string>): ChildProcess {
  const prof = flags.profile ? ['--cpu-prof', '--cpu-prof-dir', resolve(flags.profile)] : []
  const [cmd, argv] = flags.bin
    ? [resolve(flags.bin), args]
    : [process.execPath, [...prof, '--import', 'tsx', 'src/main.ts', ...args]]
  return spawn(cmd, argv, {
    env: {
      ...process.env,
      PAKU_DATABASE_URL: pakuUrl,
      PAKU_LOG_LEVEL: process.env.PAKU_LOG_LEVEL ?? 'warn',
      PAKU_LOG_FORMAT: 'json',
      ...env,
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  })
}
const exited = (p: ChildProcess) =>
  new Promise<number>((r) =>
    p.exitCode !== null ? r(p.exitCode) : p.once('exit', (code) => r(code ?? 1)),
  )

// ---------------------------------------------------------------- COPY ceiling

const COPY_ROWS = Math.round(200_000 * SCALE)
function copyLine(i: number): string {
  const d = i % DEVICES
  const metrics = JSON.stringify({
    temperature_c: 21.37,
    humidity_percent: 45.12,
    pressure_hpa: 1001.5,
    battery_mv: 2950,
    tx_power_dbm: 4,
    movement_counter: i % 256,
    measurement_sequence: Math.floor(i / DEVICES),
  })
  return `bench\tsensors\truuvi_${String(d).padStart(4, '0')}\tcabin\tC7:00:00:01:1A:2B\t${new Date().toISOString()}\t${metrics}\n`
}

type Ceiling = { rowsPerS: number; pgCpuMsPer1000: number }

type Writer = { write: () => Promise<void>; close: () => Promise<void> }

/**
 * Times one way of writing COPY_ROWS rows into an empty table, and PostgreSQL's CPU per 1,000 rows
 * (read while its connection is still open: a backend's CPU is only counted while it lives).
 */
async function ceiling(open: () => Promise<Writer>): Promise<Ceiling> {
  const c = await sqlClient(pakuUrl)
  await c.query('TRUNCATE measurements, ingest_dedup')
  await c.query('CHECKPOINT')
  const w = await open()
  const cpu0 = treeCpu(postmasterPid)
  const t0 = performance.now()
  await w.write()
  const seconds = (performance.now() - t0) / 1000
  const cpu = treeCpu(postmasterPid) - cpu0
  await w.close()
  await c.query('TRUNCATE measurements, ingest_dedup')
  await c.end()
  return {
    rowsPerS: Math.round(COPY_ROWS / seconds),
    pgCpuMsPer1000: Math.round((cpu / COPY_ROWS) * 1_000_000 * 10) / 10,
  }
}

/** COPY FROM STDIN in `chunk`-row COPYs, each its own transaction. */
async function copyRows(chunk: number): Promise<Writer> {
  const c = await sqlClient(pakuUrl)
  return {
    write: async () => {
      for (let start = 0; start < COPY_ROWS; start += chunk) {
        const lines: string[] = []
        for (let i = start; i < Math.min(COPY_ROWS, start + chunk); i++) lines.push(copyLine(i))
        await pipeline(
          Readable.from(lines),
          c.query(
            copyFrom(
              'COPY measurements (site_id, system, device_id, location, mac, ts, metrics) FROM STDIN',
            ),
          ),
        )
      }
    },
    close: () => c.end(),
  }
}

/**
 * paku's own batch statement (src/ingest/store.ts) in `chunk`-row batches: the writer without the
 * broker. With `qos1`, each row also carries the message id paku remembers for QoS 1 redeliveries.
 */
async function pakuStatement(chunk: number, qos1 = false): Promise<Writer> {
  // As paku runs it: the batch statement prepared on its connection (src/db PREPARED).
  const db = new Kysely<DB>({
    dialect: new PostgresDialect({
      pool: preparingPool(new pg.Pool({ connectionString: pakuUrl, max: 1 })),
    }),
  })
  await sql`SELECT 1`.execute(db) // opens the connection before the clock starts, as COPY's does
  return {
    write: async () => {
      for (let start = 0; start < COPY_ROWS; start += chunk) {
        const rows: Array<Extract<Row, { kind: 'measurement' }>> = []
        for (let i = start; i < Math.min(COPY_ROWS, start + chunk); i++) {
          const [site, system, device, location, mac, ts, metrics] = copyLine(i)
            .trimEnd()
            .split('\t') as string[]
          const row: Extract<Row, { kind: 'measurement' }> = {
            kind: 'measurement',
            siteId: site as string,
            system: system as string,
            deviceId: device as string,
            location: location as string,
            mac: mac as string,
            ts: new Date(ts as string),
            metrics: metrics as string,
          }
          if (qos1)
            row.dedup = {
              clientId: `bench-${i % DEVICES}`,
              messageId: (Math.floor(i / DEVICES) % 65535) + 1,
              digest: 'x'.repeat(27) + '=',
            }
          rows.push(row)
        }
        await writeTelemetry(db, rows)
      }
    },
    close: () => db.destroy(),
  }
}

/** paku's migrations, then the write ceilings of the fresh `measurements` table. */
async function ceilings() {
  if ((await exited(runPaku(['migrate'], {}))) !== 0) throw new Error('paku migrate failed')
  say(
    `PostgreSQL on 127.0.0.1:${pgPort}; write ceilings with ${COPY_ROWS.toLocaleString('en')} rows`,
  )
  const c = {
    copy500: await ceiling(() => copyRows(500)),
    copyStream: await ceiling(() => copyRows(COPY_ROWS)),
    statement1000: await ceiling(() => pakuStatement(1000)),
    statementQos1: await ceiling(() => pakuStatement(1000, true)),
  }
  say(`ceilings: ${JSON.stringify(c)}`)
  return c
}

// ---------------------------------------------------------------- one end-to-end run

type Target = {
  system: string
  port: number
  dbUrl: string
  table: string
  watch: Record<string, number>
  /**
   * paku's own counters (/health): batches written and MQTT client errors, for rows per flush and a sanity
   * check, and when its last rollup pass finished; and its /metrics series, for the stalls of a load (see
   * stalls()).
   */
  counters?: () => Promise<{
    flushes: number
    clientErrors: number
    metrics: Map<string, number>
    rollupAt: string | null
  }>
}
type Load = {
  qos: 0 | 1
  messages: number
  rate: number
  label: string
  /** Samples the RSS of paku for AFTER_S seconds after the last row is stored (see rssAfter()). */
  rssAfter?: boolean
  /** The cores the load generator runs on (taskset -c), when the phase pins the system under test. */
  cores?: string
}
type Result = Record<string, unknown> & {
  system: string
  label: string
  rowsPerS: number
  lost: number
  duplicated: number
}

async function e2e(target: Target, load: Load): Promise<Result> {
  const c = await sqlClient(target.dbUrl)
  // The harness's polling below must not compete for the cores it measures: planned as a parallel
  // scan (a small table without statistics yet), each poll forked two workers, several times a second.
  await c.query('SET max_parallel_workers_per_gather = 0')
  await c.query(`TRUNCATE ${target.table}`)
  await c.query('CHECKPOINT')
  const watched = Object.entries(target.watch)
  for (const [, pid] of watched) resetPeak(pid)
  const begin = async () => ({
    cpu0: Object.fromEntries(watched.map(([n, pid]) => [n, cpuOf(pid)])),
    pg0: treeCpu(postmasterPid),
    counters0: await target.counters?.(),
    background0: await backgroundWork(c),
    host0: hostBusy(),
    self0: process.cpuUsage(),
  })
  const rssMax: Record<string, number> = Object.fromEntries(watched.map(([n]) => [n, 0]))

  // A burst is measured from before its generator starts to after it exits, as it always was. A fixed rate
  // is the steady state of a fleet that stays connected: measured from a second after its devices are
  // connected to its last row stored, with them still connected, so that connecting and disconnecting 100
  // devices (~0.1 s of paku's CPU) do not weigh on 1,500 messages at 50 msg/s.
  const gated = load.rate > 0
  const early = gated ? undefined : await begin()
  const gen = loadgen(
    target.port,
    ['--messages', String(load.messages), '--qos', String(load.qos), '--rate', String(load.rate)],
    load.cores,
    gated,
  )
  let genCode: number | undefined
  void gen.exit.then((code) => (genCode = code))
  const openGate = async () => {
    if (!(await gen.connected)) {
      await c.end()
      throw new Error(`the load generator failed (exit code ${await gen.exit})`)
    }
    await sleep(1000)
    const start = await begin()
    gen.go()
    return start
  }
  const { cpu0, pg0, counters0, background0, host0, self0 } = early ?? (await openGate())

  // Counting only the rows above the last id seen keeps each poll cheap on a million-row table.
  let rows = 0
  let maxId = '0'
  let lastProgress = Date.now()
  let doneAt = Date.now()
  let sent = Infinity
  for (;;) {
    // At a fixed rate only the end needs to be seen soon: polling once a second until the generator is done
    // keeps the harness's own queries (PostgreSQL CPU) out of the low rates' CPU per 1,000 messages.
    await sleep(gated && !gen.done() ? 1000 : 100)
    for (const [n, pid] of watched)
      rssMax[n] = Math.max(rssMax[n] as number, statusField(pid, 'VmRSS'))
    const r = await c.query(
      `SELECT count(*)::int AS n, max(id)::text AS m FROM ${target.table} WHERE id > $1`,
      [maxId],
    )
    const n = r.rows[0].n as number
    if (n > 0) {
      rows += n
      maxId = r.rows[0].m as string
      lastProgress = doneAt = Date.now()
    }
    if (genCode !== undefined && genCode !== 0) {
      // Its own message (e.g. the broker refused the connection) is already on stderr; stop cleanly.
      await c.end()
      throw new Error(`the load generator failed (exit code ${genCode})`)
    }
    if (gen.done() && sent === Infinity) sent = gen.result<{ sent: number }>().sent
    if (gen.done() && (rows >= sent || Date.now() - lastProgress > STALL_S * 1000)) break
  }
  const memoryAfter =
    load.rssAfter && target.watch.paku ? rssAfter(target.watch.paku, doneAt) : undefined
  const gen1 = gen.result<{
    sent: number
    errors: number
    firstPublishMs: number
    lastDoneMs: number
    publishRate: number
    pubackP50Ms: number | null
    pubackP99Ms: number | null
    pubackMaxMs: number | null
    slowPubacks?: unknown
    cpuS: number
  }>()
  const cpu = Object.fromEntries(watched.map(([n, pid]) => [n, cpuOf(pid) - (cpu0[n] as number)]))
  const pgCpu = treeCpu(postmasterPid) - pg0
  const self = process.cpuUsage(self0)
  // Busy CPU of the host that was none of the processes measured (nor this harness): other work on a
  // shared machine, which the figures of that run suffer from.
  const otherCpuS =
    hostBusy() -
    host0 -
    Object.values(cpu).reduce((a, b) => a + b, 0) -
    pgCpu -
    gen1.cpuS -
    (self.user + self.system) / 1e6
  gen.release()
  if ((await gen.exit) !== 0) throw new Error('the load generator failed after its result')
  const peak = Object.fromEntries(
    watched.map(([n, pid]) => [
      n,
      Math.round(Math.max(rssMax[n] as number, statusField(pid, 'VmHWM')) * 10) / 10,
    ]),
  )
  const counters1 = await target.counters?.()
  const flushes = counters0 && counters1 ? counters1.flushes - counters0.flushes : undefined
  const background1 = await backgroundWork(c)
  // When the last row was committed. The poll above sees it up to 100 ms (and a query) later, which
  // stretched a 1.7 s burst by ~3 % on average; the ceilings are timed exactly, so the loads are too.
  const lastCommit = await c.query(
    `SELECT (extract(epoch FROM max(pg_xact_commit_timestamp(xmin))) * 1000)::float8 AS ms FROM ${target.table}`,
  )
  const storedAt = (lastCommit.rows[0].ms as number | null) ?? doneAt
  const q = await c.query(
    `SELECT count(*)::int AS n, count(DISTINCT (device_id, metrics->>'measurement_sequence'))::int AS d FROM ${target.table} WHERE device_id LIKE 'ruuvi_%'`,
  )
  await c.end()
  const stored = q.rows[0].n as number
  const distinct = q.rows[0].d as number
  const seconds = Math.max(0.001, (storedAt - gen1.firstPublishMs) / 1000)
  const polledSeconds = Math.max(0.001, (doneAt - gen1.firstPublishMs) / 1000)
  // CPU milliseconds per 1,000 stored rows.
  const per1000 = (s: number) => Math.round((s / Math.max(1, stored)) * 1_000_000 * 10) / 10
  const result: Result = {
    system: target.system,
    label: load.label,
    qos: load.qos,
    rate: load.rate,
    messages: load.messages,
    sent: gen1.sent,
    publishErrors: gen1.errors,
    stored,
    lost: gen1.sent - distinct,
    duplicated: stored - distinct,
    seconds: Math.round(seconds * 100) / 100,
    rowsPerS: Math.round(stored / seconds),
    /** The same timed by the first of the 100 ms polls that saw the last row (up to a poll later). */
    rowsPerSPolled: Math.round(stored / polledSeconds),
    publishRate: gen1.publishRate,
    pubackP50Ms: gen1.pubackP50Ms,
    pubackP99Ms: gen1.pubackP99Ms,
    pubackMaxMs: gen1.pubackMaxMs,
    slowPubacks: gen1.slowPubacks,
    cpuMsPer1000: Object.fromEntries([
      ...Object.entries(cpu).map(([n, s]) => [n, per1000(s)]),
      ['postgres', per1000(pgCpu)],
      ['loadgen', per1000(gen1.cpuS)],
    ]),
    peakRssMiB: peak,
    rowsPerFlush: flushes ? Math.round(stored / flushes) : undefined,
    clientErrors:
      counters0 && counters1 ? counters1.clientErrors - counters0.clientErrors : undefined,
    /**
     * Whether one of paku's rollup passes (every 60 s) finished during the load: at a low rate its work is a
     * good part of the CPU per 1,000 messages, and a 30 s load holds one or none.
     */
    rollupPass: counters0 && counters1 ? counters1.rollupAt !== counters0.rollupAt : undefined,
    ...(counters0 && counters1 ? stalls(counters0.metrics, counters1.metrics) : {}),
    otherHostCpuS: Math.max(0, Math.round(otherCpuS * 10) / 10),
    autovacuums: background1.vacuums - background0.vacuums,
    autoanalyzes: background1.analyzes - background0.analyzes,
    loadgenCores: load.cores,
    ...(memoryAfter ? await memoryAfter : {}),
  }
  say(JSON.stringify(result))
  return result
}

/**
 * The load generator as a child process (under `taskset -c cores` when given): its stdout and its exit.
 * `gated` (bench-load.ts --gated): it publishes on go() and disconnects on release().
 */
function loadgen(port: number, args: string[], cores?: string, gated = false) {
  const argv = [
    '--import',
    'tsx',
    'scripts/bench-load.ts',
    '--port',
    String(port),
    '--devices',
    String(DEVICES),
    ...args,
    ...(gated ? ['--gated'] : []),
  ]
  const [cmd, cmdArgs] = cores
    ? ['taskset', ['-c', cores, process.execPath, ...argv]]
    : [process.execPath, argv]
  const child = spawn(cmd, cmdArgs, { stdio: [gated ? 'pipe' : 'ignore', 'pipe', 'inherit'] })
  child.stdin?.on('error', () => {}) // it exited early: its exit code says why
  const exit = exited(child)
  let out = ''
  /** With --hold or --gated: true once it says every device is connected, false if it exits before. */
  const connected = new Promise<boolean>((resolve) => {
    child.stdout?.on('data', (b: Buffer) => {
      out += b.toString()
      if (out.includes('"connected"')) resolve(true)
    })
    void exit.then(() => resolve(false))
  })
  const lastLine = () => out.trim().split('\n').pop() as string
  return {
    exit,
    connected,
    go: () => child.stdin?.write('go\n'),
    release: () => child.stdin?.end(),
    /** Whether it printed its result (its last line, with `sent`). */
    done: () => out.endsWith('\n') && lastLine().includes('"sent"'),
    result: <T>() => JSON.parse(lastLine()) as T,
  }
}

const AFTER_S = Math.max(10, Math.round(60 * SCALE))
const LOW_RSS_MIB = 120

/**
 * paku's RSS once a second for AFTER_S seconds from `fromMs` (when the harness saw a burst's last row
 * stored): what it keeps of the burst's memory, and how many seconds until it was first under
 * LOW_RSS_MIB (null: not within AFTER_S).
 */
async function rssAfter(pid: number, fromMs: number) {
  const mib: number[] = []
  for (let s = 0; s <= AFTER_S; s++) {
    await sleep(fromMs + s * 1000 - Date.now())
    mib.push(Math.round(statusField(pid, 'VmRSS')))
  }
  const under = mib.findIndex((m) => m < LOW_RSS_MIB)
  return {
    rssAfterMiB: mib,
    rssAfterEndMiB: mib.at(-1),
    rssAfterS: AFTER_S,
    sUnderLowRss: under < 0 ? null : under,
    lowRssMiB: LOW_RSS_MIB,
  }
}

/**
 * PostgreSQL's autovacuum and autoanalyze runs so far on the target's tables: background work that takes
 * CPU from a load it lands in. The harness's TRUNCATE leaves an empty table, which autovacuum's insert
 * threshold (1,000 rows plus a fifth of the table) makes due again after every load.
 */
async function backgroundWork(c: pg.Client): Promise<{ vacuums: number; analyzes: number }> {
  const r = await c.query(
    'SELECT coalesce(sum(autovacuum_count), 0)::int AS v, coalesce(sum(autoanalyze_count), 0)::int AS a FROM pg_stat_user_tables',
  )
  return { vacuums: r.rows[0].v as number, analyzes: r.rows[0].a as number }
}

/** Prometheus text → value per series (`name{labels}`). */
function parseMetrics(text: string): Map<string, number> {
  const m = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const cut = line.lastIndexOf(' ')
    m.set(line.slice(0, cut), Number(line.slice(cut + 1)))
  }
  return m
}

/**
 * What held paku's answers up during a load, from its /metrics before and after: event-loop stalls over
 * 0.1 s (paku itself busy: a long synchronous piece of work or a GC pause), batch writes over 0.1 s
 * (PostgreSQL slow to commit), and the garbage collector's pauses in all. A PUBACK tail with neither
 * came from outside paku and PostgreSQL (the load generator, or other work on the host).
 */
function stalls(m0: Map<string, number>, m1: Map<string, number>) {
  const delta = (series: string) => (m1.get(series) ?? 0) - (m0.get(series) ?? 0)
  /** Observations above `le` seconds, and the bound the longest of them stayed under (null: unbounded). */
  const over = (name: string, le: string) => {
    const total = delta(`${name}_bucket{le="+Inf"}`)
    const bounds = [...m1.keys()]
      .filter((k) => k.startsWith(`${name}_bucket{le="`) && !k.endsWith('"+Inf"}'))
      .map((k) => Number(k.slice(name.length + 12, -2)))
    const longest = bounds
      .sort((a, b) => a - b)
      .find((b) => delta(`${name}_bucket{le="${b}"}`) === total)
    return {
      count: total - delta(`${name}_bucket{le="${le}"}`),
      under: total === 0 ? 0 : (longest ?? null),
    }
  }
  const loop = over('paku_event_loop_delay_seconds', '0.1')
  const batch = over('paku_ingest_flush_duration_seconds', '0.1')
  return {
    loopStallsOver100ms: loop.count,
    longestLoopStallUnderS: loop.under,
    slowBatchesOver100ms: batch.count,
    longestBatchUnderS: batch.under,
    gcPauseS: Math.round(delta('paku_gc_pause_seconds_sum') * 1000) / 1000,
  }
}

// ---------------------------------------------------------------- the suites

const loads = (msgs: number): Load[] => [
  { label: `${msgs / 1000}k QoS 0, max rate`, qos: 0, messages: msgs, rate: 0 },
  { label: `${msgs / 1000}k QoS 1, max rate`, qos: 1, messages: msgs, rate: 0 },
]
const burst = Math.round(50_000 * SCALE)
const big = Math.round(200_000 * SCALE)
/**
 * Fixed rates, 30 s each: QoS 1 at 1,000 msg/s (the PUBACK latency target; first, right after the bursts,
 * where it has always run), QoS 0 at the same rate (steady-state CPU, the old stack beside it), and QoS 1
 * at 5,000 msg/s (latency at a sustained rate well below the maximum; not for the old stack, which drains
 * ~2–4k rows/s).
 */
const fixed: Load[] = [steady(1000, 1), steady(1000, 0), steady(5000, 1)]
/** `rate` msg/s in total for 30 s (a tenth with --quick), labelled e.g. "1,000 msg/s QoS 1" after `prefix`. */
function steady(rate: number, qos: 0 | 1, prefix = ''): Load {
  return {
    label: `${prefix}${rate.toLocaleString('en')} msg/s QoS ${qos}`,
    qos,
    messages: Math.round(rate * 30 * SCALE),
    rate,
  }
}
/**
 * A small fleet's steady rates: with the 1,000 msg/s loads of `fixed`, CPU per 1,000 messages at three fleet
 * sizes. At 50 msg/s, 30 s is 1,500 messages; the figure includes paku's timers and idle work over the
 * load, which is what that rate costs.
 */
const STEADY_RATES = [50, 200, 1000]
const smallFleet: Load[] = [steady(50, 0), steady(50, 1), steady(200, 0), steady(200, 1)]
const ONE_CPU = '1 vCPU · '
const oneCpuLoads: Load[] = STEADY_RATES.flatMap((rate) =>
  [0, 1].map((qos) => ({ ...steady(rate, qos as 0 | 1, ONE_CPU), cores: '0' })),
)
const IDLE_LABEL = `idle, ${DEVICES} devices`
/** --only A|B: the loads whose label contains any of the alternatives. */
const selected = (label: string) =>
  !flags.only || flags.only.split('|').some((part) => label.includes(part))
const results: Result[] = []
let idleResult: Idle | undefined

/**
 * An unmeasured QoS 0 and QoS 1 load right after a system starts, as a benchmark's warm-up run: a server
 * runs for weeks, and without it the first 3-second burst timed V8 compiling paku's hot paths (paku's CPU
 * per message in the first QoS 1 burst was a median ~20 % higher cold than after a warm-up; docs/performance.md,
 * "How the benchmark measures").
 * The old stack gets the same.
 */
async function warmUp(target: Target): Promise<void> {
  if (flags['no-warmup']) return
  for (const qos of [0, 1] as const) {
    await e2e(target, {
      label: `warm-up (not reported), ${WARMUP / 1000}k QoS ${qos}`,
      qos,
      messages: WARMUP,
      rate: 0,
    })
  }
}
const WARMUP = Math.round(10_000 * SCALE)

async function pakuSuite(): Promise<void> {
  const mqttPort = await freePort()
  const httpPort = await freePort()
  const paku = runPaku(['serve'], {
    ...serveEnv({ databaseUrl: pakuUrl, dataDir: join(root, 'paku'), mqttPort, httpPort }),
    // As the systemd unit runs it (build/systemd/paku.service).
    ...unitMallocEnv(),
  })
  const stop = async () => {
    if (paku.exitCode !== null) return
    paku.kill('SIGTERM')
    await exited(paku)
  }
  started.push(stop)
  for (let i = 0; ; i++) {
    if (i > 600) throw new Error('paku did not become healthy')
    if (
      await fetch(`http://127.0.0.1:${httpPort}/health`).then(
        (r) => r.ok,
        () => false,
      )
    )
      break
    await sleep(100)
  }
  const target: Target = {
    system: 'paku',
    port: mqttPort,
    dbUrl: pakuUrl,
    table: 'measurements',
    watch: { paku: paku.pid as number },
    counters: async () => {
      const h = (await (await fetch(`http://127.0.0.1:${httpPort}/health`)).json()) as {
        ingest: { flushes: number }
        broker: { clientErrors: number }
        rollup?: { lastPass: { at: string } | null }
      }
      const metrics = parseMetrics(
        await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text(),
      )
      return {
        flushes: h.ingest.flushes,
        clientErrors: h.broker.clientErrors,
        metrics,
        rollupAt: h.rollup?.lastPass?.at ?? null,
      }
    },
  }
  say(`paku (pid ${paku.pid}) on 127.0.0.1:${mqttPort}`)
  await warmUp(target)
  const [big0, big1] = loads(big) as [Load, Load]
  const all = [...loads(burst), { ...big0, rssAfter: true }, big1, ...fixed]
  if (!flags.quick && !flags['no-million'])
    all.push({ label: '1M QoS 0, max rate', qos: 0, messages: 1_000_000, rate: 0, rssAfter: true })
  all.push(...smallFleet)
  for (const load of all.filter((l) => selected(l.label))) results.push(await e2e(target, load))
  if (!flags['no-idle'] && selected(IDLE_LABEL)) idleResult = await idle(target, paku.pid as number)
  if (!flags['no-1cpu'])
    await oneCpu(
      target,
      paku.pid as number,
      oneCpuLoads.filter((l) => selected(l.label)),
    )
  await stop()
  started.pop()
}

const IDLE_SETTLE_S = 5
const IDLE_S = Math.max(10, Math.round(60 * SCALE))
type Idle = Record<string, unknown> & {
  pakuCpuMsPerMin: number
  postgresCpuMsPerMin: number
  pakuWakeupsPerS: number
}

/**
 * paku with DEVICES connected devices that only ping (bench-load.ts --hold): over IDLE_S seconds after
 * IDLE_SETTLE_S of settling, paku's CPU per minute and wakeups per second (context switches of all its
 * threads), and PostgreSQL's CPU per minute. The loads before leave rows that would make autovacuum due in
 * the window, which an idle fleet's database would not have: the table is emptied, vacuumed and
 * checkpointed first (autovacuum runs in the window are still reported).
 */
async function idle(target: Target, pakuPid: number): Promise<Idle> {
  const c = await sqlClient(target.dbUrl)
  await c.query(`TRUNCATE ${target.table}`)
  await c.query('VACUUM (ANALYZE)')
  await c.query('CHECKPOINT')
  const background0 = await backgroundWork(c)
  const connect0 = cpuOf(pakuPid)
  const gen = loadgen(target.port, [
    '--messages',
    '0',
    '--hold',
    String(IDLE_SETTLE_S + IDLE_S + 2),
  ])
  if (!(await gen.connected))
    throw new Error(`the load generator failed (exit code ${await gen.exit})`)
  const connectCpuS = cpuOf(pakuPid) - connect0
  await sleep(IDLE_SETTLE_S * 1000)
  const read = () => ({
    at: performance.now(),
    paku: cpuOf(pakuPid),
    pg: treeCpu(postmasterPid),
    host: hostBusy(),
    switches: switchesOf(pakuPid),
  })
  const w0 = read()
  await sleep(IDLE_S * 1000)
  const w1 = read()
  const code = await gen.exit
  if (code !== 0) throw new Error(`the load generator failed (exit code ${code})`)
  const background1 = await backgroundWork(c)
  await c.end()
  const windowS = (w1.at - w0.at) / 1000
  const perMin = (s: number) => Math.round((s / windowS) * 60 * 1000)
  const result: Idle = {
    kind: 'idle',
    system: 'paku',
    label: IDLE_LABEL,
    devices: DEVICES,
    windowS: Math.round(windowS * 10) / 10,
    pakuCpuMsPerMin: perMin(w1.paku - w0.paku),
    postgresCpuMsPerMin: perMin(w1.pg - w0.pg),
    pakuWakeupsPerS: Math.round((switchesBetween(w0.switches, w1.switches) / windowS) * 10) / 10,
    pakuThreads: w1.switches.size,
    /** paku's CPU from starting the generator until every device was connected: a fleet (re)connecting. */
    connectPakuCpuMs: Math.round(connectCpuS * 1000),
    loadgenErrors: gen.result<{ errors: number }>().errors,
    /** Busy CPU of the host in the window that was neither paku nor PostgreSQL (the generator's pings, other work). */
    otherHostCpuS: Math.max(
      0,
      Math.round((w1.host - w0.host - (w1.paku - w0.paku) - (w1.pg - w0.pg)) * 10) / 10,
    ),
    autovacuums: background1.vacuums - background0.vacuums,
    autoanalyzes: background1.analyzes - background0.analyzes,
  }
  say(JSON.stringify(result))
  return result
}

/**
 * The steady loads on one core, as on a 1-vCPU VM: paku (every thread), PostgreSQL (the postmaster and
 * every backend; backends forked later inherit the postmaster's affinity) and the load generator on
 * core 0. The harness moves to core 1 meanwhile: its polls and /proc reads would otherwise take time from
 * the core measured, which the VM would not have to give. Every affinity is restored afterwards.
 */
async function oneCpu(target: Target, pakuPid: number, pinnedLoads: Load[]): Promise<void> {
  if (pinnedLoads.length === 0) return
  if (spawnSync('sh', ['-c', 'command -v taskset']).status !== 0)
    return say('1 vCPU loads not run: no taskset (util-linux)')
  const saved = {
    paku: cpusAllowed(pakuPid),
    pg: cpusAllowed(postmasterPid),
    self: cpusAllowed(process.pid),
  }
  try {
    if (!pin([pakuPid, postmasterPid], '0'))
      throw new Error('taskset could not pin paku or PostgreSQL to core 0')
    pin(childrenOf(postmasterPid), '0') // the backends of this moment; one that exits meanwhile needs no pin
    if (cpus().length > 1) pin([process.pid], '1')
    say(
      `1 vCPU: paku, PostgreSQL and the load generator on core 0 (paku ${cpusAllowed(pakuPid)}, postmaster ${cpusAllowed(postmasterPid)}), this harness on ${cpusAllowed(process.pid)}`,
    )
    for (const load of pinnedLoads) results.push(await e2e(target, load))
  } finally {
    pin([postmasterPid, ...childrenOf(postmasterPid)], saved.pg)
    pin([pakuPid], saved.paku)
    pin([process.pid], saved.self)
    say(
      `1 vCPU done: paku back on ${cpusAllowed(pakuPid)}, PostgreSQL on ${cpusAllowed(postmasterPid)}, this harness on ${cpusAllowed(process.pid)}`,
    )
  }
}

function peerAvailable(): string | undefined {
  if (flags['no-peer'] || flags.only) return 'skipped (--no-peer or --only)'
  if (spawnSync('sh', ['-c', 'command -v mosquitto']).status !== 0)
    return 'mosquitto not installed (apt-get install mosquitto)'
  if (spawnSync('/usr/bin/python3', ['-c', 'import paho.mqtt, psycopg']).status !== 0)
    return 'python3-paho-mqtt / python3-psycopg not installed'
  if (!existsSync(join(PEER_DIR, 'seed_collector.py')))
    return `no ${PEER_DIR}/seed_collector.py (set PEER_DIR)`
  return undefined
}

async function peerSuite(variant: 'stock' | 'unbounded', peerLoads: Load[]): Promise<void> {
  const c = await sqlClient(pakuUrl)
  const dbName = 'peer'
  if ((await c.query(`SELECT 1 FROM pg_database WHERE datname = $1`, [dbName])).rowCount === 0)
    await c.query(`CREATE DATABASE ${dbName}`)
  await c.end()
  const peerUrl = new URL(pakuUrl)
  peerUrl.pathname = `/${dbName}`
  const p = await sqlClient(peerUrl.toString())
  await p.query(readFileSync(join(PEER_DIR, 'schema.sql'), 'utf8'))
  await p.end()

  const port = await freePort()
  const dir = join(root, `mosq-${variant}`)
  mkdirSync(dir)
  const up = spawnSync(join(PEER_DIR, 'mosq-up.sh'), [String(port), dir], {
    env: {
      ...process.env,
      MOSQ_EXTRA_CONF: variant === 'unbounded' ? 'max_queued_messages 0' : '',
    },
    encoding: 'utf8',
  })
  if (up.status !== 0) throw new Error(`mosq-up.sh failed: ${up.stderr}`)
  const brokerPid = Number(up.stdout.trim())
  const stopBroker = () => void spawnSync(join(PEER_DIR, 'mosq-down.sh'), [String(port), dir])
  started.push(stopBroker)
  const collector = spawn('/usr/bin/python3', [join(PEER_DIR, 'seed_collector.py')], {
    env: {
      ...process.env,
      MQTT_HOST: '127.0.0.1',
      MQTT_PORT: String(port),
      DATABASE_URL: peerUrl.toString(),
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  })
  const stopCollector = async () => {
    if (collector.exitCode !== null) return
    collector.kill('SIGTERM')
    await exited(collector)
  }
  started.push(stopCollector)
  await sleep(2000)
  const target: Target = {
    system: `old stack (${variant} Mosquitto)`,
    port,
    dbUrl: peerUrl.toString(),
    table: 'measurements',
    watch: { broker: brokerPid, collector: collector.pid as number },
  }
  say(
    `old stack: Mosquitto ${variant} (pid ${brokerPid}) on 127.0.0.1:${port}, collector pid ${collector.pid}`,
  )
  await warmUp(target)
  for (const load of peerLoads) results.push(await e2e(target, load))
  await stopCollector()
  stopBroker()
  started.splice(-2, 2)
}

const stamp = new Date().toISOString().replaceAll(':', '').slice(0, 15)
let measured: Awaited<ReturnType<typeof ceilings>> | undefined
// Whatever fails, everything started (PostgreSQL included) is stopped.
try {
  measured = await ceilings()
  await pakuSuite()
  const missing = peerAvailable()
  if (missing) say(`old stack not run: ${missing}`)
  else {
    await peerSuite('stock', [...loads(burst), ...fixed.filter((l) => l.rate <= 1000)])
    await peerSuite('unbounded', loads(burst))
  }
} finally {
  await cleanup()
}
const { copy500, copyStream, statement1000, statementQos1 } = measured

// ---------------------------------------------------------------- report

mkdirSync('bench-results', { recursive: true })
const file = join('bench-results', `${stamp}.jsonl`)
appendFileSync(
  file,
  JSON.stringify({
    kind: 'ceilings',
    rows: COPY_ROWS,
    copy500,
    copyStream,
    statement1000,
    statementQos1,
  }) + '\n',
)
appendFileSync(file, JSON.stringify({ kind: 'machine', ...machine() }) + '\n')
for (const r of results) appendFileSync(file, JSON.stringify(r) + '\n')
if (idleResult) appendFileSync(file, JSON.stringify(idleResult) + '\n')

const peerDrain = (qos: number) =>
  results.find((r) => r.system.includes('unbounded') && r.qos === qos && r.rate === 0)?.rowsPerS
const ratio = (a: number, b: number | undefined) => (b ? `${(a / b).toFixed(2)}×` : '—')
const fmt = (n: unknown) =>
  typeof n === 'number' ? n.toLocaleString('en') : n === null || n === undefined ? '—' : String(n)
console.log(
  '\n| PostgreSQL write path (measurements, all indexes, fsync on, one connection) | rows/s | PostgreSQL CPU ms per 1,000 rows |',
)
console.log('|---|---|---|')
console.log(
  `| COPY, 500-row COPYs, one commit each (**the ceiling**; × COPY below) | ${fmt(copy500.rowsPerS)} | ${copy500.pgCpuMsPer1000} |`,
)
console.log(
  `| COPY, one stream, one commit | ${fmt(copyStream.rowsPerS)} | ${copyStream.pgCpuMsPer1000} |`,
)
console.log(
  `| paku's batch statement (INSERT … unnest), 1,000-row batches | ${fmt(statement1000.rowsPerS)} | ${statement1000.pgCpuMsPer1000} |`,
)
console.log(
  `| the same with QoS 1 message ids remembered for redeliveries (ingest_dedup) | ${fmt(statementQos1.rowsPerS)} | ${statementQos1.pgCpuMsPer1000} |`,
)
console.log(
  '\n| system | load | sent | stored | lost | dup | e2e rows/s | × COPY | × old stack | PUBACK p50 / p99 / max ms | CPU ms per 1,000 msgs | peak RSS MiB | other CPU s | stalls > 0.1 s: event loop / batch; GC s |',
)
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
/** "n (≤ bound s)": how many, and the histogram bound the longest stayed under. */
const stallText = (n: unknown, under: unknown) =>
  n === 0 ? '0' : `${fmt(n)} (${under === null ? '> 10' : `≤ ${String(under)}`} s)`
for (const r of results) {
  const cpu = Object.entries(r.cpuMsPer1000 as Record<string, number>)
    .map(([n, v]) => `${n} ${v}`)
    .join(', ')
  const rss = Object.entries(r.peakRssMiB as Record<string, number>)
    .map(([n, v]) => `${n} ${v}`)
    .join(', ')
  const lat =
    r.qos === 1 ? `${fmt(r.pubackP50Ms)} / ${fmt(r.pubackP99Ms)} / ${fmt(r.pubackMaxMs)}` : '—'
  const vsPeer =
    r.system === 'paku' && r.rate === 0 ? ratio(r.rowsPerS, peerDrain(r.qos as number)) : '—'
  const stall =
    'loopStallsOver100ms' in r
      ? `${stallText(r.loopStallsOver100ms, r.longestLoopStallUnderS)} / ${stallText(r.slowBatchesOver100ms, r.longestBatchUnderS)}; ${String(r.gcPauseS)}`
      : '—'
  console.log(
    `| ${r.system} | ${r.label} | ${fmt(r.sent)} | ${fmt(r.stored)} | ${fmt(r.lost)} | ${fmt(r.duplicated)} | ${fmt(r.rowsPerS)} | ${r.rate === 0 ? ratio(r.rowsPerS, copy500.rowsPerS) : '—'} | ${vsPeer} | ${lat} | ${cpu} | ${rss} | ${r.otherHostCpuS} | ${stall} |`,
  )
}

/** paku's peak RSS in a load. */
function peakRss(r: Result): number | undefined {
  return (r.peakRssMiB as Record<string, number>).paku
}
/** "12" or "> 60": the seconds until paku's RSS was under LOW_RSS_MIB after a burst. */
function untilLow(r: Result): string {
  return r.sUnderLowRss === null ? `> ${String(r.rssAfterS)}` : fmt(r.sUnderLowRss)
}

/** The bursts after which paku's RSS was sampled (rssAfter()). */
function printMemoryAfter(): void {
  const bursts = results.filter((r) => r.rssAfterMiB)
  if (bursts.length === 0) return
  console.log(
    `\n| paku after a burst (RSS once a second from the last row stored) | peak RSS MiB | RSS at the last row MiB | RSS ${AFTER_S} s after MiB | s until under ${LOW_RSS_MIB} MiB |`,
  )
  console.log('|---|---|---|---|---|')
  for (const r of bursts)
    console.log(
      `| ${r.label} | ${fmt(peakRss(r))} | ${fmt((r.rssAfterMiB as number[])[0])} | ${fmt(r.rssAfterEndMiB)} | ${untilLow(r)} |`,
    )
}

function printIdle(): void {
  const i = idleResult
  if (!i) return
  console.log(
    `\n| paku idle: devices connected, each only a PINGREQ every 30 s (keepalive 60) | window s | paku CPU ms per minute | paku wakeups/s (${fmt(i.pakuThreads)} threads) | PostgreSQL CPU ms per minute | paku CPU ms to connect them | other CPU s | autovacuum / autoanalyze runs |`,
  )
  console.log('|---|---|---|---|---|---|---|---|')
  console.log(
    `| ${i.label} | ${fmt(i.windowS)} | ${fmt(i.pakuCpuMsPerMin)} | ${fmt(i.pakuWakeupsPerS)} | ${fmt(i.postgresCpuMsPerMin)} | ${fmt(i.connectPakuCpuMs)} | ${fmt(i.otherHostCpuS)} | ${fmt(i.autovacuums)} / ${fmt(i.autoanalyzes)} |`,
  )
}

/**
 * CPU ms per 1,000 messages of paku, PostgreSQL and both, and the PUBACK p99, of a steady load (— if not
 * run); ROLLUP_MARK after the sum when a rollup pass landed in it.
 */
function costCells(r: Result | undefined): string[] {
  if (!r) return ['—', '—', '—', '—']
  const cpu = r.cpuMsPer1000 as Record<string, number>
  const [paku = 0, postgres = 0] = [cpu.paku, cpu.postgres]
  const sum = `**${fmt(Math.round((paku + postgres) * 10) / 10)}**${r.rollupPass ? ROLLUP_MARK : ''}`
  return [fmt(paku), fmt(postgres), sum, r.qos === 1 ? fmt(r.pubackP99Ms) : '—']
}
const ROLLUP_MARK = ' ʳ'

/** What a small machine cares about, short enough to quote: steady cost per fleet size, memory after bursts, idle. */
function printSummary(): void {
  const host = machine()
  const cores = `${host.cores} cores`
  console.log(
    `\n**Summary** — ${host.cpu}, ${cores}, ${(host.ramMiB / 1024).toFixed(1)} GiB RAM; paku ${flags.bin ?? 'from source'}, ${DEVICES} devices`,
  )
  const find = (label: string) => results.find((r) => r.system === 'paku' && r.label === label)
  const rows = STEADY_RATES.flatMap((rate) =>
    ([0, 1] as const).map((qos) => steady(rate, qos).label),
  )
  if (rows.some((l) => find(l) || find(ONE_CPU + l))) {
    console.log(
      `\n| paku, steady load | ${cores}: CPU ms per 1,000 msgs, paku | PostgreSQL | sum | PUBACK p99 ms | 1 vCPU: CPU ms per 1,000 msgs, paku | PostgreSQL | sum | PUBACK p99 ms |`,
    )
    console.log('|---|---|---|---|---|---|---|---|---|')
    for (const l of rows)
      console.log(
        `| ${l} | ${[...costCells(find(l)), ...costCells(find(ONE_CPU + l))].join(' | ')} |`,
      )
    if (rows.some((l) => find(l)?.rollupPass || find(ONE_CPU + l)?.rollupPass)) {
      console.log(
        `\n${ROLLUP_MARK.trim()} a rollup pass (every 60 s) ran in that load; at a low rate it is a good part of the figure.`,
      )
    }
  }
  const lines = results
    .filter((r) => r.rssAfterMiB)
    .map(
      (r) =>
        `| ${r.label.replace(', max rate', '')} burst: peak RSS; ${String(r.rssAfterS)} s after | ${fmt(peakRss(r))} MiB; ${fmt(r.rssAfterEndMiB)} MiB (under ${LOW_RSS_MIB} MiB after ${untilLow(r)} s) |`,
    )
  const i = idleResult
  if (i) {
    lines.push(
      `| idle, ${fmt(i.devices)} devices connected: CPU per minute, paku / PostgreSQL | ${fmt(i.pakuCpuMsPerMin)} / ${fmt(i.postgresCpuMsPerMin)} ms |`,
    )
    lines.push(
      `| idle, ${fmt(i.devices)} devices connected: paku's wakeups per second | ${fmt(i.pakuWakeupsPerS)} |`,
    )
  }
  if (lines.length === 0) return
  console.log(`\n| paku, ${cores} | |`)
  console.log('|---|---|')
  for (const l of lines) console.log(l)
}

printMemoryAfter()
printIdle()
printSummary()
console.log(`\nraw results: ${file}`)
const pakuBad = results.filter((r) => r.system === 'paku' && (r.lost > 0 || r.duplicated > 0))
process.exit(pakuBad.length > 0 ? 1 : 0)
