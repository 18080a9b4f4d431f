import type { AddressInfo } from 'node:net'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { createApi, createLiveHub } from './api/index.js'
import { uiFiles } from './assets.js'
import { createBroker } from './broker/index.js'
import { createClusterEmitter, createLeader } from './cluster/index.js'
import { ACK_FILTERS, commandsOpenApi, createCommands } from './commands/index.js'
import type { Config } from './config/index.js'
import { createDatabase, type Database, type SqlFile } from './db/index.js'
import { createEcoflow } from './ecoflow/index.js'
import {
  createFirstKey,
  createHttp,
  createRuntimeMonitor,
  createSetup,
  hasNamedKey,
  lookupKey,
  setupOpenApi,
  type HealthReport,
} from './http/index.js'
import { createIngest, type IncomingMessage } from './ingest/index.js'
import { errorText, type Logger } from './log/index.js'
import { createOta, writeOtaReport, writeStatusReports } from './ota/index.js'
import { createRollup, ECOFLOW_COLUMNS } from './rollup/index.js'
import { createUi } from './ui/index.js'

export type AppOptions = {
  config: Config
  log: Logger
  migrations: readonly SqlFile[]
  version: string
  /** The broker's clock (session expiry) and the setup link's; tests move it instead of waiting hours. */
  now?: () => number
}

type Service = { name: string; start(): Promise<void>; stop(): Promise<void> }

/**
 * The composition root: the only place that knows every subsystem and the order they start in.
 * Subsystems never import each other; they talk through the functions passed in here. Each wiring
 * helper below builds one layer from the ones before it; nothing starts until start().
 */
export function createApp(opts: AppOptions) {
  const { config, log } = opts
  const startedAt = Date.now()

  const db = createDatabase({
    config: config.database,
    dataDir: config.dataDir,
    log: log.child('db'),
    migrations: opts.migrations,
  })
  const cluster = wireCluster({ config, log, db, onLeading: (task) => resume(task) })
  // Where this instance's HTTP listener is, for links when no public URL is configured (known once it listens).
  const httpBase = () => listenerUrl(config.http, web.http.address())
  const { ota, commands, ingest, live, broker, publish } = wireMessaging({
    opts,
    db,
    cluster,
    httpBase,
  })
  const { rollup, ecoflow } = wireBackground({ opts, db, cluster, ingest, publish })
  const web = wireWeb({
    opts,
    db,
    cluster,
    startedAt,
    httpBase,
    parts: { ota, commands, ingest, live, broker, rollup, ecoflow },
  })
  const { http, setup, health } = web

  // Start order: runtime (/metrics' event-loop and GC figures, from the start) → db →
  // ingest → commands → [cluster] → broker → [leader] → ota → rollup → ecoflow → http → setup → live. The Redis
  // emitter is up before aedes is handed it; the leader takes its locks before the singleton work
  // starts, so a single instance starts its work at once.
  // Stop is the reverse, so producers stop before the last flush and the flush happens before the pool
  // closes. Commands load their open ones before the broker delivers acknowledgements; OTA starts after
  // the broker because a rollout pass may publish cmd/ota. Live streams end before http closes (an
  // open event stream would hold the server's close() forever). The setup link is made once HTTP listens
  // (it names the port).
  const liveService: Service = {
    name: 'live',
    start: async () => undefined,
    stop: async () => live.closeAll(),
  }
  const lifecycle = createLifecycle(log, [
    web.runtime,
    db,
    ingest,
    commands,
    ...(cluster.emitter ? [cluster.emitter] : []),
    broker,
    ...(cluster.leader ? [cluster.leader] : []),
    ota,
    rollup,
    ecoflow,
    http,
    setup,
    liveService,
  ])

  /** A task this instance has just come to lead starts at once rather than at its next interval. */
  function resume(task: string): void {
    if (task === 'ecoflow' && lifecycle.running(ecoflow)) void ecoflow.poll()
    if (task === 'rollouts' && lifecycle.running(ota))
      ota.tick().catch((err: unknown) => log.warn('rollout pass failed', { err: errorText(err) }))
  }

  return {
    db,
    ingest,
    broker,
    ota,
    rollup,
    ecoflow,
    commands,
    live,
    http,
    setup,
    health,
    leader: cluster.leader,
    instanceId: cluster.instanceId,
    start: lifecycle.start,
    stop: lifecycle.stop,
  }
}

export type App = ReturnType<typeof createApp>

/**
 * Several instances (docs/scaling.md): messages fan out through Redis, and singleton work (rollout
 * progression, EcoFlow polling, rollups and retention) runs on the instance holding its advisory lock.
 * Without cluster.redisUrl none of this exists and paku is the single instance it always was.
 */
