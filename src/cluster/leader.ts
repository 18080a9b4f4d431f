import pg from 'pg'
import { errorText, type Logger } from '../log/index.js'

export type LeaderOptions = {
  /** The database to lock in (the pool's URL; the lock has its own connection). */
  connectionString: () => string
  log: Logger
  /** Names of the singleton tasks; each is one advisory lock, so different instances may lead different tasks. */
  tasks: readonly string[]
  /** How often a standby tries to take a task over, and how often the leader checks its connection. */
  retryMs: number
  /** Called when this instance starts or stops leading a task (never throws into the helper). */
  onChange?: (task: string, leading: boolean) => void
  /** Called after every try to take the tasks, whatever came of it (tests wait for tries, not for time). */
  onAttempt?: () => void
}

/**
 * Singleton work across instances (docs/scaling.md): one PostgreSQL session advisory lock per task,
 * held on a dedicated connection (not the pool's, whose connections come and go). PostgreSQL releases
 * a session lock when its connection ends, so when the leader's process dies — the kernel closes its
 * socket, the server sees EOF at once — a standby gets the lock at its next try, within retryMs.
 * The leader checks its connection every retryMs and steps down at the first sign of losing it (error,
 * end, or a check that does not answer within retryMs); server-side TCP keepalives (a few seconds) make
 * PostgreSQL drop the session of a leader whose host vanished without closing anything.
 */
export function createLeader(opts: LeaderOptions) {
  const { log } = opts
  const held = new Set<string>()
  let client: pg.Client | undefined
  let timer: NodeJS.Timeout | undefined
  let running: Promise<void> | undefined
  let stopped = true
  let lastError: string | null = null

  const change = (task: string, leading: boolean) => {
    if (leading) held.add(task)
    else held.delete(task)
    log.info(leading ? 'leading singleton work' : 'no longer leading singleton work', { task })
    try {
      opts.onChange?.(task, leading)
    } catch (err) {
      log.error('leadership change handler failed', { task, err: errorText(err) })
    }
  }

  /** The lock connection is gone or unsure: every task is someone else's now. */
  function stepDown(why: string): void {
    const c = client
    client = undefined
    c?.removeAllListeners('end')
    c?.on('error', () => undefined)
    void c?.end().catch(() => undefined)
    if (held.size > 0) log.warn('lock connection lost; stepping down', { tasks: [...held], why })
    for (const task of [...held]) change(task, false)
  }

  async function connect(): Promise<pg.Client> {
    const c = new pg.Client({
      connectionString: opts.connectionString(),
      application_name: 'paku-leader',
      keepAlive: true,
      keepAliveInitialDelayMillis: 2000,
      connectionTimeoutMillis: Math.max(opts.retryMs, 2000),
      query_timeout: Math.max(opts.retryMs, 2000),
      // The server notices a vanished leader host in ~5 s instead of the OS default of hours.
      options: '-c tcp_keepalives_idle=3 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=2',
    })
    c.on('error', (err) => {
      if (client === c) stepDown(errorText(err))
    })
    c.on('end', () => {
      if (client === c) stepDown('connection ended')
    })
    await c.connect()
    return c
  }

  async function attempt(): Promise<void> {
    try {
      if (!client) client = await connect()
      const c = client
      if (held.size > 0) await c.query('SELECT 1')
      for (const task of opts.tasks) {
        if (held.has(task) || stopped) continue
        const r = await c.query<{ ok: boolean }>(
          'SELECT pg_try_advisory_lock(hashtext($1)) AS ok',
          [`paku.leader.${task}`],
        )
        if (client === c && r.rows[0]?.ok === true) change(task, true)
      }
      if (lastError !== null) log.info('leader election working again')
      lastError = null
    } catch (err) {
      if (lastError === null) log.warn('leader election failing; retrying', { err: errorText(err) })
      lastError = errorText(err)
      stepDown(lastError)
    }
    opts.onAttempt?.()
  }

  function schedule(): void {
    if (stopped) return
    timer = setTimeout(() => {
      running = attempt().finally(() => {
        running = undefined
        schedule()
      })
    }, opts.retryMs)
    timer.unref()
  }

  return {
    name: 'leader',
    /** Whether this instance runs the task now. */
    leads: (task: string): boolean => held.has(task),
    /** Tasks this instance leads, for /health. */
    leaderOf: (): string[] => [...held].sort(),
    /** Takes what it can at once (so a single instance starts its work without waiting), then retries in the background. */
    async start(): Promise<void> {
      stopped = false
      await attempt()
      schedule()
    },
    async stop(): Promise<void> {
      stopped = true
      clearTimeout(timer)
      await running
      // Ending the session releases its locks: a standby takes over at its next try.
      const c = client
      client = undefined
      for (const task of [...held]) change(task, false)
      await c?.end().catch(() => undefined)
    },
    health(): { leaderOf: string[]; lastError: string | null } {
      return { leaderOf: [...held].sort(), lastError }
    },
  }
}

export type Leader = ReturnType<typeof createLeader>
