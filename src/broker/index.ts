import { readFileSync } from 'node:fs'
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import { createServer as createTlsServer, type SecureContextOptions, type Server as TlsServer, type TLSSocket } from 'node:tls'
import { createHash, timingSafeEqual } from 'node:crypto'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { Aedes, type AedesPublishPacket, type Client, type PublishPacket, type Subscription } from 'aedes'
import { createWebSocketStream, WebSocketServer } from 'ws'
import type { Kysely } from 'kysely'
import type { Config } from '../config/index.js'
import type { DB } from '../db/index.js'
import { errorText, type Logger } from '../log/index.js'
import { canPublish, canSubscribe, type Identity } from './acl.js'
import { checkCredential } from './credentials.js'
import { createFailureLimiter } from '../util/failure-limiter.js'
import { coalesceWrites } from './coalesce-writes.js'
import { guardStream, holdReading } from './packet-guard.js'
import { readPacketsWithoutSlicing } from './packet-reads.js'
import { credentialRoutes } from './routes.js'
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

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest()

export type BrokerOptions = {
  config: Config['mqtt']
  log: Logger
  /** Called for every PUBLISH a client sends (wills included); a returned promise delays the acknowledgement until it resolves. */
  onMessage: (msg: BrokerMessage) => Promise<void> | undefined
  /** Keeps retained messages, sessions, queued messages and wills in PostgreSQL; without it, in memory. */
  db?: () => Kysely<DB>
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
 * and persistent sessions come from aedes; this adds listeners, abuse limits and the ingest hook.
 */
export function createBroker(opts: BrokerOptions) {
  const { config, log } = opts
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
  /** The remote address per connection stream, for the failed-login limiter. */
  const addresses = new WeakMap<object, string>()
  const perAddress = new Map<string, number>()
  const limiter = createFailureLimiter({ maxFailures: config.maxAuthFailuresPerMinute })

  /**
   * Admits a socket unless its address already holds maxConnectionsPerAddress; tracks it until it
   * closes. Returns false (and destroys it) when refused.
   */
  const admit = (socket: Socket): boolean => {
    const ip = socket.remoteAddress ?? 'unknown'
    const open = perAddress.get(ip) ?? 0
    if (open >= config.maxConnectionsPerAddress) {
      counts.refusedConnections++
      warnOnce(`conn:${ip}`, 'too many connections from one address; refusing', { address: ip, limit: config.maxConnectionsPerAddress })
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
  const counts = { connections: 0, messagesIn: 0, clientErrors: 0, authFailures: 0, denied: 0, refusedConnections: 0 }
  const identities = new WeakMap<Client, Identity>()
  const lastAuthLog = new Map<string, number>()
  const sc = config.sharedCredential
  const shared = sc.username && sc.password ? { user: digest(sc.username), pass: digest(sc.password) } : undefined

  /** Logs an auth problem at most once a minute per key (a misconfigured device retries every few seconds). */
  const warnOnce = (key: string, msg: string, fields: Record<string, unknown>) => {
    const now = Date.now()
    if ((lastAuthLog.get(key) ?? 0) + 60_000 > now) return
    if (lastAuthLog.size > 10_000) lastAuthLog.clear()
    lastAuthLog.set(key, now)
    log.warn(msg, fields)
  }

  async function identify(username: string | undefined, password: Buffer | undefined, certName: string | undefined): Promise<Identity | undefined> {
    // A client certificate signed by mqtt.tls.caFile identifies a device by its CN (no password needed).
    if ((username === undefined || username === '' || username === certName) && certName) return { username: certName, role: 'device' }
    if (username === undefined || username === '') return config.allowAnonymous ? { username: null, role: 'anonymous' } : undefined
    const pass = password?.toString('utf8') ?? ''
    if (shared && timingSafeEqual(digest(username), shared.user) && timingSafeEqual(digest(pass), shared.pass)) return { username, role: 'bridge' }
    if (!opts.db) return undefined
    const role = await checkCredential(opts.db(), username, pass)
    return role ? { username, role } : undefined
  }

  function tlsOptions(): SecureContextOptions & { requestCert: boolean; rejectUnauthorized: boolean } {
    const read = (key: string, file: string) => {
      try {
        return readFileSync(file)
      } catch (err) {
        throw new Error(`mqtt.tls.${key}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
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

  const listen = (server: Server | HttpServer | TlsServer | HttpsServer, host: string, port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => {
        server.off('error', reject)
        resolve()
      })
    })

  return {
    name: 'broker',
    /** Admin routes for MQTT credentials (only with a database). */
    routes: opts.db ? credentialRoutes(opts.db) : undefined,
    async start(): Promise<void> {
      readPacketsWithoutSlicing()
      const cluster = opts.cluster
      persistence = opts.db ? new PgPersistence({ db: opts.db, log, ...(cluster ? { replicate: { instanceId: cluster.instanceId } } : {}) }) : undefined
      const broker = await Aedes.createBroker({
        // aedes' broker id marks the messages and wills of this instance (a dead broker's wills are published by the others).
        ...(cluster ? { id: cluster.instanceId, mq: cluster.mq() as never } : {}),
        ...(persistence ? { persistence: persistence as never } : {}),
        connectTimeout: config.connectTimeoutMs,
        maxClientsIdLength: config.maxClientIdLength,
        maxTopicLevels: config.maxTopicLevels,
        maxInflightInbound: config.maxInflightInbound,
        authenticate: (client: Client, username: string | undefined, password: Buffer | undefined, done: (error: (Error & { returnCode: number }) | null, success: boolean | null) => void) => {
          const ip = addresses.get(client.conn as object) ?? 'unknown'
          const wait = limiter.blockedFor(ip)
          if (wait > 0) {
            counts.authFailures++
            warnOnce(`blocked:${ip}`, 'MQTT logins from this address refused after repeated failures', { address: ip, retryInSeconds: Math.ceil(wait / 1000) })
            return done(Object.assign(new Error('too many failed logins'), { returnCode: 5 }), null)
          }
          identify(username, password, certNames.get(client.conn as object)).then(
            (who) => {
              if (who) {
                if (username) limiter.succeed(ip)
                identities.set(client, who)
                return done(null, true)
              }
              limiter.fail(ip)
              counts.authFailures++
              warnOnce(`auth:${username ?? ''}`, 'MQTT login refused', { clientId: client.id, username: username ?? null, reason: username ? 'bad username or password' : 'anonymous not allowed' })
              // CONNACK 4 (bad user name or password) or 5 (not authorized) — MQTT 3.1.1 §3.2.2.3.
              done(Object.assign(new Error('not authorized'), { returnCode: username ? 4 : 5 }), null)
            },
            (err: unknown) => {
              log.error('MQTT login check failed', { err: errorText(err) })
              done(Object.assign(new Error('server unavailable'), { returnCode: 3 }), null)
            },
          )
        },
        authorizeSubscribe: (client: Client, sub: Subscription, callback: (error: Error | null, subscription?: Subscription | null) => void) => {
          const who = identities.get(client)
          if (who && canSubscribe(who, sub.topic)) return callback(null, sub)
          counts.denied++
          warnOnce(`sub:${client.id}`, 'MQTT subscribe denied', { clientId: client.id, topic: sub.topic })
          // A null subscription is answered with SUBACK 0x80 (failure), MQTT 3.1.1 §3.9.3.
          callback(null, null)
        },
        // Ingest happens here, not in the 'publish' event: aedes sends the QoS 1 PUBACK (and the QoS 2
        // PUBREC) only after this callback, so waiting for the row to be durable makes the acknowledgement
        // mean "stored" (design A4.1). Wills pass through here too. Packets of one socket read are
        // authorised concurrently, so a pipelining client (a bridge with 20 in flight) shares one flush.
        authorizePublish: (client: Client | null, packet: PublishPacket, callback: (error?: Error | null) => void) => {
          if (!client) return callback(null)
          const who = identities.get(client)
          if (!who || !canPublish(who, packet.topic)) {
            counts.denied++
            warnOnce(`pub:${client.id}`, 'MQTT publish denied; closing the connection', { clientId: client.id, topic: packet.topic })
            // MQTT 3.1.1 has no negative PUBACK: the server closes the connection [MQTT-3.3.5-2].
            return callback(new Error(`not authorized to publish to ${packet.topic}`))
          }
          counts.messagesIn++
          let durable: Promise<void> | undefined
          try {
            durable = opts.onMessage({
              topic: packet.topic,
              payload: Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload),
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
              log.error('message not stored; not acknowledging it', { topic: packet.topic, err: errorText(err) })
              callback(err instanceof Error ? err : new Error(String(err)))
            },
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
          (broker as unknown as { mq: { on(topic: string, fn: (p: AedesPublishPacket, done: () => void) => void, cb: () => void): void } }).mq.on(
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
                    payload: Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload),
                    clientId: (packet as { clientId?: string }).clientId ?? '',
                    qos: packet.qos,
                    messageId: undefined,
                    dup: false,
                    retain: packet.retain,
                    receivedAt: new Date(),
                  })
                } catch (err) {
                  log.error('remote message handler failed', { topic: packet.topic, err: errorText(err) })
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
        cluster?.onClientConnect?.(client.id)
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

      /** Hands a connection's MQTT stream to aedes, remembering its address and verified certificate CN. */
      const attach = (stream: Duplex, socket: Socket, req?: IncomingMessage) => {
        addresses.set(stream, socket.remoteAddress ?? 'unknown')
        const cn = (socket as TLSSocket).authorized ? peerName(socket as TLSSocket) : undefined
        if (cn) certNames.set(stream, cn)
        coalesceWrites(socket)
        broker.handle(stream, req as never)
      }
      /** MQTT over WebSocket on an HTTP(S) server; plain HTTP requests get 426 Upgrade Required. */
      const serveWebSocket = (server: HttpServer | HttpsServer): WebSocketServer => {
        server.on('request', (_req, res) => res.writeHead(426, { 'content-type': 'text/plain' }).end(`MQTT over WebSocket: connect to ${config.ws.path}\n`))
        // Counted from the TCP accept, before any TLS handshake spends CPU.
        server.on('connection', (s: Socket) => {
          s.setNoDelay(true)
          admit(s)
        })
        // ws enforces the packet limit itself (close code 1009) for WebSocket frames.
        const w = new WebSocketServer({ server, path: config.ws.path, maxPayload: config.maxPacketBytes })
        w.on('connection', (ws, req) => {
          const wsStream = createWebSocketStream(ws)
          wsStream.on('error', (err) => log.debug('websocket error', { err: err.message }))
          // ws already enforces the size limit; the guard is here so reading can be held back too.
          attach(guardStream(wsStream, config.maxPacketBytes), req.socket, req)
        })
        return w
      }

      // noDelay: without it Nagle's algorithm holds each PUBACK ~40 ms waiting for more bytes.
      tcp = createServer({ noDelay: true }, (socket) => {
        if (admit(socket)) attach(guardStream(socket, config.maxPacketBytes), socket)
      })
      await listen(tcp, config.host, config.port)

      if (config.ws.enabled) {
        http = createHttpServer()
        wss = serveWebSocket(http)
        await listen(http, config.ws.host, config.ws.port)
      }

      if (config.tls.enabled) {
        const secure = tlsOptions()
        tlsServer = createTlsServer({ ...secure, noDelay: true }, (socket) => attach(guardStream(socket, config.maxPacketBytes), socket))
        // Counted from the TCP accept, before the TLS handshake spends CPU.
        tlsServer.on('connection', (s: Socket) => admit(s))
        tlsServer.on('tlsClientError', (err) => log.debug('TLS handshake failed', { err: err.message }))
        await listen(tlsServer, config.tls.host, config.tls.port)
        if (config.ws.enabled) {
          https = createHttpsServer(secure)
          wssTls = serveWebSocket(https)
          await listen(https, config.tls.host, config.tls.wsPort)
        }
      }
    },
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
    publish(topic: string, payload: string | Buffer, options: { qos?: 0 | 1 | 2; retain?: boolean } = {}): Promise<void> {
      const broker = aedes
      if (!broker) return Promise.reject(new Error('broker not started'))
      return new Promise((resolve, reject) => {
        broker.publish(
          { cmd: 'publish', topic, payload: Buffer.from(payload), qos: options.qos ?? 0, retain: options.retain ?? false, dup: false },
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
    health(): { ok: boolean; clients: number; pendingStateChanges: number } & typeof counts {
      return {
        ok: aedes !== undefined && tcp?.listening === true,
        clients: aedes?.connectedClients ?? 0,
        ...counts,
        pendingStateChanges: persistence?.pendingChanges ?? 0,
      }
    },
    async stop(): Promise<void> {
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
