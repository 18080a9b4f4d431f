import type { AedesPublishPacket, Client, PublishPacket, Subscription } from 'aedes'
import type { Logger } from '../log/index.js'
import { canPublish, canReceive, canSubscribe, discoveryProblem, type SensorKey } from './acl.js'
import type { Accepted } from './accept.js'
import type { Identity } from './identity.js'
import type { Ledger } from './ledger.js'
import type { Notices } from './notices.js'
import type { Principals } from './principals.js'
import type { SensorClaims } from './sensors.js'
import type { Counts } from './stats.js'
import { isSuppressed, suppress } from './suppress.js'

export type AuthorizeOptions = {
  log: Logger
  principals: Principals
  ledger: Ledger
  claims: SensorClaims
  notices: Notices
  counts: Counts
  /** Whether a client's cmd/ota goes on to the device (BrokerOptions.vetCommand). */
  vetCommand?: (deviceId: string, payload: Buffer) => Promise<{ deliver: boolean; reason: string }>
  /** Hands an authorised PUBLISH to ingest (accept.ts); its callback acknowledges it. */
  accept: (a: Accepted) => void
}

/** A device's OTA command topic, `{site}/edge/{device}/cmd/ota`. */
const OTA_COMMAND = /^[^/]+\/edge\/([^/]+)\/cmd\/ota$/

const asError = (err: unknown) => (err instanceof Error ? err : new Error(String(err)))

/**
 * What a logged-in client may do: aedes' publish, subscribe and forward hooks, by the login's rights
 * (acl.ts), relayed-sensor ownership (sensors.ts) and its quotas (ledger.ts).
 */
export function createAuthorize(opts: AuthorizeOptions) {
  return {
    authorizeForward: forwardHook(opts),
    authorizeSubscribe: subscribeHook(opts),
    authorizePublish: publishHook(opts),
  }
}

/** Delivery is authorised for the receiving login when it happens, queued messages included. */
function forwardHook({ principals, claims }: AuthorizeOptions) {
  return (client: Client, packet: AedesPublishPacket) => {
    if (isSuppressed(packet)) return null
    // A bridge must not get back what it sent: its broker would deliver it locally a second time,
    // and send it back here again (the no-local a Mosquitto bridge asks for with try_private).
    if ((packet as { clientId?: string }).clientId === client.id && principals.bridges.has(client))
      return null
    const who = principals.identities.get(client)
    if (!who || who.rights !== 'device') return packet
    return canReceive(who, packet.topic, (k) => claims.ownerNow(k) === who.deviceId) ? packet : null
  }
}

/** Rights, relayed-sensor ownership and the subscription quota. */
function subscribeHook({ principals, ledger, claims, notices, counts }: AuthorizeOptions) {
  return (
    client: Client,
    sub: Subscription,
    callback: (error: Error | null, subscription?: Subscription | null) => void,
  ) => {
    const who = principals.identities.get(client)
    const topics = principals.granted.get(client)
    // A null subscription is answered with SUBACK 0x80 (failure), MQTT 3.1.1 §3.9.3.
    const deny = () => {
      counts.denied++
      notices.warnOnce(`sub:${client.id}`, 'MQTT subscribe denied', {
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
      notices.quotaRefused(who.principal, 'subscriptions', {
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
      (err: unknown) => callback(asError(err)),
    )
  }
}

/**
 * Rights, Home Assistant discovery, relayed-sensor ownership, OTA command vetting and the retained
 * quota, then ingest (accept(): here, not in the 'publish' event, so that a PUBACK means "stored").
 */
function publishHook(opts: AuthorizeOptions) {
  const { log, principals, ledger, claims, notices, counts, vetCommand, accept } = opts

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
      notices.quotaRefused(who.principal, 'relayedSensors', { sensor: sensor.sensor, limit })
      return `claimed ${limit} relayed sensors already`
    }
    return `${sensor.sensor} is relayed by another gateway`
  }

  return (
    client: Client | null,
    packet: PublishPacket,
    callback: (error?: Error | null) => void,
  ) => {
    if (!client) return callback(null)
    const who = principals.identities.get(client)
    // MQTT 3.1.1 has no negative PUBACK: the server closes the connection [MQTT-3.3.5-2].
    const deny = (reason: string) => {
      counts.denied++
      notices.warnOnce(`pub:${client.id}`, 'MQTT publish denied; closing the connection', {
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
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload)
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
        const quota = ledger.checkRetained({
          clientId: client.id,
          principal: who.principal,
          kind: who.kind,
          topic: packet.topic,
          bytes: payload.length,
        })
        if (quota) {
          notices.quotaRefused(who.principal, quota, {
            clientId: client.id,
            topic: packet.topic,
            bytes: payload.length,
          })
          return callback(new Error(`retained message over the ${quota} quota`))
        }
      }
      accept({ client, packet, payload, callback })
    }
    const command = vetCommand ? OTA_COMMAND.exec(packet.topic) : null
    const vetted = () => {
      if (!command || !vetCommand) return finish()
      const deviceId = command[1] as string
      vetCommand(deviceId, payload).then(
        (v) => {
          if (!v.deliver) {
            suppress(packet, v.reason)
            counts.commandsNotDelivered++
            notices.infoOnce(`cmd:${deviceId}`, 'cmd/ota acknowledged but not delivered', {
              deviceId,
              clientId: client.id,
              reason: v.reason,
            })
          }
          finish()
        },
        (err: unknown) => callback(asError(err)),
      )
    }
    if (verdict === true || claims.ownsNow(who.deviceId as string, verdict.sensor)) return vetted()
    relayed(who, verdict.sensor).then(
      (problem) => (problem ? deny(problem) : vetted()),
      (err: unknown) => callback(asError(err)),
    )
  }
}
