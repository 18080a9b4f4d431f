import { Aedes, type Client } from 'aedes'
import type { Kysely } from 'kysely'
import type { Config } from '../config/index.js'
import type { DB } from '../db/index.js'
import type { Logger } from '../log/index.js'
import type { Metric } from '../util/metric.js'
import { createAccept } from './accept.js'
import { createAuthenticate } from './authenticate.js'
import { createAuthorize } from './authorize.js'
import { listClients } from './clients.js'
import { clusterAedesOptions, followRemoteMessages, type ClusterOptions } from './cluster-fanout.js'
import { checkCredential, hasCredential } from './credentials.js'
import { createIdentify } from './identity.js'
import { createLedger, type Ledger } from './ledger.js'
import { createListeners } from './listeners.js'
import type { BrokerMessage } from './message.js'
import { createNotices, type Notices } from './notices.js'
import { readPacketsWithoutSlicing, writeIdsWithoutCache } from './packet-reads.js'
import { PgPersistence } from './pg-persistence.js'
import { createPrincipals, type Principals } from './principals.js'
import { brokerRoutes } from './routes.js'
import { createSensorClaims } from './sensors.js'
import { createSessionExpiry } from './session-expiry.js'
import { brokerHealth, brokerMetrics, createCounts, type Counts } from './stats.js'
import { openSettings } from './warnings.js'

export type { BrokerMessage } from './message.js'

export type BrokerOptions = {
  config: Config['mqtt']
  log: Logger
  /** Called for every PUBLISH a client sends (wills included); a returned promise delays the acknowledgement until it resolves. */
  onMessage: (msg: BrokerMessage) => Promise<void> | undefined
  /** Keeps retained messages, sessions, queued messages, wills and the broker's accounts in PostgreSQL. */
  db: () => Kysely<DB>
  /** The clock of session expiry and claim re-checks (tests move it). */
  now?: () => number
  /**
   * Whether a cmd/ota a client published (`{site}/edge/{device}/cmd/ota`) goes on to the device: OTA
   * sends each device one per version. Without it every command goes on.
   */
  vetCommand?: (deviceId: string, payload: Buffer) => Promise<{ deliver: boolean; reason: string }>
  /** One of several instances (docs/scaling.md, cluster-fanout.ts). */
  cluster?: ClusterOptions
  /** Called when a connected client's connection ends, however it ends. */
  onClientDisconnect?: (clientId: string) => void
}

/** The connections of an aedes instance, by client id. */
const clientsOf = (aedes: Aedes | undefined): Record<string, Client> =>
  (aedes as unknown as { clients: Record<string, Client> } | undefined)?.clients ?? {}

/**
 * The PostgreSQL persistence of one broker run: it keeps a subscription only where the connection was
 * granted it, and logs a refused queued message against the session's principal.
 */
function openPersistence(
  opts: BrokerOptions,
  deps: {
    ledger: Ledger
    notices: Notices
    principals: Principals
    clients: () => Record<string, Client>
  },
): PgPersistence {
  const { config, cluster } = opts
  const { ledger, notices, principals } = deps
  return new PgPersistence({
    db: opts.db,
    log: opts.log,
    ledger,
    quotas: config.quotas,
    sessionExpiryHours: config.sessionExpiryHours,
    ...(cluster ? { replicate: { instanceId: cluster.instanceId } } : {}),
    acceptSubscription: (clientId, topic) => {
      const client = deps.clients()[clientId]
      return client !== undefined && (principals.granted.get(client)?.has(topic) ?? false)
    },
    onQueueRefused: (clientId, quota) =>
      notices.quotaRefused(ledger.session(clientId)?.principal ?? clientId, quota, { clientId }),
  })
}

/** Publishes as the broker itself; resolves once queued for delivery. */
function publishAs(
  broker: Aedes | undefined,
  m: { topic: string; payload: string | Buffer; qos?: 0 | 1 | 2; retain?: boolean },
): Promise<void> {
  if (!broker) return Promise.reject(new Error('broker not started'))
  return new Promise((resolve, reject) => {
    broker.publish(
      {
        cmd: 'publish',
        topic: m.topic,
        payload: Buffer.from(m.payload),
        qos: m.qos ?? 0,
        retain: m.retain ?? false,
        dup: false,
      },
      (err?: Error | null) => (err ? reject(err) : resolve()),
    )
  })
}

/** Counts connections and their errors, and keeps what principals.ts knows of each client current. */
function observeClients(
  broker: Aedes,
  deps: {
    counts: Counts
    principals: Principals
    now: () => number
    log: Logger
    onClientConnect: ((clientId: string) => void) | undefined
    onClientDisconnect: ((clientId: string) => void) | undefined
  },
): void {
  const { counts, principals, log } = deps
  broker.on('client', (client: Client) => {
    counts.connections++
    principals.connectedAt.set(client, deps.now())
    deps.onClientConnect?.(client.id)
  })
  broker.on('clientDisconnect', (client: Client) => deps.onClientDisconnect?.(client.id))
  broker.on('unsubscribe', (topics: string[], client: Client) => {
    const set = principals.granted.get(client)
    for (const t of topics) set?.delete(t)
  })
  // aedes ends a connection by destroying its stream (after a DISCONNECT, for one), and a stream made
  // by guardStream (Node's Duplex.from) reports a destroy without an error as an AbortError, which
  // aedes passes on as the client's error: every clean disconnect counted as one. Only a deliberate
  // destroy makes an AbortError; what goes wrong on the wire (resets, bad packets) is counted.
  const deliberate = (err: Error) => err.name === 'AbortError'
  broker.on('clientError', (client: Client, err: Error) => {
    if (deliberate(err)) return
    counts.clientErrors++
    log.debug('client error', { clientId: client?.id, err: err.message })
  })
  broker.on('connectionError', (client: Client, err: Error) => {
    if (deliberate(err)) return
    counts.clientErrors++
    log.debug('connection error', { clientId: client?.id, err: err.message })
  })
}

