import { readFileSync } from 'node:fs'
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server as HttpServer,
} from 'node:http'
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https'
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net'
import {
  createServer as createTlsServer,
  type SecureContextOptions,
  type Server as TlsServer,
} from 'node:tls'
import { createWebSocketStream, WebSocketServer } from 'ws'
import type { Config } from '../config/index.js'
import type { Logger } from '../log/index.js'
import { addressKey } from '../util/address.js'
import { coalesceWrites } from './coalesce-writes.js'
import type { Notices } from './notices.js'
import { guardStream } from './packet-guard.js'
import type { Connection } from './principals.js'
import type { Counts } from './stats.js'

type MqttConfig = Config['mqtt']

export type ListenersOptions = {
  config: MqttConfig
  log: Logger
  counts: Counts
  notices: Notices
}

/** The certificate, key and client-certificate policy of the TLS listeners; throws naming an unreadable file. */
function tlsOptions(config: MqttConfig): SecureContextOptions & {
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

function listen(server: Server, at: { host: string; port: number }): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(at.port, at.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
}

/**
 * Connections per address: admits a socket unless its address (an IPv6 /64 counts as one) already
 * holds maxConnectionsPerAddress, and tracks it until it closes.
 */
function connectionLimit({ config, counts, notices }: ListenersOptions) {
  const perAddress = new Map<string, number>()
  const sockets = new Set<Socket>()
  return {
    /** Returns false (and destroys the socket) when refused. */
    admit(socket: Socket): boolean {
      const ip = addressKey(socket.remoteAddress ?? 'unknown')
      const open = perAddress.get(ip) ?? 0
      if (open >= config.maxConnectionsPerAddress) {
        counts.refusedConnections++
        notices.warnOnce(`conn:${ip}`, 'too many connections from one address; refusing', {
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
    },
    /** Destroys every socket still open. */
    destroyAll(): void {
      for (const s of sockets) s.destroy()
    },
  }
}

/**
 * A browser sends its page's Origin: only allow-listed pages may open MQTT over WebSocket, so a web
 * page a user happens to open cannot talk to the broker behind their back. Devices and scripts send none.
 */
function originCheck({ config, counts, notices }: ListenersOptions) {
  const allowed = new Set(config.ws.allowedOrigins.map((o) => o.toLowerCase().replace(/\/+$/, '')))
  return (
    info: { origin: string | undefined; req: IncomingMessage },
    done: (ok: boolean, code?: number, message?: string) => void,
  ) => {
    const origin = info.origin ?? info.req.headers.origin
    if (origin === undefined || allowed.has(origin.toLowerCase())) return done(true)
    counts.refusedOrigins++
    notices.warnOnce(
      `origin:${origin}`,
      'MQTT over WebSocket refused for a browser origin not in mqtt.ws.allowedOrigins',
      { origin: origin.slice(0, 200) },
    )
    done(false, 403, 'origin not allowed')
  }
}

/**
 * The broker's listeners: MQTT on TCP, over WebSocket, and both over TLS when configured, with the
 * connections-per-address limit and the WebSocket origin check.
 */
export function createListeners(opts: ListenersOptions) {
  const { config, log } = opts
  const limit = connectionLimit(opts)
  const verifyClient = originCheck(opts)
  let tcp: Server | undefined
  let http: HttpServer | undefined
  let wss: WebSocketServer | undefined
  let tlsServer: TlsServer | undefined
  let https: HttpsServer | undefined
  let wssTls: WebSocketServer | undefined
  /** Where start() sends each connection's MQTT stream. */
  let handle: ((c: Connection) => void) | undefined

  const attach = (c: Connection) => {
    coalesceWrites(c.socket)
    handle?.(c)
  }

  /** MQTT over WebSocket on an HTTP(S) server; plain HTTP requests get 426 Upgrade Required. */
  const serveWebSocket = (server: HttpServer | HttpsServer, anonymous: boolean) => {
    server.on('request', (_req, res) =>
      res
        .writeHead(426, { 'content-type': 'text/plain' })
        .end(`MQTT over WebSocket: connect to ${config.ws.path}\n`),
    )
    // Counted from the TCP accept, before any TLS handshake spends CPU.
    server.on('connection', (s: Socket) => {
      s.setNoDelay(true)
      limit.admit(s)
    })
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
      const stream = guardStream(wsStream, config.maxPacketBytes)
      attach({ stream, socket: req.socket, anonymous, req })
    })
    return w
  }

  /** MQTT over TLS, and over WebSocket on TLS when WebSocket is enabled. */
  const startTls = async () => {
    const secure = tlsOptions(config)
    const anonymous = config.tls.allowAnonymous ?? config.allowAnonymous
    tlsServer = createTlsServer({ ...secure, noDelay: true }, (socket) =>
      attach({ stream: guardStream(socket, config.maxPacketBytes), socket, anonymous }),
    )
    // Counted from the TCP accept, before the TLS handshake spends CPU.
    tlsServer.on('connection', (s: Socket) => limit.admit(s))
    tlsServer.on('tlsClientError', (err) => log.debug('TLS handshake failed', { err: err.message }))
    await listen(tlsServer, { host: config.tls.host, port: config.tls.port })
    if (config.ws.enabled) {
      https = createHttpsServer(secure)
      wssTls = serveWebSocket(https, anonymous)
      await listen(https, { host: config.tls.host, port: config.tls.wsPort })
    }
  }

  return {
    /** Listens on every configured port; each connection's MQTT stream goes to `onConnection`. */
    async start(onConnection: (c: Connection) => void): Promise<void> {
      handle = onConnection
      // noDelay: without it Nagle's algorithm holds each PUBACK ~40 ms waiting for more bytes.
      tcp = createServer({ noDelay: true }, (socket) => {
        if (!limit.admit(socket)) return
        const stream = guardStream(socket, config.maxPacketBytes)
        attach({ stream, socket, anonymous: config.allowAnonymous })
      })
      await listen(tcp, { host: config.host, port: config.port })
      if (config.ws.enabled) {
        http = createHttpServer()
        wss = serveWebSocket(http, config.ws.allowAnonymous ?? config.allowAnonymous)
        await listen(http, { host: config.ws.host, port: config.ws.port })
      }
      if (config.tls.enabled) await startTls()
    },

    /** Whether the MQTT TCP listener is listening. */
    listening: (): boolean => tcp?.listening === true,

    /**
     * Stops accepting, lets `closeClients` end the MQTT sessions, then destroys the sockets left and
     * waits for the servers to close.
     */
    async close(closeClients: () => Promise<void>): Promise<void> {
      const closing: Array<Promise<void>> = []
      for (const server of [tcp, http, tlsServer, https]) {
        if (server?.listening) closing.push(new Promise((r) => server.close(() => r())))
      }
      wss?.close()
      wssTls?.close()
      await closeClients()
      limit.destroyAll()
      await Promise.all(closing)
      tcp = http = undefined
      tlsServer = undefined
      https = undefined
      wss = wssTls = undefined
    },

    /**
     * Re-reads the certificate files (SIGHUP): new connections get the new certificate, open ones
     * keep theirs. A bad file leaves the old certificate in place and throws.
     */
    reloadTls(): void {
      if (!tlsServer) return
      const secure = tlsOptions(config)
      tlsServer.setSecureContext(secure)
      https?.setSecureContext(secure)
      log.info('TLS certificates reloaded', { certFile: config.tls.certFile })
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
  }
}

export type Listeners = ReturnType<typeof createListeners>
