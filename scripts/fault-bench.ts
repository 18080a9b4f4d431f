/**
 * `npm run fault-bench`: paku's data guarantees under real faults, with figures.
 *
 * Starts a real PostgreSQL (embedded binaries, fsync on) and paku as a child process, then runs
 *   A. database outage: DEVICES devices publish QoS 1 at RATE msg/s; PostgreSQL is stopped (fast
 *      shutdown) OUTAGE_AT seconds in, for OUTAGE_S seconds, then started again;
 *   B. crash: the same load; paku is killed with SIGKILL KILL_AT seconds in and restarted at once;
 *   C. restart delivery: a retained config/set and a queued QoS 1 cmd/ota reach a device that
 *      reconnects after paku was restarted.
 * and prints, per scenario, messages sent / acknowledged / stored, lost (acknowledged but not stored),
 * duplicated (stored twice), PUBACK latency percentiles and the spool's peak size.
 *
 * Options (env): RATE=1000 DEVICES=100 DURATION_S=60 OUTAGE_AT=15 OUTAGE_S=30 KILL_DURATION_S=20 KILL_AT=8
 * Loopback only; everything it starts it stops.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt, { type MqttClient } from 'mqtt'
import pg from 'pg'
import { createEmbeddedPostgres } from '../src/db/embedded.js'
import { createLogger } from '../src/log/index.js'
import { freePort, serveEnv } from './local-process.js'

const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback)
const RATE = num('RATE', 1000)
const DEVICES = num('DEVICES', 100)
const DURATION_S = num('DURATION_S', 60)
const OUTAGE_AT = num('OUTAGE_AT', 15)
const OUTAGE_S = num('OUTAGE_S', 30)
const KILL_DURATION_S = num('KILL_DURATION_S', 20)
const KILL_AT = num('KILL_AT', 8)

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const log = (line: string) => console.log(`[fault-bench] ${line}`)

const root = mkdtempSync(join(tmpdir(), 'paku-fault-'))
// As root, PostgreSQL runs as user postgres, which must be able to pass through this directory.
chmodSync(root, 0o711)
const pgPort = await freePort()
const mqttPort = await freePort()
const httpPort = await freePort()
const database = createEmbeddedPostgres({
  dataDir: join(root, 'pg'),
  port: pgPort,
  log: createLogger({ level: 'warn', format: 'pretty' }),
})
await database.start()
const dbUrl = database.url()

function startPaku(): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', 'serve'], {
    env: {
      ...process.env,
      ...serveEnv({ databaseUrl: dbUrl, dataDir: join(root, 'paku'), mqttPort, httpPort }),
      PAKU_LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  return child
}

async function waitHealthy(): Promise<void> {
  for (let i = 0; i < 600; i++) {
    try {
      const res = await fetch(`http://127.0.0.1:${httpPort}/health`)
      if (res.ok) return
    } catch {
      // not listening yet
    }
    await sleep(100)
  }
  throw new Error('paku did not become healthy')
}

async function health(): Promise<
  { status: string; ingest: { spoolBytes: number; duplicates: number } } | undefined
> {
  try {
    return (await (await fetch(`http://127.0.0.1:${httpPort}/health`)).json()) as never
  } catch {
    return undefined
  }
}

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0
    ? 0
    : (sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number)
}

type Load = { sent: number; acked: Set<string>; latencies: number[] }

/** DEVICES persistent-session clients publishing QoS 1 at RATE msg/s in total for durationS. */
async function runLoad(
  label: string,
  durationS: number,
  during: (elapsedS: number) => Promise<void>,
): Promise<Load> {
  const clients: MqttClient[] = await Promise.all(
    Array.from({ length: DEVICES }, (_, d) =>
      mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, {
        clientId: `${label}-dev${d}`,
        clean: false,
        reconnectPeriod: 250,
        connectTimeout: 5000,
      }),
    ),
  )
  const load: Load = { sent: 0, acked: new Set(), latencies: [] }
  const seq = new Array<number>(DEVICES).fill(0)
  const t0 = Date.now()
  let next = 0
  const tickMs = 10
  const perTick = (RATE * tickMs) / 1000
  let carry = 0
  let lastHook = -1
  while (Date.now() - t0 < durationS * 1000) {
    carry += perTick
    while (carry >= 1) {
      carry--
      const d = next++ % DEVICES
      const i = seq[d] as number
      seq[d] = i + 1
      const client = clients[d] as MqttClient
      const key = `${label}-dev${d}:${i}`
      const sentAt = performance.now()
      load.sent++
      client.publish(
        `paku/sensors/${label}-dev${d}/data`,
        JSON.stringify({ device_id: `${label}-dev${d}`, metrics: { seq: i, t: 20.5 } }),
        { qos: 1 },
        (err) => {
          if (err) return
          load.acked.add(key)
          load.latencies.push(performance.now() - sentAt)
        },
      )
    }
    const elapsed = Math.floor((Date.now() - t0) / 1000)
    if (elapsed !== lastHook) {
      lastHook = elapsed
      await during(elapsed)
    }
    await sleep(tickMs)
  }
  // Let in-flight messages be acknowledged (the client resends after reconnects).
  const until = Date.now() + 60_000
  while (load.acked.size < load.sent && Date.now() < until) await sleep(100)
  await Promise.all(clients.map((c) => c.endAsync()))
  return load
}

