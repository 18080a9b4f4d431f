import type MQEmitterRedis from 'mqemitter-redis'
import { maskUrl } from '../config/index.js'
import { errorText, type Logger } from '../log/index.js'

export type ClusterEmitterOptions = {
  /** redis:// or rediss:// URL (cluster.redisUrl). */
  url: string
  log: Logger
  /** How long start() waits for Redis before it fails (default 10 s). */
  connectTimeoutMs?: number
}

type RedisConn = {
  status: string
  on(ev: string, fn: (...a: unknown[]) => void): void
  disconnect(): void
  quit(): Promise<unknown>
}
type Emitter = ReturnType<typeof MQEmitterRedis> & {
  subConn: RedisConn
  pubConn: RedisConn
  state: { on(ev: string, fn: (err: Error) => void): void }
}

/**
 * The message fan-out between paku instances: aedes' own mqemitter-redis, handed to aedes as its `mq`.
 * Every PUBLISH (and the broker state PgPersistence shares) goes through Redis pub/sub to every
 * instance, which delivers it to its own subscribers. start() waits until Redis answers, so a wrong URL
 * or a Redis that is down stops start-up with a clear error instead of a broker that delivers nothing.
 * At runtime ioredis reconnects by itself; while Redis is away no message reaches any subscriber
 * (ingest goes on: rows are stored by the instance that received them) and /health says degraded.
 */
export function createClusterEmitter(opts: ClusterEmitterOptions) {
  const { log } = opts
  let mq: Emitter | undefined
  let failing: string | null = null
  let downSince: number | undefined

  return {
    name: 'cluster',
    /** The emitter for aedes (after start()). aedes closes it when the broker closes. */
    get mq(): Emitter {
      if (!mq) throw new Error('cluster emitter not started')
      return mq
    },
    async start(): Promise<void> {
      // Loaded on demand: a single instance never needs ioredis and its memory.
      const { default: create } = await import('mqemitter-redis')
      const emitter = create({ connectionString: opts.url, matchEmptyLevels: true }) as Emitter
      mq = emitter
      const ready = () => emitter.pubConn.status === 'ready' && emitter.subConn.status === 'ready'
      // mqemitter-redis closes with QUIT and waits for both connections to end, which never happens
      // while Redis is away: then (or after 2 s) the connections are dropped instead. aedes calls this
      // close() itself when the broker stops.
      const close = emitter.close.bind(emitter)
      // mqemitter-redis drops the promise of each QUIT it sends. When the connection ends before Redis
      // answers (Redis stopping at the same time, or the drop below), ioredis rejects it with "Connection
      // is closed." and nothing would handle that: an unhandled rejection at shutdown (seen once in CI).
      for (const conn of [emitter.subConn, emitter.pubConn]) {
        const quit = conn.quit.bind(conn)
        conn.quit = () => {
          const p = quit()
          p.catch(() => undefined)
          return p
        }
      }
      let closing: Promise<void> | undefined
      const drop = () => {
        emitter.subConn.disconnect()
        emitter.pubConn.disconnect()
      }
      emitter.close = (cb?: () => void) => {
        closing ??= new Promise<void>((resolve) => {
          if (!ready()) {
            drop()
            return resolve()
          }
          const timer = setTimeout(() => {
            drop()
            resolve()
          }, 2000)
          close(() => {
            clearTimeout(timer)
            resolve()
          })
        })
        void closing.then(() => cb?.())
      }
      // Transitions only: ioredis retries every few hundred ms while Redis is away.
      emitter.state.on('error', (err) => {
        if (failing === null)
          log.warn('Redis unreachable; messages are not fanned out until it is back', {
            redis: maskUrl(opts.url),
            err: errorText(err),
          })
        failing = errorText(err)
        downSince ??= Date.now()
      })
      for (const conn of [emitter.pubConn, emitter.subConn]) {
        conn.on('ready', () => {
          if (failing !== null && ready())
            log.info('Redis reachable again', {
              downSeconds: Math.round((Date.now() - (downSince ?? Date.now())) / 1000),
            })
          if (ready()) failing = null
          if (ready()) downSince = undefined
        })
      }
      const deadline = Date.now() + (opts.connectTimeoutMs ?? 10_000)
      while (!ready()) {
        if (Date.now() > deadline) {
          await new Promise<void>((r) => emitter.close(() => r()))
          mq = undefined
          throw new Error(
            `cluster: cannot reach Redis at ${maskUrl(opts.url)}${failing ? ` (${failing})` : ''} — is Redis running? check PAKU_CLUSTER_REDIS_URL`,
          )
        }
        await new Promise((r) => setTimeout(r, 50))
      }
      failing = null
      downSince = undefined
      log.info('connected to Redis', { redis: maskUrl(opts.url) })
    },
    async stop(): Promise<void> {
      const emitter = mq
      mq = undefined
      if (emitter) await new Promise<void>((r) => emitter.close(() => r()))
    },
    health(): { redis: 'ok' | 'down'; redisError?: string } {
      const up = mq !== undefined && mq.pubConn.status === 'ready' && mq.subConn.status === 'ready'
      return up ? { redis: 'ok' } : { redis: 'down', ...(failing ? { redisError: failing } : {}) }
    },
  }
}

export type ClusterEmitter = ReturnType<typeof createClusterEmitter>
