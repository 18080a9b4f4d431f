import type { Aedes, AedesPublishPacket } from 'aedes'
import { errorText, type Logger } from '../log/index.js'
import type { BrokerMessage } from './message.js'

/**
 * One of several instances (docs/scaling.md): messages fan out through `mq` (mqemitter-redis), broker
 * state changes are shared with the other instances, and messages other instances received are handed
 * to onRemoteMessage (never to onMessage: the instance that received a message stores it).
 */
export type ClusterOptions = {
  instanceId: string
  mq: () => unknown
  onRemoteMessage?: (msg: BrokerMessage) => void
  /** The topic filters onRemoteMessage wants (not `#`: every instance would then decode every message). */
  remoteFilters?: readonly string[]
  /** A client connected here (it may have been connected to another instance before). */
  onClientConnect?: (clientId: string) => void
}

/** aedes' options for an instance of a cluster: its id marks the messages and wills of this instance (a dead broker's wills are published by the others). */
export function clusterAedesOptions(cluster: ClusterOptions | undefined) {
  return cluster ? { id: cluster.instanceId, mq: cluster.mq() as never } : {}
}

/** The part of aedes' mqemitter that remote messages are read from. */
type Emitter = {
  on(topic: string, fn: (p: AedesPublishPacket, done: () => void) => void, cb: () => void): void
}

/**
 * Hands the messages other instances received (an acknowledgement for a command this instance sent)
 * to onRemoteMessage. They arrive through Redis; only the filters asked for are read, so the telemetry
 * stream is not decoded everywhere. Resolves once every filter is subscribed.
 */
export async function followRemoteMessages(opts: {
  broker: Aedes
  cluster: ClusterOptions | undefined
  log: Logger
}): Promise<void> {
  const { broker, cluster, log } = opts
  const onRemote = cluster?.onRemoteMessage
  const mq = (broker as unknown as { mq: Emitter }).mq
  const seen = new Set<string>()
  const hand = (packet: AedesPublishPacket, done: () => void) => {
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
  }
  for (const filter of onRemote ? (cluster?.remoteFilters ?? []) : [])
    await new Promise<void>((resolve) => mq.on(filter, hand, resolve))
}