/**
 * The embedded MQTT 3.1.1 broker (aedes) on TCP and WebSocket. QoS 0/1/2, retained messages, wills
 * and persistent sessions come from aedes; this composes the listeners (listeners.ts), who may do what
 * (authenticate.ts, authorize.ts), how much each login may keep (ledger.ts), the fan-out between
 * instances (cluster-fanout.ts) and the ingest hook (accept.ts).
 */
export function createBroker(opts: BrokerOptions) {
  const { config, log, cluster } = opts
  const now = opts.now ?? Date.now
  let aedes: Aedes | undefined
  let persistence: PgPersistence | undefined
  const counts = createCounts()
  const notices = createNotices({ log, now })
  const principals = createPrincipals()
  const ledger = createLedger({ quotas: config.quotas, now })
  const claims = createSensorClaims({ db: opts.db, now })
  const listeners = createListeners({ config, log, counts, notices })
  const connectHooks = createAuthenticate({
    config,
    log,
    principals,
    ledger,
    notices,
    counts,
    instanceId: cluster?.instanceId,
    identify: createIdentify({
      config,
      checkCredential: (username, password) => checkCredential(opts.db(), username, password),
      hasCredential: (username) => hasCredential(opts.db(), username),
    }),
  })
  const topicHooks = createAuthorize({
    log,
    principals,
    ledger,
    claims,
    notices,
    counts,
    ...(opts.vetCommand ? { vetCommand: opts.vetCommand } : {}),
    accept: createAccept({ onMessage: opts.onMessage, log, counts }),
  })
  const queueOf = (clientId: string) => persistence?.queueOf(clientId) ?? { messages: 0, bytes: 0 }

  const expiry = createSessionExpiry({
    config,
    log,
    ledger,
    counts,
    drop: (clientId) => persistence?.dropSession(clientId),
  })

  const health = () =>
    brokerHealth({
      listening: aedes !== undefined && listeners.listening(),
      clients: aedes?.connectedClients ?? 0,
      counts,
      pendingStateChanges: persistence?.pendingChanges ?? 0,
      ledger,
      totalBytes: config.quotas.totalBytes,
    })

  return {
    name: 'broker',
    /** Admin routes for MQTT credentials, relayed-sensor claims and the clients. */
    routes: brokerRoutes({
      db: opts.db,
      claims,
      clients: (filter) =>
        listClients({
          db: opts.db(),
          live: principals.live(Object.values(clientsOf(aedes))),
          session: (id) => ledger.session(id),
          queueOf,
          filter,
        }),
    }),
    async start(): Promise<void> {
      readPacketsWithoutSlicing()
      writeIdsWithoutCache()
      const state = openPersistence(opts, {
        ledger,
        notices,
        principals,
        clients: () => clientsOf(aedes),
      })
      persistence = state
      await claims.load()
      const broker = await Aedes.createBroker({
        ...clusterAedesOptions(cluster),
        persistence: state as never,
        connectTimeout: config.connectTimeoutMs,
        maxClientsIdLength: config.maxClientIdLength,
        maxTopicLevels: config.maxTopicLevels,
        maxInflightInbound: config.maxInflightInbound,
        ...connectHooks(state),
        ...topicHooks,
      })
      aedes = broker
      await followRemoteMessages({ broker, cluster, log })
      observeClients(broker, {
        counts,
        principals,
        now,
        log,
        onClientConnect: cluster?.onClientConnect,
        onClientDisconnect: opts.onClientDisconnect,
      })
      await listeners.start((c) => {
        principals.remember(c)
        broker.handle(c.stream, c.req as never)
      })
      for (const w of openSettings(config)) log.warn(w.msg, w.fields)
      expiry.start()
    },
    /** Expires persistent sessions now (the hourly check; tests call it after moving the clock). */
    expireSessions: expiry.expire,
    reloadTls: listeners.reloadTls,
    /** Publishes as the broker itself (OTA commands, retained config). Resolves once queued for delivery. */
    publish: (
      topic: string,
      payload: string | Buffer,
      options: { qos?: 0 | 1 | 2; retain?: boolean } = {},
    ): Promise<void> => publishAs(aedes, { topic, payload, ...options }),
    addresses: listeners.addresses,
    health,
    /** The broker's counters and state as Prometheus metrics. */
    metrics: (): Metric[] => brokerMetrics(health()),
    /** Messages queued for a session (tests). */
    queueOf,
    /** Retained usage of a principal (tests). */
    retainedOf: (principal: string) => ledger.retainedOf(principal),
    async stop(): Promise<void> {
      expiry.stop()
      const broker = aedes
      aedes = undefined
      // Stop accepting first, then close the clients: aedes does not close the listeners it was handed.
      await listeners.close(async () => {
        if (broker) await new Promise<void>((r) => broker.close(() => r()))
      })
      // aedes does not destroy its persistence; ours writes its last changes here, before the pool closes.
      const p = persistence
      persistence = undefined
      await p?.destroy()
    },
  }
}

export type Broker = ReturnType<typeof createBroker>
