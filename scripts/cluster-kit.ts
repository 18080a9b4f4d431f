/**
 * Several paku instances on one machine, for the cluster tests and `npm run cluster-bench`: a throwaway
 * Redis (Debian's redis-server, started and stopped by pid) and paku instances as child processes
 * (`node --import tsx src/main.ts serve`), so a test can kill one with SIGKILL like a crashed VM.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { freePort } from './local-process.js'

export { freePort }

const run = promisify(execFile)

/** Why the Redis tests cannot run here, or false. In CI (CI=true) they always run: .ci/run installs redis-server. */
export async function redisSkipReason(): Promise<string | false> {
  const available = await run('redis-server', ['--version']).then(
    () => true,
    (err: { code?: unknown }) => err.code !== 'ENOENT',
  )
  return !available && process.env.CI !== 'true'
    ? 'redis-server not installed (apt-get install redis-server)'
    : false
}

/** Answers once something on the port speaks Redis (PING → +PONG). */
async function redisAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1')
    s.setTimeout(500)
    s.once('connect', () => s.write('PING\r\n'))
    s.once('data', (d) => {
      resolve(d.toString().startsWith('+PONG'))
      s.destroy()
    })
    for (const ev of ['error', 'timeout', 'close']) s.once(ev, () => resolve(false))
  })
}

/** A throwaway redis-server on a free loopback port, no persistence, in a temp dir. */
export async function startRedis(
  o: { port?: number } = {},
): Promise<{ url: string; port: number; pid: number; stop(): Promise<void>; kill(): void }> {
  const port = o.port ?? (await freePort())
  const dir = mkdtempSync(join(tmpdir(), 'paku-redis-'))
  const child = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
    ],
    { stdio: 'ignore' },
  )
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const until = Date.now() + 10_000
  while (!(await redisAnswers(port))) {
    if (child.exitCode !== null || Date.now() > until) {
      child.kill('SIGKILL')
      throw new Error(`redis-server did not start on port ${port}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    pid: child.pid as number,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM')
      await exited
      rmSync(dir, { recursive: true, force: true })
    },
    kill() {
      child.kill('SIGKILL')
    },
  }
}

export type Instance = {
  name: string
  mqttPort: number
  httpPort: number
  mqttUrl: string
  httpUrl: string
  child: ChildProcess
  /** Resolves when the process has exited. */
  exited: Promise<void>
  /** SIGKILL: no flush, no goodbye (a crashed VM). */
  kill(): Promise<void>
  /** SIGTERM: a graceful stop. */
  stop(): Promise<void>
  health(): Promise<Record<string, any>>
  output(): string
}

/**
 * Starts `paku serve` from source with the committed development config (loopback, anonymous MQTT)
 * and env overrides; resolves once /health answers.
 */
export async function startInstance(opts: {
  name: string
  databaseUrl: string
  redisUrl: string
  env?: Record<string, string>
  config?: Record<string, unknown>
  root?: string
}): Promise<Instance> {
  const root = opts.root ?? process.cwd()
  const [mqttPort, httpPort] = [await freePort(), await freePort()]
  const dataDir = mkdtempSync(join(tmpdir(), `paku-${opts.name}-`))
  // The committed development config (loopback, anonymous MQTT), with the test's additions.
  const base = JSON.parse(readFileSync(join(root, 'paku.config.json'), 'utf8')) as Record<
    string,
    unknown
  >
  const configFile = join(dataDir, 'paku.config.json')
  writeFileSync(configFile, JSON.stringify({ ...base, ...opts.config }))
  const child = spawn(process.execPath, ['--import', 'tsx', join(root, 'src/main.ts'), 'serve'], {
    cwd: root,
    env: {
      ...process.env,
      PAKU_CONFIG: configFile,
      PAKU_DATA_DIR: dataDir,
      PAKU_DATABASE_URL: opts.databaseUrl,
      PAKU_CLUSTER_REDIS_URL: opts.redisUrl,
      PAKU_CLUSTER_INSTANCE_ID: opts.name,
      PAKU_MQTT_PORT: String(mqttPort),
      PAKU_HTTP_PORT: String(httpPort),
      PAKU_MQTT_WS_ENABLED: 'false',
      PAKU_LOG_FORMAT: 'json',
      PAKU_LOG_LEVEL: process.env.PAKU_TEST_LOG_LEVEL ?? 'warn',
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  const keep = (d: Buffer) => {
    out = (out + d.toString()).slice(-20_000)
    if (process.env.PAKU_TEST_LOG_LEVEL === 'debug')
      process.stderr.write(`[${opts.name}] ${d.toString()}`)
  }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  void exited.then(() => rmSync(dataDir, { recursive: true, force: true }))
  const httpUrl = `http://127.0.0.1:${httpPort}`
  const health = async () =>
    (await (await fetch(`${httpUrl}/health`)).json()) as Record<string, any>
  const until = Date.now() + 30_000
  for (;;) {
    if (child.exitCode !== null)
      throw new Error(`paku ${opts.name} exited with ${child.exitCode}: ${out}`)
    if (Date.now() > until) {
      child.kill('SIGKILL')
      throw new Error(`paku ${opts.name} did not answer /health within 30 s: ${out}`)
    }
    const ok = await health().then(
      () => true,
      () => false,
    )
    if (ok) break
    await new Promise((r) => setTimeout(r, 100))
  }
  return {
    name: opts.name,
    mqttPort,
    httpPort,
    mqttUrl: `mqtt://127.0.0.1:${mqttPort}`,
    httpUrl,
    child,
    exited,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      await exited
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
      await exited
      clearTimeout(timer)
    },
    health,
    output: () => out,
  }
}
