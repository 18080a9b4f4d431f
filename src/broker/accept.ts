import type { Duplex } from 'node:stream'
import type { Client, PublishPacket } from 'aedes'
import { errorText, type Logger } from '../log/index.js'
import type { BrokerMessage } from './message.js'
import { holdReading } from './packet-guard.js'
import type { Counts } from './stats.js'

/** An authorised PUBLISH on its way to ingest, with aedes' callback that acknowledges it. */
export type Accepted = {
  client: Client
  packet: PublishPacket
  payload: Buffer
  callback: (error?: Error | null) => void
}

/**
 * Hands an authorised PUBLISH to ingest. aedes sends the QoS 1 PUBACK (and the QoS 2 PUBREC) only
 * after authorizePublish calls back, so waiting for the row to be durable makes the acknowledgement
 * mean "stored" (design A4.1). Wills pass through here too. Packets of one socket read are authorised
 * concurrently, so a pipelining client (a bridge with 20 in flight) shares one flush.
 */
export function createAccept(opts: {
  onMessage: (msg: BrokerMessage) => Promise<void> | undefined
  log: Logger
  counts: Counts
}) {
  const { log, counts } = opts
  return function accept({ client, packet, payload, callback }: Accepted): void {
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
}