async function verify(label: string, load: Load, extra: Record<string, unknown>) {
  const c = new pg.Client({ connectionString: dbUrl })
  await c.connect()
  // Rows arrive until the spool is replayed; wait for the count to settle.
  let stored = -1
  for (let i = 0; i < 600; i++) {
    const n = Number(
      (
        await c.query(`SELECT count(*)::int AS n FROM measurements WHERE device_id LIKE $1`, [
          `${label}-%`,
        ])
      ).rows[0].n,
    )
    const h = await health()
    if (n === stored && (h?.ingest.spoolBytes ?? 0) === 0) break
    stored = n
    await sleep(500)
  }
  const rows = (
    await c.query(
      `SELECT device_id || ':' || (metrics->>'seq') AS k, count(*)::int AS n FROM measurements WHERE device_id LIKE $1 GROUP BY 1`,
      [`${label}-%`],
    )
  ).rows
  await c.end()
  const counts = new Map(rows.map((r) => [r.k as string, r.n as number]))
  const lost = [...load.acked].filter((k) => !counts.has(k)).length
  const duplicated = rows.reduce((s, r) => s + (r.n > 1 ? r.n - 1 : 0), 0)
  const lat = [...load.latencies].sort((a, b) => a - b)
  const result = {
    scenario: label,
    sent: load.sent,
    acked: load.acked.size,
    stored: rows.length,
    lost,
    duplicated,
    pubackP50Ms: Math.round(percentile(lat, 50) * 10) / 10,
    pubackP99Ms: Math.round(percentile(lat, 99) * 10) / 10,
    pubackMaxMs: Math.round(percentile(lat, 100)),
    ...extra,
  }
  console.log(JSON.stringify(result))
  return result
}

