import { join } from 'node:path'
import { createBroker } from './broker/index.js'
import type { Config } from './config/index.js'
import { createDatabase, type SqlFile } from './db/index.js'
import { createEcoflow } from './ecoflow/index.js'
import { createHttp, lookupKey, type HealthReport } from './http/index.js'
import { createIngest } from './ingest/index.js'
import { errorText, type Logger } from './log/index.js'

export type AppOptions = {
  config: Config
  log: Logger
  migrations: readonly SqlFile[]
  version: string
}

type Service = { name: string; start(): Promise<void>; stop(): Promise<void> }

/**
 * The composition root: the only place that knows every subsystem and the order they start in.
 * Subsystems never import each other; they talk through the functions passed in here.
 */
export function createApp(opts: AppOptions) {
  const { config, log } = opts
  const startedAt = Date.now()

  const db = createDatabase({ config: config.database, dataDir: config.dataDir, log: log.child('db'), migrations: opts.migrations })
  const ingest = createIngest({ config: config.ingest, db: () => db.db, log: log.child('ingest'), spoolDir: join(config.dataDir, 'spool') })
  const broker = createBroker({ config: config.mqtt, log: log.child('broker'), onMessage: (m) => ingest.accept(m), db: () => db.db })

  const ecoflow = createEcoflow({
    config: config.ecoflow,
    log: log.child('ecoflow'),
    write: (row) => ingest.record(row),
    publish: (topic, payload, o) => broker.publish(topic, payload, o),
  })

  async function health(): Promise<HealthReport> {
    const database = await db.health()
    const brokerHealth = broker.health()
    const ingestStats = ingest.stats()
    const degraded = !database.ok || ingest.health().degraded
    return {
      status: !brokerHealth.ok ? 'down' : degraded ? 'degraded' : 'ok',
      version: opts.version,
      uptimeSeconds: Math.round((Date.now() - startedAt) / 1000),
      database,
      broker: brokerHealth,
      ingest: ingestStats,
      ecoflow: ecoflow.health(),
    }
  }

  const http = createHttp({
    config: config.http,
    log: log.child('http'),
    health,
    routes: [ecoflow.routes, ...(broker.routes ? [broker.routes] : [])],
    lookupKey: (key) => lookupKey(db.db, key),
  })

  // Start order (design §3.3): db → ingest → broker → ecoflow → http. Stop is the reverse, so
  // producers stop before the last flush and the flush happens before the pool closes.
  const services: Service[] = [db, ingest, broker, ecoflow, http]
  const started: Service[] = []
  let stopping: Promise<void> | undefined

  async function stopStarted(): Promise<void> {
    const errors: Error[] = []
    while (started.length > 0) {
      const svc = started.pop() as Service
      try {
        await svc.stop()
      } catch (err) {
        log.error('stop failed', { service: svc.name, err: errorText(err) })
        errors.push(new Error(`stop ${svc.name}: ${errorText(err)}`, { cause: err }))
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'shutdown had errors')
  }

  return {
    db,
    ingest,
    broker,
    ecoflow,
    http,
    health,
    async start(): Promise<void> {
      for (const svc of services) {
        try {
          await svc.start()
          started.push(svc)
        } catch (err) {
          // The failing service may have half-started (a listener bound before the next failed): its
          // stop() releases what it holds; then the ones before it stop in reverse.
          await svc.stop().catch(() => undefined)
          await stopStarted().catch(() => undefined)
          throw new Error(`start ${svc.name}: ${errorText(err)}`, { cause: err })
        }
      }
    },
    /** Idempotent: a second call waits for the first. Keeps going past failures and reports them together. */
    stop(): Promise<void> {
      stopping ??= stopStarted()
      return stopping
    },
  }
}

export type App = ReturnType<typeof createApp>
