import { readFileSync } from 'node:fs'
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server as HttpServer,
} from 'node:http'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import {
  createServer as createTlsServer,
  type SecureContextOptions,
  type Server as TlsServer,
  type TLSSocket,
} from 'node:tls'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import {
  Aedes,
  type AedesPublishPacket,
  type Client,
  type ConnectPacket,
  type PublishPacket,
  type Subscription,
} from 'aedes'
import { createWebSocketStream, WebSocketServer } from 'ws'
import type { Kysely } from 'kysely'
import type { Config } from '../config/index.js'
import type { DB } from '../db/index.js'
import { errorText, type Logger } from '../log/index.js'
import { canPublish, canReceive, canSubscribe, discoveryProblem, type SensorKey } from './acl.js'
import { listClients, type LiveClient } from './clients.js'
import { checkCredential, hasCredential } from './credentials.js'
import { addressKey } from '../util/address.js'
import { counter, gauge, type Metric } from '../util/metric.js'
import { createFailureLimiter } from '../util/failure-limiter.js'
import { coalesceWrites } from './coalesce-writes.js'
import { createIdentify, type Identity } from './identity.js'
import { createLedger, QUOTA_NAMES, type QuotaName } from './ledger.js'
import { guardStream, holdReading } from './packet-guard.js'
import { readPacketsWithoutSlicing } from './packet-reads.js'
import { brokerRoutes } from './routes.js'
import { createSensorClaims } from './sensors.js'
import { isSuppressed, suppress } from './suppress.js'
import { openSettings } from './warnings.js'
import { PgPersistence } from './pg-persistence.js'

/** What the broker hands to ingest for every PUBLISH a client sends (wills included). */
export type BrokerMessage = {
  topic: string
  payload: Buffer
  clientId: string
  qos: 0 | 1 | 2
  messageId: number | undefined
  dup: boolean
  retain: boolean
  receivedAt: Date
}

/** The CN of a verified client certificate. */
function peerName(socket: TLSSocket): string | undefined {
  const cn = socket.getPeerCertificate()?.subject?.CN
  return typeof cn === 'string' && cn !== '' ? cn : Array.isArray(cn) ? cn[0] : undefined
}

/** A device's OTA command topic, `{site}/edge/{device}/cmd/ota`. */
const OTA_COMMAND = /^[^/]+\/edge\/([^/]+)\/cmd\/ota$/

/** How often persistent sessions are checked for expiry (their expiry is counted in hours). */
const EXPIRY_CHECK_MS = 3_600_000

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
  /**
   * One of several instances (docs/scaling.md): messages fan out through `mq` (mqemitter-redis), broker
   * state changes are shared with the other instances, and messages other instances received are handed
   * to onRemoteMessage (never to onMessage: the instance that received a message stores it).
   */
  cluster?: {
    instanceId: string
    mq: () => unknown
    onRemoteMessage?: (msg: BrokerMessage) => void
    /** The topic filters onRemoteMessage wants (not `#`: every instance would then decode every message). */
    remoteFilters?: readonly string[]
    /** A client connected here (it may have been connected to another instance before). */
    onClientConnect?: (clientId: string) => void
  }
}

/**
 * The embedded MQTT 3.1.1 broker (aedes) on TCP and WebSocket. QoS 0/1/2, retained messages, wills
 * and persistent sessions come from aedes; this adds listeners, who may do what (identity.ts, acl.ts,
 * sensors.ts), how much each login may keep (ledger.ts), abuse limits and the ingest hook.
 */