function wireCluster(o: {
  config: Config
  log: Logger
  db: Database
  /** This instance has come to lead `task`. */
  onLeading: (task: string) => void
}) {
  const { config, log } = o
  const instanceId = config.cluster.instanceId || `${hostname()}-${process.pid}`
  const emitter = config.cluster.redisUrl
    ? createClusterEmitter({ url: config.cluster.redisUrl, log: log.child('cluster') })
    : undefined
  const leader = emitter
    ? createLeader({
        connectionString: () => o.db.connectionString(),
        log: log.child('cluster'),
        tasks: ['rollouts', 'ecoflow', 'rollup'],
        retryMs: config.cluster.leaderRetrySeconds * 1000,
        onChange: (task, leading) => {
          if (leading) o.onLeading(task)
        },
      })
    : undefined
  /** Whether this instance does `task` now: always, when it is the only one. */
  const leads = (task: string) => () => leader?.leads(task) ?? true
  return { instanceId, emitter, leader, leads }
}

type Cluster = ReturnType<typeof wireCluster>

/**
 * The message path: OTA, commands, ingest, the live view and the broker. Every incoming message
 * (MQTT, and HTTP telemetry) is seen by the live view and by commands waiting for an acknowledgement,
 * then stored.
 */
function wireMessaging(o: {
  opts: AppOptions
  db: Database
  cluster: Cluster
  httpBase: () => string
}) {
  const { config, log } = o.opts
  const { cluster } = o
  const db = () => o.db.db
  const now = o.opts.now ? { now: o.opts.now } : {}
  // OTA and commands publish through the broker, which is built after them because it hands them what
  // devices send (acknowledgements, a client's own cmd/ota to vet). Nothing publishes before start().
  const publish = (topic: string, payload: string, p: { qos: 0 | 1; retain: boolean }) =>
    broker.publish(topic, payload, p)

  const ota = createOta({
    config: config.ota,
    db,
    log: log.child('ota'),
    publish,
    leads: cluster.leads('rollouts'),
    fallbackPublicUrl: o.httpBase,
    ...now,
  })
  const commands = createCommands({
    db,
    log: log.child('commands'),
    publish,
    // Commands another instance sent (and may have died since) are closed and expired here too.
    ...(config.cluster.redisUrl ? { reloadMs: 10_000 } : {}),
  })
  const ingest = createIngest({
    config: config.ingest,
    db,
    log: log.child('ingest'),
    spoolDir: join(config.dataDir, 'spool'),
    // Status and OTA reports drive rollouts: success by version, progress, re-sending missed commands.
    observe: (row) => {
      if (row.kind === 'status') ota.deviceStatus(row)
      else if (row.kind === 'ota') ota.deviceReport(row)
    },
    // The tables those reports update are OTA's; ingest writes them with OTA's code, in its transaction.
    deviceReports: { statuses: writeStatusReports, ota: writeOtaReport },
  })
  // Both peeks are synchronous and bounded.
  const live = createLiveHub()
  function incoming(m: IncomingMessage): Promise<void> | undefined {
    live.push(m)
    commands.observe(m)
    return ingest.accept(m)
  }
  const { emitter } = cluster
  const broker = createBroker({
    config: config.mqtt,
    log: log.child('broker'),
    onMessage: incoming,
    // A client's cmd/ota (the old CI workflow publishes its own) reaches each device once per version.
    vetCommand: (deviceId, payload) => ota.vetCommand(deviceId, payload),
    // What ingest remembers of a client's QoS 1/2 message ids may go (read back when it publishes again).
    onClientDisconnect: (clientId) => ingest.release(clientId),
    db,
    ...now,
    ...(emitter
      ? {
          cluster: {
            instanceId: cluster.instanceId,
            mq: () => emitter.mq,
            // A command's acknowledgement may reach another instance than the one that sent it (stored
            // only by the instance that received it). The live view shows this instance's messages.
            remoteFilters: ACK_FILTERS,
            onRemoteMessage: (m: IncomingMessage) => commands.observe(m),
            // A device that failed over from a dead instance redelivers what that one stored but did
            // not acknowledge; ingest must know those message ids to keep them from becoming duplicates.
            onClientConnect: (clientId: string) => ingest.forget(clientId),
          },
        }
      : {}),
  })
  return { ota, commands, ingest, live, broker, publish }
}

type Messaging = ReturnType<typeof wireMessaging>

/** The work paku does on its own schedule: rollups and retention, and EcoFlow polling. */
function wireBackground(o: {
  opts: AppOptions
  db: Database
  cluster: Cluster
  ingest: Messaging['ingest']
  publish: Messaging['publish']
}) {
  const { config, log } = o.opts
  const { ingest } = o
  const rollup = createRollup({
    config: config.rollup,
    retention: config.retention,
    db: () => o.db.db,
    log: log.child('rollup'),
    leads: o.cluster.leads('rollup'),
    busy: ingest.busy,
  })
  const ecoflow = createEcoflow({
    config: config.ecoflow,
    log: log.child('ecoflow'),
    write: (row) => ingest.record(row),
    publish: o.publish,
    leads: o.cluster.leads('ecoflow'),
  })
  return { rollup, ecoflow }
}