let paku = startPaku()
const results: Array<Record<string, unknown>> = []
try {
  await waitHealthy()
  log(
    `PostgreSQL on 127.0.0.1:${pgPort}, paku MQTT on 127.0.0.1:${mqttPort}; ${DEVICES} devices, QoS 1, ${RATE} msg/s`,
  )

  // A. Database outage.
  log(`A: ${DURATION_S} s of load, PostgreSQL stopped at ${OUTAGE_AT} s for ${OUTAGE_S} s`)
  let spoolPeak = 0
  let degradedSeen = false
  const a = await runLoad('outage', DURATION_S, async (s) => {
    const h = await health()
    spoolPeak = Math.max(spoolPeak, h?.ingest.spoolBytes ?? 0)
    if (h?.status === 'degraded') degradedSeen = true
    if (s === OUTAGE_AT) {
      log('stopping PostgreSQL')
      await database.stop()
    }
    if (s === OUTAGE_AT + OUTAGE_S) {
      log('starting PostgreSQL')
      await database.start()
    }
  })
  results.push(
    await verify('outage', a, {
      outageSeconds: OUTAGE_S,
      spoolPeakBytes: spoolPeak,
      healthDegradedDuringOutage: degradedSeen,
    }),
  )

  // B. kill -9 and restart.
  log(`B: ${KILL_DURATION_S} s of load, paku killed with SIGKILL at ${KILL_AT} s and restarted`)
  let restartMs = 0
  const b = await runLoad('crash', KILL_DURATION_S, async (s) => {
    if (s !== KILL_AT) return
    paku.kill('SIGKILL')
    await new Promise((r) => paku.once('exit', r))
    const t = Date.now()
    paku = startPaku()
    await waitHealthy()
    restartMs = Date.now() - t
    log(`restarted in ${restartMs} ms`)
  })
  const h = await health()
  results.push(
    await verify('crash', b, {
      restartToHealthyMs: restartMs,
      duplicatesRecognisedAfterRestart: h?.ingest.duplicates ?? 0,
    }),
  )

  // C. Retained config and a queued command across a graceful restart.
  const device = { clientId: 'ESP32-FAULTC', clean: false }
  const d1 = await mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, device)
  await d1.subscribeAsync('paku/edge/ESP32-FAULTC/cmd/ota', { qos: 1 })
  await d1.endAsync()
  const op = await mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`)
  await op.publishAsync('paku/edge/ESP32-FAULTC/config/set', '{"timing":{"wake_interval_s":300}}', {
    qos: 1,
    retain: true,
  })
  await op.publishAsync(
    'paku/edge/ESP32-FAULTC/cmd/ota',
    '{"url":"http://x/fw.bin","version":"9.9.9"}',
    { qos: 1 },
  )
  await op.endAsync()
  paku.kill('SIGTERM')
  await new Promise((r) => paku.once('exit', r))
  paku = startPaku()
  await waitHealthy()
  const got = new Set<string>()
  const d2 = mqtt.connect(`mqtt://127.0.0.1:${mqttPort}`, { ...device, manualConnect: true })
  d2.on('message', (topic) => got.add(topic))
  d2.connect()
  await new Promise((r) => d2.once('connect', r))
  await d2.subscribeAsync('paku/edge/ESP32-FAULTC/config/set', { qos: 1 })
  for (let i = 0; i < 50 && got.size < 2; i++) await sleep(100)
  await d2.endAsync()
  const c = {
    scenario: 'restart-delivery',
    queuedCommandDelivered: got.has('paku/edge/ESP32-FAULTC/cmd/ota'),
    retainedConfigDelivered: got.has('paku/edge/ESP32-FAULTC/config/set'),
  }
  console.log(JSON.stringify(c))
  results.push(c)
} finally {
  paku.kill('SIGTERM')
  await new Promise((r) =>
    paku.exitCode !== null || paku.signalCode !== null ? r(undefined) : paku.once('exit', r),
  )
  await database.stop()
  rmSync(root, { recursive: true, force: true })
}

console.log(
  '\n| scenario | sent | acked | stored | lost | duplicated | PUBACK p50 / p99 / max ms | notes |',
)
console.log('|---|---|---|---|---|---|---|---|')
for (const r of results) {
  if (r.scenario === 'restart-delivery') {
    console.log(
      `| restart delivery | | | | | | | queued cmd/ota delivered: ${r.queuedCommandDelivered}, retained config/set delivered: ${r.retainedConfigDelivered} |`,
    )
    continue
  }
  const notes =
    r.scenario === 'outage'
      ? `PostgreSQL down ${r.outageSeconds} s; spool peak ${r.spoolPeakBytes} B; /health degraded: ${r.healthDegradedDuringOutage}`
      : `kill -9, healthy again after ${r.restartToHealthyMs} ms; redeliveries recognised: ${r.duplicatesRecognisedAfterRestart}`
  console.log(
    `| ${r.scenario} | ${r.sent} | ${r.acked} | ${r.stored} | ${r.lost} | ${r.duplicated} | ${r.pubackP50Ms} / ${r.pubackP99Ms} / ${r.pubackMaxMs} | ${notes} |`,
  )
}
const failed = results.some(
  (r) =>
    (r.lost as number) > 0 ||
    (r.duplicated as number) > 0 ||
    r.queuedCommandDelivered === false ||
    r.retainedConfigDelivered === false,
)
process.exit(failed ? 1 : 0)
