import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Duplex } from 'node:stream'
import type { Client } from 'aedes'
import type { LiveClient } from './clients.js'
import type { Identity } from './identity.js'

/** A connection a listener hands to the broker: its MQTT stream and what the login checks need of it. */
export type Connection = {
  stream: Duplex
  socket: Socket
  /** Whether the listener it came in on takes anonymous clients. */
  anonymous: boolean
  /** The HTTP upgrade request of a WebSocket connection. */
  req?: IncomingMessage
}

/** The CN of a verified client certificate. */
function peerName(socket: TLSSocket): string | undefined {
  const cn = socket.getPeerCertificate()?.subject?.CN
  return typeof cn === 'string' && cn !== '' ? cn : Array.isArray(cn) ? cn[0] : undefined
}

/**
 * What the broker knows of each connection: what its listener said about it (keyed by stream, before
 * aedes makes a client of it) and who it logged in as (keyed by aedes client). Weak maps: a closed
 * connection is forgotten with its client.
 */
export function createPrincipals() {
  /** The verified client certificate's CN per connection stream, for certificate logins. */
  const certNames = new WeakMap<object, string>()
  /** The remote address per connection stream, for the failed-login limiters. */
  const addresses = new WeakMap<object, string>()
  /** Whether the listener a connection stream came in on takes anonymous clients. */
  const anonymousOn = new WeakMap<object, boolean>()
  const identities = new WeakMap<Client, Identity>()
  /** The topics each connection was granted (the subscription quota, and what the persistence may keep). */
  const granted = new WeakMap<Client, Set<string>>()
  /** Connections that said they are a bridge (Mosquitto's try_private: the protocol version's high bit). */
  const bridges = new WeakSet<Client>()
  /** When each connection logged in (for the console's client view). */
  const connectedAt = new WeakMap<Client, number>()

  return {
    identities,
    granted,
    bridges,
    connectedAt,
    /** Remembers a connection's address, listener policy and verified certificate CN. */
    remember(c: Connection): void {
      addresses.set(c.stream, c.socket.remoteAddress ?? 'unknown')
      anonymousOn.set(c.stream, c.anonymous)
      const tls = c.socket as TLSSocket
      const cn = tls.authorized ? peerName(tls) : undefined
      if (cn) certNames.set(c.stream, cn)
    },
    /** What the listener said about a client's connection. */
    connectionOf: (client: Client) => ({
      address: addresses.get(client.conn as object),
      certName: certNames.get(client.conn as object),
      anonymous: anonymousOn.get(client.conn as object) ?? false,
    }),
    /** This instance's connections as the console shows them (clients.ts). */
    live(clients: Client[]): LiveClient[] {
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
    },
  }
}

export type Principals = ReturnType<typeof createPrincipals>