export function createBroker(opts: BrokerOptions) {
  const { config, log } = opts
  const now = opts.now ?? Date.now
  let aedes: Aedes | undefined
  let persistence: PgPersistence | undefined
  let tcp: Server | undefined
  let http: HttpServer | undefined
  let wss: WebSocketServer | undefined
  let tlsServer: TlsServer | undefined
  let https: HttpsServer | undefined
  let wssTls: WebSocketServer | undefined
  /** The verified client certificate's CN per connection stream, for certificate logins. */
  const certNames = new WeakMap<object, string>()
  /** The remote address per connection stream, for the failed-login limiters. */
  const addresses = new WeakMap<object, string>()
  /** Whether the listener a connection stream came in on takes anonymous clients. */
  const anonymousOn = new WeakMap<object, boolean>()
  const perAddress = new Map<string, number>()
  // Failed logins are counted per (address, username) and per address; a success clears only its own
  // pair, so one principal's successes never reset the count of guesses at another's password.
  const pairLimiter = createFailureLimiter({ maxFailures: config.maxAuthFailuresPerMinute })
  const addressLimiter = createFailureLimiter({
    maxFailures: config.maxAuthFailuresPerAddressPerMinute,
  })

  /**
   * Admits a socket unless its address (an IPv6 /64 counts as one) already holds
   * maxConnectionsPerAddress; tracks it until it closes. Returns false (and destroys it) when refused.
   */
  const admit = (socket: Socket): boolean => {
    const ip = addressKey(socket.remoteAddress ?? 'unknown')
    const open = perAddress.get(ip) ?? 0
    if (open >= config.maxConnectionsPerAddress) {
      counts.refusedConnections++
      warnOnce(`conn:${ip}`, 'too many connections from one address; refusing', {
        address: ip,
        limit: config.maxConnectionsPerAddress,
      })
      socket.destroy()
      return false
    }
    perAddress.set(ip, open + 1)
    sockets.add(socket)
    socket.once('close', () => {
      sockets.delete(socket)
      const n = (perAddress.get(ip) ?? 1) - 1
      if (n <= 0) perAddress.delete(ip)
      else perAddress.set(ip, n)
    })
    return true
  }
  const sockets = new Set<Socket>()
  const counts = {
    connections: 0,
    messagesIn: 0,
    clientErrors: 0,
    authFailures: 0,
    denied: 0,
    refusedConnections: 0,
    refusedClientIds: 0,
    refusedOrigins: 0,
    expiredSessions: 0,
    commandsNotDelivered: 0,
  }
  const identities = new WeakMap<Client, Identity>()
  /** The topics each connection was granted (the subscription quota, and what the persistence may keep). */
  const granted = new WeakMap<Client, Set<string>>()
  /** Connections that said they are a bridge (Mosquitto's try_private: the protocol version's high bit). */
  const bridges = new WeakSet<Client>()
  /** When each connection logged in (for the console's client view). */
  const connectedAt = new WeakMap<Client, number>()
  const lastAuthLog = new Map<string, number>()
  const ledger = createLedger({ quotas: config.quotas, now })
  const claims = createSensorClaims({ db: opts.db, now })
  const identify = createIdentify({
    config,
    checkCredential: (username, password) => checkCredential(opts.db(), username, password),
    hasCredential: (username) => hasCredential(opts.db(), username),
  })
  let connections = 0
  let expiryTimer: NodeJS.Timeout | undefined

  /** Whether a line for this key may be logged now: at most once a minute per key (a misconfigured device retries every few seconds). */
  const due = (key: string) => {
    const t = now()
    if ((lastAuthLog.get(key) ?? 0) + 60_000 > t) return false
    if (lastAuthLog.size > 10_000) lastAuthLog.clear()
    lastAuthLog.set(key, t)
    return true
  }
  const warnOnce = (key: string, msg: string, fields: Record<string, unknown>) =>
    due(key) && log.warn(msg, fields)
  const infoOnce = (key: string, msg: string, fields: Record<string, unknown>) =>
    due(key) && log.info(msg, fields)

  /** A refusal for a quota: counted by the ledger, logged once a minute per principal. */
  const quotaRefused = (principal: string, quota: QuotaName, fields: Record<string, unknown>) =>
    warnOnce(`quota:${principal}`, 'MQTT quota reached; refused', { principal, quota, ...fields })

  /**
   * Hands an authorised PUBLISH to ingest. aedes sends the QoS 1 PUBACK (and the QoS 2 PUBREC) only
   * after authorizePublish calls back, so waiting for the row to be durable makes the acknowledgement
   * mean "stored" (design A4.1). Wills pass through here too. Packets of one socket read are authorised
   * concurrently, so a pipelining client (a bridge with 20 in flight) shares one flush.
   */
  function accept(
    client: Client,
    packet: PublishPacket,
    payload: Buffer,
    callback: (error?: Error | null) => void,
  ): void {
    counts.messagesIn++
    let durable: Promise<void> | undefined
    try {
      durable = opts.onMessage({
        topic: packet.topic,
        payload,
        clientId: client.id,
        qos: packet.qos,
        messageId: packet.messageId,
        dup: packet.dup,
        retain: packet.retain,
        receivedAt: new Date(),
      })
    } catch (err) {
      // The one catch at the MQTT boundary: an ingest bug must never reach aedes.
      log.error('message handler failed', { topic: packet.topic, err: errorText(err) })
    }
    if (!durable) return callback(null)
    if (packet.qos === 0) {
      // Nothing to acknowledge: the promise is ingest asking to slow down (the database lags).
      // Reading this connection pauses until it resolves; the message itself goes on now.
      holdReading(client.conn as Duplex, durable)
      return callback(null)
    }
    durable.then(
      () => callback(null),
      (err: unknown) => {
        log.error('message not stored; not acknowledging it', {
          topic: packet.topic,
          err: errorText(err),
        })
        callback(err instanceof Error ? err : new Error(String(err)))
      },
    )
  }

  /** Why a device may not publish for a relayed sensor (another gateway owns it, or it claimed its quota), or undefined. */
  async function relayed(who: Identity, sensor: SensorKey): Promise<string | undefined> {
    const limit = ledger.relayedSensorLimit(who.kind)
    const result = await claims.publish(who.deviceId as string, sensor, limit)
    if (result === 'owner') return undefined
    if (result === 'claimed') {
      log.info('relayed sensor claimed', {
        deviceId: who.deviceId,
        sensor: `${sensor.site}/${sensor.system}/${sensor.sensor}`,
      })
      return undefined
    }
    if (result === 'limit') {
      ledger.refuse('relayedSensors')
      quotaRefused(who.principal, 'relayedSensors', { sensor: sensor.sensor, limit })
      return `claimed ${limit} relayed sensors already`
    }
    return `${sensor.sensor} is relayed by another gateway`
  }

  /** Deletes persistent sessions whose client has been away longer than mqtt.sessionExpiryHours. */
  async function expireSessions(): Promise<number> {
    const expired = ledger.expired(config.sessionExpiryHours)
    for (const clientId of expired) await persistence?.dropSession(clientId)
    if (expired.length > 0) {
      counts.expiredSessions += expired.length
      log.info('persistent sessions expired', {
        sessions: expired.length,
        afterHours: config.sessionExpiryHours,
      })
    }
    return expired.length
  }

  /** Listening, clients, counters, and what the broker holds with the refusals per quota. */
  function health() {
    const l = ledger.stats()
    return {
      ok: aedes !== undefined && tcp?.listening === true,
      clients: aedes?.connectedClients ?? 0,
      ...counts,
      pendingStateChanges: persistence?.pendingChanges ?? 0,
      // What the broker holds, and the refusals per quota since start.
      state: {
        sessions: l.sessions,
        persistentSessions: l.persistentSessions,
        retainedTopics: l.retainedTopics,
        retainedBytes: l.retainedBytes,
        queuedBytes: l.queuedBytes,
        totalBytes: config.quotas.totalBytes,
      },
      quotaRefusals: l.refused,
    }
  }

  function tlsOptions(): SecureContextOptions & {
    requestCert: boolean
    rejectUnauthorized: boolean
  } {
    const read = (key: string, file: string) => {
      try {
        return readFileSync(file)
      } catch (err) {
        throw new Error(
          `mqtt.tls.${key}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`,
        )
      }
    }
    const ca = config.tls.caFile ? read('caFile', config.tls.caFile) : undefined
    return {
      cert: read('certFile', config.tls.certFile),
      key: read('keyFile', config.tls.keyFile),
      ...(ca ? { ca } : {}),
      // With a CA, client certificates are requested (and verified); required only with requireClientCert.
      requestCert: ca !== undefined,
      rejectUnauthorized: config.tls.requireClientCert,
    }
  }

  const listen = (
    server: Server | HttpServer | TlsServer | HttpsServer,
    host: string,
    port: number,
  ) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => {
        server.off('error', reject)
        resolve()
      })
    })

  /** This instance's connections as the console shows them (clients.ts). */
  function liveClients(): LiveClient[] {
    const clients = Object.values(
      (aedes as unknown as { clients: Record<string, Client> } | undefined)?.clients ?? {},
    )
    return clients.map((client) => {
      const who = identities.get(client)
      const c = client as Client & {
        version?: number
        _keepaliveInterval?: number
        subscriptions?: Record<string, { qos: number }>
      }
      return {
        id: client.id,
        connectedAt: connectedAt.get(client),
        address: addresses.get(client.conn as object),
        principal: who?.principal,
        kind: who?.kind,
        username: who?.username,
        rights: who?.rights,
        bridge: bridges.has(client),
        clean: client.clean,
        // aedes keeps 1.5 × the keep-alive (MQTT 3.1.1 §3.1.2.10) in milliseconds.
        keepaliveSeconds:
          c._keepaliveInterval && c._keepaliveInterval > 0
            ? Math.round((c._keepaliveInterval - 1) / 1500)
            : undefined,
        version: c.version,
        subscriptions: Object.entries(c.subscriptions ?? {}).map(([topic, sub]) => ({
          topic,
          qos: sub.qos,
        })),
      }
    })
  }

  return {
    name: 'broker',
    /** Admin routes for MQTT credentials, relayed-sensor claims and the clients. */
    routes: brokerRoutes({
      db: opts.db,
      claims,
      clients: (filter) =>
        listClients({
          db: opts.db(),
          live: liveClients(),
          session: (id) => ledger.session(id),
          queueOf: (id) => persistence?.queueOf(id) ?? { messages: 0, bytes: 0 },
          filter,
        }),
    }),
    async start(): Promise<void> {
      readPacketsWithoutSlicing()
      const cluster = opts.cluster
      persistence = new PgPersistence({
        db: opts.db,
        log,
        ledger,
        quotas: config.quotas,
        sessionExpiryHours: config.sessionExpiryHours,
        ...(cluster ? { replicate: { instanceId: cluster.instanceId } } : {}),
        acceptSubscription: (clientId, topic) => {
          const client = (aedes as unknown as { clients: Record<string, Client> } | undefined)
            ?.clients[clientId]
          return client !== undefined && (granted.get(client)?.has(topic) ?? false)
        },
        onQueueRefused: (clientId, quota) =>
          quotaRefused(ledger.session(clientId)?.principal ?? clientId, quota, { clientId }),
      })
      await claims.load()
      const state = persistence
      const broker = await Aedes.createBroker({
        // aedes' broker id marks the messages and wills of this instance (a dead broker's wills are published by the others).
        ...(cluster ? { id: cluster.instanceId, mq: cluster.mq() as never } : {}),
        persistence: state as never,
        connectTimeout: config.connectTimeoutMs,
        maxClientsIdLength: config.maxClientIdLength,
        maxTopicLevels: config.maxTopicLevels,
        maxInflightInbound: config.maxInflightInbound,
        preConnect: (
          client: Client,
          packet: ConnectPacket,
          callback: (error: Error | null, ok: boolean) => void,
        ) => {
          // mqtt-packet takes the bridge bit off the protocol version and says so here.
          if ((packet as ConnectPacket & { bridgeMode?: boolean }).bridgeMode) bridges.add(client)
          callback(null, true)
        },
        authenticate: (
          client: Client,
          username: string | undefined,
          password: Buffer | undefined,
          done: (error: (Error & { returnCode: number }) | null, success: boolean | null) => void,
        ) => {
          const ip = addressKey(addresses.get(client.conn as object) ?? 'unknown')
          const pair = `${ip}\u0000${username ?? ''}`
          const wait = Math.max(pairLimiter.blockedFor(pair), addressLimiter.blockedFor(ip))
          const refuse = (code: 2 | 3 | 4 | 5, message: string) =>
            done(Object.assign(new Error(message), { returnCode: code }), null)
          if (wait > 0) {
            counts.authFailures++
            warnOnce(
              `blocked:${ip}`,
              'MQTT logins from this address refused after repeated failures',
              { address: ip, retryInSeconds: Math.ceil(wait / 1000) },
            )
            return refuse(5, 'too many failed logins')
          }
          identify({
            username,
            password,
            certName: certNames.get(client.conn as object),
            clientId: client.id,
            anonymous: anonymousOn.get(client.conn as object) ?? false,
          }).then(
            (result) => {
              if ('code' in result) {
                if (result.code === 2) {
                  counts.refusedClientIds++
                  warnOnce(`id:${client.id}`, 'MQTT client id refused', {
                    clientId: client.id,
                    username: username ?? null,
                    reason: result.reason,
                  })
                } else {
                  pairLimiter.fail(pair)
                  addressLimiter.fail(ip)
                  counts.authFailures++
                  warnOnce(`auth:${username ?? ''}`, 'MQTT login refused', {
                    clientId: client.id,
                    username: username ?? null,
                    reason: result.reason,
                  })
                }
                // CONNACK 2 (identifier rejected), 4 (bad user name or password) or 5 (not authorized), MQTT 3.1.1 §3.2.2.3.
                return refuse(result.code, result.reason)
              }
              if (username) pairLimiter.succeed(pair)
              const who = result.who
              // A client id belongs to the principal that holds it (connected, or a kept persistent session).
              // Unique across instances: a release from one must not end a connection another made.
              const connId = `${cluster?.instanceId ?? ''}:${connections++}`
              const wasPersistent = ledger.session(client.id)?.persistent === true
              const claimed = ledger.claim(client.id, {
                principal: who.principal,
                kind: who.kind,
                persistent: !client.clean,
                connId,
              })
              if (claimed === 'identifier') {
                counts.refusedClientIds++
                warnOnce(`id:${client.id}`, 'MQTT client id held by another login; refused', {
                  clientId: client.id,
                  principal: who.principal,
                })
                return refuse(2, 'client id in use by another login')
              }
              if (claimed) {
                quotaRefused(who.principal, claimed, {
                  clientId: client.id,
                  limit: config.quotas[who.kind].persistentSessions,
                })
                return refuse(5, 'persistent session quota reached')
              }
              const release = () => {
                const after = ledger.release(client.id, connId)
                if (after)
                  state.recordSession(client.id, ledger.session(client.id), after === 'kept')
              }
              // A socket that closed while its password was being checked releases at once.
              if ((client.conn as Duplex).destroyed) {
                release()
                return refuse(3, 'connection closed')
              }
              ;(client.conn as Duplex).once('close', release)
              // Persistent sessions are written (owner, last seen); a clean one only replaces a persistent one's row.
              state.recordSession(
                client.id,
                ledger.session(client.id),
                !client.clean || wasPersistent,
              )
              identities.set(client, who)
              granted.set(client, new Set())
              done(null, true)
            },
            (err: unknown) => {
              log.error('MQTT login check failed', { err: errorText(err) })
              refuse(3, 'server unavailable')
            },
          )
        },
        // Delivery is authorised for the receiving login when it happens, queued messages included.
        authorizeForward: (client: Client, packet: AedesPublishPacket) => {
          if (isSuppressed(packet)) return null
          // A bridge must not get back what it sent: its broker would deliver it locally a second time,
          // and send it back here again (the no-local a Mosquitto bridge asks for with try_private).
          if ((packet as { clientId?: string }).clientId === client.id && bridges.has(client))
            return null
          const who = identities.get(client)
          if (!who || who.rights !== 'device') return packet
          return canReceive(who, packet.topic, (k) => claims.ownerNow(k) === who.deviceId)
            ? packet
            : null
        },
        authorizeSubscribe: (
          client: Client,
          sub: Subscription,
          callback: (error: Error | null, subscription?: Subscription | null) => void,
        ) => {
          const who = identities.get(client)
          const topics = granted.get(client)
          // A null subscription is answered with SUBACK 0x80 (failure), MQTT 3.1.1 §3.9.3.
          const deny = () => {
            counts.denied++
            warnOnce(`sub:${client.id}`, 'MQTT subscribe denied', {
              clientId: client.id,
              topic: sub.topic,
            })
            callback(null, null)
          }
          if (!who || !topics) return deny()
          const verdict = canSubscribe(who, sub.topic)
          if (verdict === false) return deny()
          if (!topics.has(sub.topic) && topics.size >= ledger.subscriptionLimit(who.kind)) {
            ledger.refuse('subscriptions')
            quotaRefused(who.principal, 'subscriptions', {
              clientId: client.id,
              topic: sub.topic,
              limit: ledger.subscriptionLimit(who.kind),
            })
            return callback(null, null)
          }
          const grant = () => {
            topics.add(sub.topic)
            callback(null, sub)
          }
          if (verdict === true) return grant()
          claims.owns(who.deviceId as string, verdict.sensor).then(
            (owns) => (owns ? grant() : deny()),
            (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))),
          )
        },
        // Rights, Home Assistant discovery, relayed-sensor ownership and the retained quota, then ingest
        // (accept(): here, not in the 'publish' event, so that a PUBACK means "stored").
        authorizePublish: (
          client: Client | null,
          packet: PublishPacket,
          callback: (error?: Error | null) => void,
        ) => {
          if (!client) return callback(null)
          const who = identities.get(client)
          // MQTT 3.1.1 has no negative PUBACK: the server closes the connection [MQTT-3.3.5-2].
          const deny = (reason: string) => {
            counts.denied++
            warnOnce(`pub:${client.id}`, 'MQTT publish denied; closing the connection', {
              clientId: client.id,
              topic: packet.topic,
              reason,
            })
            callback(new Error(`not authorized to publish to ${packet.topic}`))
          }
          if (!who) return deny('not logged in')
          // A Mosquitto bridge announces its own state there on connect (notifications, on by default):
          // "1", and "0" as its will. Retained, so it counts toward the quotas like any retained message.
          const bridgeState = packet.topic === `$SYS/broker/connection/${client.id}/state`
          const verdict = bridgeState ? true : canPublish(who, packet.topic)
          if (verdict === false) return deny('outside its rights')
          const payload = Buffer.isBuffer(packet.payload)
            ? packet.payload
            : Buffer.from(packet.payload)
          if (bridgeState && payload.length > 1) return deny('a bridge state is "0" or "1"')
          if (who.rights === 'device' && packet.topic.startsWith('homeassistant/')) {
            const problem = discoveryProblem(who.deviceId as string, payload)
            if (problem) return deny(problem)
          }
          // The persistence learns whose retained message it stores from the packet's client id.
          ;(packet as { clientId?: string }).clientId = client.id
          // Then: a client's cmd/ota goes by OTA (one per device and version), the retained quota, ingest.
          const finish = () => {
            if (packet.retain) {
              const quota = ledger.checkRetained(
                client.id,
                who.principal,
                who.kind,
                packet.topic,
                payload.length,
              )
              if (quota) {
                quotaRefused(who.principal, quota, {
                  clientId: client.id,
                  topic: packet.topic,
                  bytes: payload.length,
                })
                return callback(new Error(`retained message over the ${quota} quota`))
              }
            }
            accept(client, packet, payload, callback)
          }
          const command = opts.vetCommand ? OTA_COMMAND.exec(packet.topic) : null
          const vetted = () => {
            if (!command || !opts.vetCommand) return finish()
            const deviceId = command[1] as string
            opts.vetCommand(deviceId, payload).then(
              (v) => {
                if (!v.deliver) {
                  suppress(packet, v.reason)
                  counts.commandsNotDelivered++
                  infoOnce(`cmd:${deviceId}`, 'cmd/ota acknowledged but not delivered', {
                    deviceId,
                    clientId: client.id,
                    reason: v.reason,
                  })
                }
                finish()
              },
              (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))),
            )
          }
          if (verdict === true || claims.ownsNow(who.deviceId as string, verdict.sensor))
            return vetted()
          relayed(who, verdict.sensor).then(
            (problem) => (problem ? deny(problem) : vetted()),
            (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))),
          )
        },
      })
      aedes = broker
      const onRemote = cluster?.onRemoteMessage
      // Messages other instances received (an acknowledgement for a command this instance sent) arrive
      // through Redis; only the filters asked for, so the telemetry stream is not decoded everywhere.
      const seen = new Set<string>()
      for (const filter of onRemote ? (cluster?.remoteFilters ?? []) : []) {
        await new Promise<void>((resolve) =>
          (
            broker as unknown as {
              mq: {
                on(
                  topic: string,
                  fn: (p: AedesPublishPacket, done: () => void) => void,
                  cb: () => void,
                ): void
              }
            }
          ).mq.on(
            filter,
            (packet: AedesPublishPacket, done: () => void) => {
              // A message matching two filters is handed over once.
              const key = `${packet.brokerId}:${packet.brokerCounter}`
              if (seen.has(key)) return done()
              if (seen.size > 1000) seen.clear()
              seen.add(key)
              if (packet.brokerId !== broker.id && !packet.topic.startsWith('$')) {
                try {
                  onRemote?.({
                    topic: packet.topic,
                    payload: Buffer.isBuffer(packet.payload)
                      ? packet.payload
                      : Buffer.from(packet.payload),
                    clientId: (packet as { clientId?: string }).clientId ?? '',
                    qos: packet.qos,
                    messageId: undefined,
                    dup: false,
                    retain: packet.retain,
                    receivedAt: new Date(),
                  })
                } catch (err) {
                  log.error('remote message handler failed', {
                    topic: packet.topic,
                    err: errorText(err),
                  })
                }
              }
              done()
            },
            resolve,
          ),
        )
      }
      broker.on('client', (client: Client) => {
        counts.connections++
        connectedAt.set(client, now())
        cluster?.onClientConnect?.(client.id)
      })
      broker.on('unsubscribe', (topics: string[], client: Client) => {
        const set = granted.get(client)
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

      /** Hands a connection's MQTT stream to aedes, remembering its address, listener policy and verified certificate CN. */
      const attach = (
        stream: Duplex,
        socket: Socket,
        anonymous: boolean,
        req?: IncomingMessage,
      ) => {
        addresses.set(stream, socket.remoteAddress ?? 'unknown')
        anonymousOn.set(stream, anonymous)
        const cn = (socket as TLSSocket).authorized ? peerName(socket as TLSSocket) : undefined
        if (cn) certNames.set(stream, cn)
        coalesceWrites(socket)
        broker.handle(stream, req as never)
      }
      /** MQTT over WebSocket on an HTTP(S) server; plain HTTP requests get 426 Upgrade Required. */
      const serveWebSocket = (
        server: HttpServer | HttpsServer,
        anonymous: boolean,
      ): WebSocketServer => {
        server.on('request', (_req, res) =>
          res
            .writeHead(426, { 'content-type': 'text/plain' })
            .end(`MQTT over WebSocket: connect to ${config.ws.path}\n`),
        )
        // Counted from the TCP accept, before any TLS handshake spends CPU.
        server.on('connection', (s: Socket) => {
          s.setNoDelay(true)
          admit(s)
        })
        // A browser sends its page's Origin: only allow-listed pages may open MQTT here, so a web page a
        // user happens to open cannot talk to the broker behind their back. Devices and scripts send none.
        const allowed = new Set(
          config.ws.allowedOrigins.map((o) => o.toLowerCase().replace(/\/+$/, '')),
        )
        const verifyClient = (
          info: { origin: string | undefined; req: IncomingMessage },
          done: (ok: boolean, code?: number, message?: string) => void,
        ) => {
          const origin = info.origin ?? info.req.headers.origin
          if (origin === undefined || allowed.has(origin.toLowerCase())) return done(true)
          counts.refusedOrigins++
          warnOnce(
            `origin:${origin}`,
            'MQTT over WebSocket refused for a browser origin not in mqtt.ws.allowedOrigins',
            { origin: origin.slice(0, 200) },
          )
          done(false, 403, 'origin not allowed')
        }
        // ws enforces the packet limit itself (close code 1009) for WebSocket frames.
        const w = new WebSocketServer({
          server,
          path: config.ws.path,
          maxPayload: config.maxPacketBytes,
          verifyClient,
        })
        w.on('connection', (ws, req) => {
          const wsStream = createWebSocketStream(ws)
          wsStream.on('error', (err) => log.debug('websocket error', { err: err.message }))
          // ws already enforces the size limit; the guard is here so reading can be held back too.
          attach(guardStream(wsStream, config.maxPacketBytes), req.socket, anonymous, req)
        })
        return w
      }

      // noDelay: without it Nagle's algorithm holds each PUBACK ~40 ms waiting for more bytes.
      tcp = createServer({ noDelay: true }, (socket) => {
        if (admit(socket))
          attach(guardStream(socket, config.maxPacketBytes), socket, config.allowAnonymous)
      })
      await listen(tcp, config.host, config.port)

      if (config.ws.enabled) {
        http = createHttpServer()
        wss = serveWebSocket(http, config.ws.allowAnonymous ?? config.allowAnonymous)
        await listen(http, config.ws.host, config.ws.port)
      }

      if (config.tls.enabled) {
        const secure = tlsOptions()
        const tlsAnonymous = config.tls.allowAnonymous ?? config.allowAnonymous
        tlsServer = createTlsServer({ ...secure, noDelay: true }, (socket) =>
          attach(guardStream(socket, config.maxPacketBytes), socket, tlsAnonymous),
        )
        // Counted from the TCP accept, before the TLS handshake spends CPU.
        tlsServer.on('connection', (s: Socket) => admit(s))
        tlsServer.on('tlsClientError', (err) =>
          log.debug('TLS handshake failed', { err: err.message }),
        )
        await listen(tlsServer, config.tls.host, config.tls.port)
        if (config.ws.enabled) {
          https = createHttpsServer(secure)
          wssTls = serveWebSocket(https, tlsAnonymous)
          await listen(https, config.tls.host, config.tls.wsPort)
        }
      }
      for (const w of openSettings(config)) log.warn(w.msg, w.fields)
      expiryTimer = setInterval(
        () => {
          expireSessions().catch((err: unknown) =>
            log.warn('session expiry failed', { err: errorText(err) }),
          )
        },
        Math.min(EXPIRY_CHECK_MS, config.sessionExpiryHours * 3_600_000),
      )
      expiryTimer.unref()
    },
    /** Expires persistent sessions now (the hourly check; tests call it after moving the clock). */
    expireSessions,
    /**
     * Re-reads the certificate files (SIGHUP): new connections get the new certificate, open ones
     * keep theirs. A bad file leaves the old certificate in place and throws.
     */
    reloadTls(): void {
      if (!tlsServer) return
      const secure = tlsOptions()
      tlsServer.setSecureContext(secure)
      https?.setSecureContext(secure)
      log.info('TLS certificates reloaded', { certFile: config.tls.certFile })
    },
    /** Publishes as the broker itself (OTA commands, retained config). Resolves once queued for delivery. */
    publish(
      topic: string,
      payload: string | Buffer,
      options: { qos?: 0 | 1 | 2; retain?: boolean } = {},
    ): Promise<void> {
      const broker = aedes
      if (!broker) return Promise.reject(new Error('broker not started'))
      return new Promise((resolve, reject) => {
        broker.publish(
          {
            cmd: 'publish',
            topic,
            payload: Buffer.from(payload),
            qos: options.qos ?? 0,
            retain: options.retain ?? false,
            dup: false,
          },
          (err?: Error | null) => (err ? reject(err) : resolve()),
        )
      })
    },
    /** Bound addresses (port 0 in tests resolves to the real port here). */
    addresses(): { mqtt?: AddressInfo; ws?: AddressInfo; mqtts?: AddressInfo; wss?: AddressInfo } {
      return {
        mqtt: (tcp?.address() as AddressInfo | null) ?? undefined,
        ws: (http?.address() as AddressInfo | null) ?? undefined,
        mqtts: (tlsServer?.address() as AddressInfo | null) ?? undefined,
        wss: (https?.address() as AddressInfo | null) ?? undefined,
      }
    },
    health,
    /** The broker's counters and state as Prometheus metrics. */
    metrics(): Metric[] {
      const h = health()
      return [
        gauge('paku_mqtt_clients', 'Connected MQTT clients.', h.clients),
        counter('paku_mqtt_connections_total', 'MQTT connections accepted.', h.connections),
        counter(
          'paku_mqtt_messages_in_total',
          'PUBLISH packets accepted from clients.',
          h.messagesIn,
        ),
        counter(
          'paku_mqtt_auth_failures_total',
          'Refused MQTT logins (bad credentials, anonymous, blocked after failures).',
          h.authFailures,
        ),
        counter(
          'paku_mqtt_denied_total',
          'PUBLISH and SUBSCRIBE refused by topic permissions.',
          h.denied,
        ),
        counter(
          'paku_mqtt_refused_client_ids_total',
          'CONNECTs refused for their client id (not the device’s own, or held by another login).',
          h.refusedClientIds,
        ),
        counter(
          'paku_mqtt_refused_origins_total',
          'WebSocket upgrades refused for their browser Origin.',
          h.refusedOrigins,
        ),
        counter(
          'paku_mqtt_refused_connections_total',
          'Connections refused over mqtt.maxConnectionsPerAddress.',
          h.refusedConnections,
        ),
        counter(
          'paku_mqtt_expired_sessions_total',
          'Persistent sessions deleted after mqtt.sessionExpiryHours.',
          h.expiredSessions,
        ),
        counter(
          'paku_mqtt_commands_not_delivered_total',
          'cmd/ota messages from clients acknowledged but not delivered (a duplicate for the device and version, or a device the rollout does not target).',
          h.commandsNotDelivered,
        ),
        {
          name: 'paku_mqtt_quota_refusals_total',
          help: 'Refusals per broker quota (retained topics and bytes, persistent sessions, subscriptions, queued messages, relayed sensors, total state).',
          type: 'counter',
          samples: QUOTA_NAMES.map((q) => ({ labels: { quota: q }, value: h.quotaRefusals[q] })),
        },
        gauge(
          'paku_mqtt_persistent_sessions',
          'Persistent MQTT sessions kept.',
          h.state.persistentSessions,
        ),
        gauge(
          'paku_mqtt_retained_bytes',
          'Bytes of retained messages held.',
          h.state.retainedBytes,
        ),
        gauge(
          'paku_mqtt_queued_bytes',
          'Bytes of QoS 1/2 messages queued for sessions.',
          h.state.queuedBytes,
        ),
      ]
    },
    /** Messages queued for a session (tests). */
    queueOf: (clientId: string) => persistence?.queueOf(clientId) ?? { messages: 0, bytes: 0 },
    /** Retained usage of a principal (tests). */
    retainedOf: (principal: string) => ledger.retainedOf(principal),
    async stop(): Promise<void> {
      clearInterval(expiryTimer)
      expiryTimer = undefined
      const broker = aedes
      aedes = undefined
      const closing: Array<Promise<void>> = []
      // Stop accepting first, then close the clients: aedes does not close the listeners it was handed.
      for (const server of [tcp, http, tlsServer, https]) {
        if (server?.listening) closing.push(new Promise((r) => server.close(() => r())))
      }
      wss?.close()
      wssTls?.close()
      if (broker) await new Promise<void>((r) => broker.close(() => r()))
      for (const s of sockets) s.destroy()
      await Promise.all(closing)
      // aedes does not destroy its persistence; ours writes its last changes here, before the pool closes.
      const p = persistence
      persistence = undefined
      await p?.destroy()
      tcp = http = undefined
      tlsServer = undefined
      https = undefined
      wss = wssTls = undefined
    },
  }
}

export type Broker = ReturnType<typeof createBroker>
