/**
 * `npm run smoke`: the single executable end to end, as CI's last step. Starts a real
 * PostgreSQL (paku's own runner over the npm binaries, as an external server), runs dist/paku against
 * it with a closed production-like config, publishes with mosquitto_pub and finds the row, uploads a
 * firmware with curl, reads /health, fetches the admin UI, posts HTTP telemetry, stops it with SIGTERM and
 * checks the clean exit.
 * `--figures` adds the numbers of docs/performance.md, "The single executable": size, start to ready,
 * idle RSS, RSS under load.
 */
import { execFile, spawn } from 'node:child_process'
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { promisify } from 'node:util'
import mqtt from 'mqtt'
import pg from 'pg'
import { createEmbeddedPostgres } from '../src/db/index.js'
import { createLogger } from '../src/log/index.js'
import { espImage } from './test-support/esp-image.js'
import { freePort, unitMallocEnv } from './local-process.js'

const run = promisify(execFile)
const args = process.argv.slice(2)
const figures = args.includes('--figures')
const bin = resolve(args.find((a) => !a.startsWith('--')) ?? 'dist/paku')
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function check(ok: unknown, what: string): void {
  if (!ok) throw new Error(`smoke: ${what}`)
  console.log(`ok   ${what}`)
}

async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024
}

/** RSS and its split: anonymous memory (heap, buffers) vs clean pages of the executable, which the kernel can drop and re-read. */
async function memory(pid: number): Promise<{ rss: number; anon: number; file: number }> {
  const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8')
  const kb = (k: string) =>
    Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? 0) / 1024
  return { rss: kb('Rss'), anon: kb('Pss_Anon'), file: kb('Pss_File') }
}

/** Collects a paku process's log lines and resolves with its JSON `… ready` banner; rejects if it exits or cannot start. */
function watch(proc: ReturnType<typeof spawn>) {
  const lines: string[] = []
  let stderr = ''
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
  const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
    let buf = ''
    proc.stdout?.on('data', (d: Buffer) => {
      buf += d.toString()
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i)
        buf = buf.slice(i + 1)
        lines.push(line)
        try {
          const j = JSON.parse(line) as Record<string, unknown>
          if (typeof j.msg === 'string' && j.msg.endsWith(' ready')) resolve(j)
        } catch {
          // not JSON: shown on failure
        }
      }
    })
    proc.once('exit', (code) =>
      reject(new Error(`paku exited with ${code} before ready:\n${lines.join('\n')}\n${stderr}`)),
    )
    // A missing or unrunnable executable: fail through the finally below, which stops PostgreSQL.
    proc.once('error', (err) =>
      reject(new Error(`cannot run ${bin}: ${err.message} (npm run build first)`)),
    )
  })
  return { ready, lines, stderr: () => stderr }
}