/** HTTP: the API, the UI, the first-run setup link, /health and /metrics, and every subsystem's routes. */
function wireWeb(o: {
  opts: AppOptions
  db: Database
  cluster: Cluster
  startedAt: number
  httpBase: () => string
  parts: Omit<Messaging, 'publish'> & ReturnType<typeof wireBackground>
}) {
  const { config, log, version } = o.opts
  const { db, cluster } = o
  const { ota, commands, ingest, live, broker, rollup, ecoflow } = o.parts
  const api = createApi({
    db: () => db.db,
    log: log.child('api'),
    live,
    version,
    // The other /api routes in its OpenAPI document.
    openApi: [commandsOpenApi, setupOpenApi],
    ecoflowColumns: ECOFLOW_COLUMNS,
    telemetry: {
      // The checks MQTT ingest applies to a data message, so HTTP gets the same 400 reasons.
      check: (topic, payload) => ingest.checkData(topic, payload),
      // As a QoS 1 message: the promise resolves once the row is committed or spooled. Not through
      // wireMessaging's incoming(): the API pushes to the live view itself, after the row is durable,
      // and a data message never acknowledges a command.
      accept: async (m) => {
        await ingest.accept({ ...m, qos: 1, receivedAt: new Date() })
      },
    },
  })
  const ui = createUi({ files: uiFiles })
  // First run: with no admin key at all, a one-time link to create one (http/setup.ts).
  const setup = createSetup({
    log: log.child('http'),
    hasKey: async () => config.http.adminApiKey !== '' || (await hasNamedKey(db.db)),
    createFirstKey: (name) => createFirstKey(db.db, name),
    baseUrl: o.httpBase,
    maxFailuresPerMinute: config.http.maxAuthFailuresPerMinute,
    ...(o.opts.now ? { now: o.opts.now } : {}),
  })
  const runtime = createRuntimeMonitor({ quiet: () => ingest.stats().pending === 0 })

  async function health(): Promise<HealthReport> {
    const database = await db.health()
    const brokerHealth = broker.health()
    const ingestStats = ingest.stats()
    const { emitter, leader } = cluster
    const clusterHealth =
      emitter && leader
        ? { instanceId: cluster.instanceId, ...emitter.health(), ...leader.health() }
        : undefined
    const degraded = !database.ok || ingest.health().degraded || clusterHealth?.redis === 'down'
    return {
      status: !brokerHealth.ok ? 'down' : degraded ? 'degraded' : 'ok',
      version,
      uptimeSeconds: Math.round((Date.now() - o.startedAt) / 1000),
      memory: runtime.memory(),
      database,
      broker: brokerHealth,
      ingest: ingestStats,
      ecoflow: ecoflow.health(),
      ota: ota.health(),
      rollup: rollup.health(),
      commands: commands.health(),
      live: live.stats(),
      ...(clusterHealth ? { cluster: clusterHealth } : {}),
    }
  }

  const http = createHttp({
    config: config.http,
    log: log.child('http'),
    health,
    routes: [
      ota.routes,
      ecoflow.routes,
      api.routes,
      commands.routes,
      ui.routes,
      broker.routes,
      setup.routes,
    ],
    lookupKey: (key) => lookupKey(db.db, key),
    // Firmware images are larger than any other body; the multipart envelope adds a little.
    bodyLimits: [
      { path: /^\/api\/admin\/firmware(\/|$)/, maxBytes: config.ota.maxFirmwareBytes + 65_536 },
    ],
    metrics: async () => [
      ...ingest.metrics(),
      ...broker.metrics(),
      ...(await ota.metrics()),
      ...runtime.metrics(),
    ],
  })
  return { setup, runtime, health, http }
}

/** http://host:port of the HTTP listener (the configured port until it listens); a wildcard host is this machine's name. */
function listenerUrl(http: Config['http'], address: AddressInfo | undefined): string {
  const host = ['0.0.0.0', '::', ''].includes(http.host) ? hostname() : http.host
  return `http://${host.includes(':') ? `[${host}]` : host}:${address?.port ?? http.port}`
}

/**
 * Starts services in order and stops the started ones in reverse. If one fails to start, it and the
 * ones before it are stopped and the error names it. stop() is idempotent (a second call waits for the
 * first) and keeps going past failures, reporting them together.
 */
function createLifecycle(log: Logger, services: readonly Service[]) {
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
    /** Whether `svc` has started and no stop has begun. */
    running(svc: Service): boolean {
      return stopping === undefined && started.includes(svc)
    },
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
