import type { Duplex } from 'node:stream'
import type { Client, ConnectPacket } from 'aedes'
import type { Config } from '../config/index.js'
import { errorText, type Logger } from '../log/index.js'
import { addressKey } from '../util/address.js'
import { createFailureLimiter } from '../util/failure-limiter.js'
import type { Identity, Login, Refusal } from './identity.js'
import type { Ledger } from './ledger.js'
import type { Notices } from './notices.js'
import type { PgPersistence } from './pg-persistence.js'
import type { Principals } from './principals.js'
import type { Counts } from './stats.js'

export type AuthenticateOptions = {
  config: Config['mqtt']
  log: Logger
  principals: Principals
  ledger: Ledger
  identify: (login: Login) => Promise<{ who: Identity } | Refusal>
  notices: Notices
  counts: Counts
  /** This instance's id among several (docs/scaling.md): connection ids stay unique across them. */
  instanceId: string | undefined
}

/** The failed-login limiter keys of a login: its address, and its address with its username. */
type Limits = { ip: string; pair: string }
type Store = Pick<PgPersistence, 'recordSession'>
type Done = (error: (Error & { returnCode: number }) | null, success: boolean | null) => void

/** Answers a CONNECT with a CONNACK refusal code (MQTT 3.1.1 §3.2.2.3). */
const refuser = (done: Done) => (code: 2 | 3 | 4 | 5, message: string) =>
  done(Object.assign(new Error(message), { returnCode: code }), null)

/** aedes' preConnect hook: remembers the connections that say they are a bridge, and lets all in. */
function markBridges(principals: Principals) {
  return (
    client: Client,
    packet: ConnectPacket,
    callback: (error: Error | null, ok: boolean) => void,
  ) => {
    // mqtt-packet takes the bridge bit off the protocol version and says so here.
    if ((packet as ConnectPacket & { bridgeMode?: boolean }).bridgeMode)
      principals.bridges.add(client)
    callback(null, true)
  }
}

/**
 * The CONNECT side of the broker: failed-login limits, the identity of a login (identity.ts), and the
 * client id and persistent session it claims in the ledger. Returns aedes' connect hooks for one run of
 * the broker, given where that run records sessions.
 */
export function createAuthenticate(opts: AuthenticateOptions) {
  const { config, log, principals, ledger, notices, counts } = opts
  // Failed logins are counted per (address, username) and per address; a success clears only its own
  // pair, so one principal's successes never reset the count of guesses at another's password.
  const pairLimiter = createFailureLimiter({ maxFailures: config.maxAuthFailuresPerMinute })
  const addressLimiter = createFailureLimiter({
    maxFailures: config.maxAuthFailuresPerAddressPerMinute,
  })
  let connections = 0

  /** Counts and logs a refused identity, and the failed login unless it was its client id. */
  function refused(p: {
    client: Client
    username: string | undefined
    refusal: Refusal
    limits: Limits
  }): void {
    const { client, username, refusal: r, limits } = p
    if (r.code === 2) {
      counts.refusedClientIds++
      notices.warnOnce(`id:${client.id}`, 'MQTT client id refused', {
        clientId: client.id,
        username: username ?? null,
        reason: r.reason,
      })
      return
    }
    pairLimiter.fail(limits.pair)
    addressLimiter.fail(limits.ip)
    counts.authFailures++
    notices.warnOnce(`auth:${username ?? ''}`, 'MQTT login refused', {
      clientId: client.id,
      username: username ?? null,
      reason: r.reason,
    })
  }

  /**
   * Claims the client id (and a persistent session) for an identified login, then lets it in. A client
   * id belongs to the principal that holds it (connected, or a kept persistent session).
   */
  function admit(p: { client: Client; who: Identity; state: Store; done: Done }): void {
    const { client, who, state, done } = p
    const refuse = refuser(done)
    // Unique across instances: a release from one must not end a connection another made.
    const connId = `${opts.instanceId ?? ''}:${connections++}`
    const wasPersistent = ledger.session(client.id)?.persistent === true
    const claimed = ledger.claim(client.id, {
      principal: who.principal,
      kind: who.kind,
      persistent: !client.clean,
      connId,
    })
    if (claimed === 'identifier') {
      counts.refusedClientIds++
      notices.warnOnce(`id:${client.id}`, 'MQTT client id held by another login; refused', {
        clientId: client.id,
        principal: who.principal,
      })
      return refuse(2, 'client id in use by another login')
    }
    if (claimed) {
      notices.quotaRefused(who.principal, claimed, {
        clientId: client.id,
        limit: config.quotas[who.kind].persistentSessions,
      })
      return refuse(5, 'persistent session quota reached')
    }
    const release = () => {
      const after = ledger.release(client.id, connId)
      if (after) state.recordSession(client.id, ledger.session(client.id), after === 'kept')
    }
    // A socket that closed while its password was being checked releases at once.
    if ((client.conn as Duplex).destroyed) {
      release()
      return refuse(3, 'connection closed')
    }
    ;(client.conn as Duplex).once('close', release)
    // Persistent sessions are written (owner, last seen); a clean one only replaces a persistent one's row.
    state.recordSession(client.id, ledger.session(client.id), !client.clean || wasPersistent)
    principals.identities.set(client, who)
    principals.granted.set(client, new Set())
    done(null, true)
  }

  /** aedes' connect hooks for a broker run whose sessions `state` records. */
  return function connectHooks(state: Store) {
    return {
      preConnect: markBridges(principals),
      // The signature is aedes' (AuthenticateHandler).
      authenticate(
        client: Client,
        username: string | undefined,
        password: Buffer | undefined,
        done: Done,
      ) {
        const conn = principals.connectionOf(client)
        const ip = addressKey(conn.address ?? 'unknown')
        const limits = { ip, pair: `${ip}\u0000${username ?? ''}` }
        const wait = Math.max(pairLimiter.blockedFor(limits.pair), addressLimiter.blockedFor(ip))
        const refuse = refuser(done)
        if (wait > 0) {
          counts.authFailures++
          notices.warnOnce(
            `blocked:${ip}`,
            'MQTT logins from this address refused after repeated failures',
            { address: ip, retryInSeconds: Math.ceil(wait / 1000) },
          )
          return refuse(5, 'too many failed logins')
        }
        opts
          .identify({
            username,
            password,
            certName: conn.certName,
            clientId: client.id,
            anonymous: conn.anonymous,
          })
          .then(
            (result) => {
              if ('code' in result) {
                refused({ client, username, refusal: result, limits })
                // CONNACK 2 (identifier rejected), 4 (bad user name or password) or 5 (not authorized), MQTT 3.1.1 §3.2.2.3.
                return refuse(result.code, result.reason)
              }
              if (username) pairLimiter.succeed(limits.pair)
              admit({ client, who: result.who, state, done })
            },
            (err: unknown) => {
              log.error('MQTT login check failed', { err: errorText(err) })
              refuse(3, 'server unavailable')
            },
          )
      },
    }
  }
}