const dir = await mkdtemp(join(tmpdir(), 'paku-smoke-'))
// As root, PostgreSQL runs as `postgres` and must be able to enter the directory (mkdtemp makes it 0700).
await chmod(dir, 0o711)
const db = createEmbeddedPostgres({
  dataDir: join(dir, 'pg'),
  port: await freePort(),
  log: createLogger({ level: 'warn', format: 'pretty' }),
  ephemeral: true,
})
let child: ReturnType<typeof spawn> | undefined
let idle: { rss: number; anon: number; file: number } | undefined
try {
  await db.start()
  const [mqttPort, httpPort] = [await freePort(), await freePort()]
  const key = 'smoke-admin-key-0123456789-abcdefghij'
  const env = {
    PATH: process.env.PATH ?? '',
    HOME: dir,
    PAKU_DATABASE_URL: db.url(),
    PAKU_DATA_DIR: join(dir, 'data'),
    PAKU_MQTT_HOST: '127.0.0.1',
    PAKU_MQTT_PORT: String(mqttPort),
    PAKU_MQTT_WS_ENABLED: 'false',
    PAKU_MQTT_USERNAME: 'smoke',
    PAKU_MQTT_PASSWORD: 'smoke-password',
    PAKU_HTTP_HOST: '127.0.0.1',
    PAKU_HTTP_PORT: String(httpPort),
    PAKU_ADMIN_API_KEY: key,
    PAKU_PUBLIC_URL: `http://127.0.0.1:${httpPort}`,
    PAKU_LOG_FORMAT: 'json',
    // As the systemd unit runs it (build/systemd/paku.service).
    ...unitMallocEnv(),
  }
  const size = (await stat(bin)).size
  const t0 = performance.now()
  const proc = spawn(bin, ['serve'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] })
  child = proc
  const run1 = watch(proc)
  const banner = await run1.ready
  const spawnToReady = performance.now() - t0
  check(
    banner.readyAfterDatabaseMs !== undefined,
    `ready (${Math.round(spawnToReady)} ms after spawn, ${String(banner.readyAfterDatabaseMs)} ms after the database answered)`,
  )
  if (figures && proc.pid) {
    await sleep(5000)
    idle = await memory(proc.pid)
  }
  const waited = await run(bin, ['wait-ready', '--timeout', '10'], { cwd: dir, env })
  check(/paku ready \(ok\)/.test(waited.stdout), 'paku wait-ready returns')

  await run('mosquitto_pub', [
    '-h',
    '127.0.0.1',
    '-p',
    String(mqttPort),
    '-u',
    'smoke',
    '-P',
    'smoke-password',
    '-q',
    '1',
    '-i',
    'smoke01',
    '-t',
    'paku/sensors/smoke01/data',
    '-m',
    JSON.stringify({ device_id: 'smoke01', metrics: { temperature_c: 21.5 } }),
  ])
  const client = new pg.Client({ connectionString: db.url() })
  await client.connect()
  let row: { metrics: unknown } | undefined
  for (let i = 0; i < 100 && !row; i++) {
    row = (
      await client.query<{ metrics: unknown }>(
        `SELECT metrics FROM measurements WHERE device_id = 'smoke01'`,
      )
    ).rows[0]
    if (!row) await sleep(50)
  }
  check(
    JSON.stringify(row?.metrics) === '{"temperature_c":21.5}',
    'mosquitto_pub → a row in measurements',
  )
  const refused = await run('mosquitto_pub', [
    '-h',
    '127.0.0.1',
    '-p',
    String(mqttPort),
    '-t',
    'paku/sensors/x/data',
    '-m',
    '{}',
  ]).then(
    () => false,
    () => true,
  )
  check(refused, 'anonymous MQTT refused')

  const fw = join(dir, 'firmware.bin')
  await writeFile(fw, espImage({ size: 200_000, chipId: 9 }))
  const up = await run('curl', [
    '-sS',
    '--fail-with-body',
    '-H',
    `X-API-Key: ${key}`,
    '-F',
    `file=@${fw}`,
    `http://127.0.0.1:${httpPort}/api/admin/firmware/upload?version=1.0.0&device_model=esp32-heater`,
  ])
  check(JSON.parse(up.stdout).status === 'ok', 'curl firmware upload')
  const health = JSON.parse(
    (await run('curl', ['-sS', '--fail-with-body', `http://127.0.0.1:${httpPort}/health`])).stdout,
  ) as { status: string }
  check(health.status === 'ok', '/health is ok')
  // The admin UI's files come out of the executable's assets.
  const ui = await run('curl', [
    '-sS',
    '--fail-with-body',
    `http://127.0.0.1:${httpPort}/ui/app.js`,
  ])
  check(ui.stdout.includes("const SECTIONS = ['devices'"), 'admin UI served from the executable')
  const chart = await run('curl', [
    '-sS',
    '--fail-with-body',
    `http://127.0.0.1:${httpPort}/ui/uplot.js`,
  ])
  check(
    chart.stdout.includes('var uPlot='),
    'the charting library (uPlot) served from the executable',
  )
  const telemetry = await run('curl', [
    '-sS',
    '--fail-with-body',
    '-H',
    `Authorization: Bearer ${key}`,
    '-H',
    'content-type: application/json',
    '-d',
    '{"device_id":"smoke-http","metric":"temperature_c","value":20.5}',
    `http://127.0.0.1:${httpPort}/api/v1/telemetry`,
  ])
  check(JSON.parse(telemetry.stdout).stored === 1, 'HTTP telemetry stored')
  await client.end()

  const out: Array<[string, string]> = [
    ['binary size', `${(size / 1048576).toFixed(1)} MiB`],
    ['spawn → ready', `${Math.round(spawnToReady)} ms`],
    [
      `fresh database: database answered → ready (${String(banner.migrationsApplied)} migrations, broker, HTTP)`,
      `${String(banner.readyAfterDatabaseMs)} ms`,
    ],
  ]
  if (figures && proc.pid && idle) {
    out.push([
      'idle RSS (5 s after ready, before any traffic)',
      `${idle.rss.toFixed(1)} MiB (${idle.anon.toFixed(1)} MiB anonymous, ${idle.file.toFixed(1)} MiB pages of the executable file)`,
    ])
    // Load: 100 devices, QoS 1, 1,000 msg/s in total for 30 s.
    const devices = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, {
          clientId: `load${i}`,
          username: 'smoke',
          password: 'smoke-password',
          reconnectPeriod: 0,
        }),
      ),
    )
    let peak = 0
    let sent = 0
    const until = Date.now() + 30_000
    const sampler = setInterval(
      () => void rssMiB(proc.pid as number).then((r) => (peak = Math.max(peak, r))),
      250,
    )
    while (Date.now() < until) {
      const tick = Date.now()
      await Promise.all(
        devices.map((c, i) =>
          c.publishAsync(
            `paku/sensors/load${i}/data`,
            JSON.stringify({
              device_id: `load${i}`,
              metrics: { temperature_c: 20 + Math.random(), humidity_pct: 50 },
            }),
            { qos: 1 },
          ),
        ),
      )
      sent += devices.length
      await sleep(Math.max(0, 100 - (Date.now() - tick)))
    }
    clearInterval(sampler)
    await Promise.all(devices.map((c) => c.endAsync()))
    out.push([
      `peak RSS under load (${sent} QoS 1 messages, ~1,000/s, 100 devices)`,
      `${peak.toFixed(1)} MiB`,
    ])
  }

  proc.kill('SIGTERM')
  const code = await new Promise<number | null>((resolve) => proc.once('exit', (c) => resolve(c)))
  child = undefined
  check(
    code === 0 && run1.lines.some((l) => l.includes('"msg":"stopped"')),
    `SIGTERM → clean exit (code ${code})`,
  )
  check(run1.stderr().trim() === '', 'nothing on stderr (no warnings)')
  if (figures) {
    // A restart, as after an upgrade with nothing to migrate: the figure that matters for systemd.
    const again = spawn(bin, ['serve'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] })
    child = again
    const t1 = performance.now()
    const banner2 = await watch(again).ready
    out.push(
      ['restart: spawn → ready (nothing to migrate)', `${Math.round(performance.now() - t1)} ms`],
      ['restart: database answered → ready', `${String(banner2.readyAfterDatabaseMs)} ms`],
    )
    again.kill('SIGTERM')
    await new Promise((resolve) => again.once('exit', resolve))
    child = undefined
  }
  console.log('\nfigures (this machine):')
  for (const [k, v] of out) console.log(`  ${k.padEnd(60)} ${v}`)
} finally {
  child?.kill('SIGKILL')
  await db.stop().catch(() => undefined)
  await rm(dir, { recursive: true, force: true })
}
