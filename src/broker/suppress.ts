import type { AnyPacket } from 'aedes-persistence/asyncPersistence.js'

/**
 * A PUBLISH paku acknowledges but does not pass on (a duplicate or untargeted cmd/ota). MQTT 3.1.1 has
 * no way to refuse one message without closing the connection, so the message goes through aedes with
 * this mark, and delivery and the offline queues leave it out. The mark is an MQTT 5 user property:
 * aedes carries properties along with the packet, a 3.1.1 client never sends one and is never sent one.
 */
const MARK = 'paku-not-delivered'

export function suppress(packet: object, reason: string): void {
  Object.assign(packet, {
    properties: { userProperties: { [MARK]: reason.slice(0, 200) } },
    retain: false,
  })
}

export function isSuppressed(packet: AnyPacket | object): boolean {
  const props = (packet as { properties?: { userProperties?: Record<string, unknown> } }).properties
  return props?.userProperties?.[MARK] !== undefined
}
