import { timingSafeEqual, createHash } from 'node:crypto'
import type { Config } from '../config/index.js'
import { validDeviceId, type Rights } from './acl.js'
import type { QuotaKind } from './ledger.js'
import type { Role } from './credentials.js'

/**
 * Who a connection is: its rights, and the principal that owns its sessions, retained messages and
 * quotas (`device:ESP32-…`, `bridge:ha-bridge`, `service:ci`, `shared:edge`, `anonymous`).
 */
export type Identity = Rights & { principal: string; kind: QuotaKind; username: string | null }

/** CONNACK return codes of MQTT 3.1.1 §3.2.2.3 that a login can get. */
export type Refusal = { code: 2 | 4 | 5; reason: string }

export type Login = {
  username: string | undefined
  password: Buffer | undefined
  certName: string | undefined
  clientId: string
  /** Whether the listener the client came in on takes anonymous clients. */
  anonymous: boolean
}

export type IdentityOptions = {
  config: Pick<Config['mqtt'], 'anonymousRole' | 'sharedCredential'>
  /** The role of a stored credential, or undefined (checked with scrypt either way). */
  checkCredential: (username: string, password: string) => Promise<Role | undefined>
  /** Whether an id has a credential of its own (then neither the shared credential nor anonymous may use it as a device). */
  hasCredential: (username: string) => Promise<boolean>
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest()

/**
 * Turns a CONNECT into an identity, or the CONNACK refusal. A device logs in with its own id as client
 * id (CONNACK 2 otherwise): one device's credential cannot take another's client id. With the shared
 * credential in `device` role (and anonymous clients in `device` role) the client id names the device,
 * like Mosquitto's `%c` ACL patterns, except for ids that have a credential of their own.
 */
export function createIdentify(opts: IdentityOptions) {
  const { config } = opts
  const sc = config.sharedCredential
  const shared =
    sc.username && sc.password
      ? { user: digest(sc.username), pass: digest(sc.password) }
      : undefined

  /** The client id as a device id, unless it is not one or belongs to a device with its own credential. */
  async function clientAsDevice(clientId: string): Promise<Refusal | undefined> {
    if (!validDeviceId(clientId) || clientId.startsWith('aedes_'))
      return { code: 2, reason: 'the client id must be the device id' }
    if (await opts.hasCredential(clientId))
      return { code: 2, reason: `${clientId} has its own credential` }
    return undefined
  }

  return async function identify(l: Login): Promise<{ who: Identity } | Refusal> {
    // A client certificate signed by mqtt.tls.caFile identifies a device by its CN (no password needed).
    if (
      (l.username === undefined || l.username === '' || l.username === l.certName) &&
      l.certName
    ) {
      if (l.clientId !== l.certName)
        return { code: 2, reason: 'the client id must be the certificate CN' }
      return {
        who: {
          rights: 'device',
          deviceId: l.certName,
          principal: `device:${l.certName}`,
          kind: 'device',
          username: l.certName,
        },
      }
    }
    if (l.username === undefined || l.username === '') {
      if (!l.anonymous) return { code: 5, reason: 'anonymous not allowed' }
      if (config.anonymousRole === 'device') {
        const refused = await clientAsDevice(l.clientId)
        if (refused) return refused
        return {
          who: {
            rights: 'device',
            deviceId: l.clientId,
            principal: `device:${l.clientId}`,
            kind: 'anonymous',
            username: null,
          },
        }
      }
      return {
        who: {
          rights: config.anonymousRole,
          deviceId: null,
          principal: 'anonymous',
          kind: 'anonymous',
          username: null,
        },
      }
    }
    const username = l.username
    const pass = l.password?.toString('utf8') ?? ''
    if (
      shared &&
      timingSafeEqual(digest(username), shared.user) &&
      timingSafeEqual(digest(pass), shared.pass)
    ) {
      if (sc.role === 'full')
        return {
          who: {
            rights: 'full',
            deviceId: null,
            principal: `shared:${username}`,
            kind: 'bridge',
            username,
          },
        }
      const refused = await clientAsDevice(l.clientId)
      if (refused) return refused
      return {
        who: {
          rights: 'device',
          deviceId: l.clientId,
          principal: `device:${l.clientId}`,
          kind: 'device',
          username,
        },
      }
    }
    const role = await opts.checkCredential(username, pass)
    if (!role) return { code: 4, reason: 'bad username or password' }
    if (role === 'device') {
      if (l.clientId !== username)
        return { code: 2, reason: 'a device must use its own id as client id' }
      return {
        who: {
          rights: 'device',
          deviceId: username,
          principal: `device:${username}`,
          kind: 'device',
          username,
        },
      }
    }
    return {
      who: {
        rights: 'full',
        deviceId: null,
        principal: `${role}:${username}`,
        kind: role,
        username,
      },
    }
  }
}
