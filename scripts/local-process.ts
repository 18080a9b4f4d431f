/** Shared by the scripts and tests that run paku as a child process on this machine. */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'

/** A TCP port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

/** Environment for `paku serve` on loopback ports with the given database and data directory. */
export function serveEnv(o: {
  databaseUrl: string
  dataDir: string
  mqttPort: number
  httpPort: number
}): Record<string, string> {
  return {
    PAKU_DATABASE_URL: o.databaseUrl,
    PAKU_DATA_DIR: o.dataDir,
    PAKU_MQTT_HOST: '127.0.0.1',
    PAKU_MQTT_PORT: String(o.mqttPort),
    PAKU_MQTT_WS_ENABLED: 'false',
    PAKU_HTTP_HOST: '127.0.0.1',
    PAKU_HTTP_PORT: String(o.httpPort),
    PAKU_LOG_FORMAT: 'json',
  }
}

/**
 * The malloc settings the systemd unit gives paku (its `Environment=MALLOC_…` lines), read from the unit
 * so that scripts measuring paku as the unit runs it cannot drift from it.
 */
export function unitMallocEnv(): Record<string, string> {
  const unit = readFileSync(
    join(import.meta.dirname, '..', 'build', 'systemd', 'paku.service'),
    'utf8',
  )
  const env = Object.fromEntries(
    [...unit.matchAll(/^Environment=(MALLOC_[A-Z_]+)=(\S+)$/gm)].map((m) => [m[1], m[2]]),
  ) as Record<string, string>
  if (Object.keys(env).length === 0) throw new Error('no MALLOC_ settings in the systemd unit')
  return env
}

const MAIN = join(import.meta.dirname, '..', 'src', 'main.ts')
// Resolved here, so a process started in another directory still finds it.
const TSX = import.meta.resolve('tsx')

/** A `paku` process run from source; its output lines (stdout and stderr) as they arrive. */
export type PakuProcess = { child: ChildProcess; lines: string[]; exited: Promise<number | null> }

/**
 * Runs `paku <args>` from source as a user would, in its own process group (like a shell job).
 * With `envFile`, a shell reads that file first (`set -a; . FILE`), as an operator does by hand.
 */
export function runPaku(
  args: string[],
  env: Record<string, string>,
  o: { cwd?: string; envFile?: string } = {},
): PakuProcess {
  const node = [process.execPath, '--import', TSX, MAIN, ...args]
  const [command, argv] =
    o.envFile === undefined
      ? [process.execPath, node.slice(1)]
      : ['bash', ['-c', 'set -a; . "$0"; set +a; exec "$@"', o.envFile, ...node]]
  const child = spawn(command as string, argv as string[], {
    cwd: o.cwd,
    env: { ...process.env, ...env },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines: string[] = []
  child.stdout?.on('data', (b: Buffer) => lines.push(...b.toString().split('\n').filter(Boolean)))
  child.stderr?.on('data', (b: Buffer) => lines.push(...b.toString().split('\n').filter(Boolean)))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  return { child, lines, exited }
}

/** The JSON log records among a process's output lines. */
export function logRecords(lines: string[]): Array<Record<string, unknown>> {
  return lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>]
    } catch {
      return []
    }
  })
}

/** Signals a process group started by runPaku (Ctrl-C in a terminal signals the whole group). */
export const signalGroup = (child: ChildProcess, signal: NodeJS.Signals) =>
  process.kill(-(child.pid as number), signal)

/** Cleanup: kills what is still running of a process group started by runPaku. */
export function stopGroup(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null) signalGroup(child, 'SIGKILL')
}
