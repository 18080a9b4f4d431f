// aedes-persistence ships types for its main entry only; paku extends the in-memory async
// implementation, so this declares the members it uses.
declare module 'aedes-persistence/asyncPersistence.js' {
  import type { Readable } from 'node:stream'
  export type AnyPacket = Record<string, any> & {
    topic?: string
    payload?: Buffer | string
    messageId?: number
    brokerId?: string
    brokerCounter?: number
  }
  export type ClientRef = { id: string }
  export type SubscriptionRecord = {
    topic: string
    qos: number
    rh?: number
    rap?: number
    nl?: number
    subscriptionIdentifier?: number
  }
  /** aedes-packet's Packet, which the in-memory persistence queues (it copies the fields aedes needs). */
  export const Packet: new (packet: AnyPacket) => AnyPacket
  export default class AsyncMemoryPersistence {
    constructor(opts?: Record<string, unknown>)
    get broker(): any
    setup(broker: any): Promise<void>
    storeRetained(packet: AnyPacket): Promise<void>
    createRetainedStream(pattern: string): Readable
    createRetainedStreamCombi(patterns: string[]): Readable
    addSubscriptions(client: ClientRef, subs: SubscriptionRecord[]): Promise<void>
    removeSubscriptions(client: ClientRef, subs: string[]): Promise<void>
    subscriptionsByClient(client: ClientRef): Promise<SubscriptionRecord[]>
    countOffline(): Promise<{ subsCount: number; clientsCount: number }>
    subscriptionsByTopic(pattern: string): Promise<unknown[]>
    cleanSubscriptions(client: ClientRef): Promise<void>
    outgoingEnqueue(sub: { clientId: string }, packet: AnyPacket): Promise<void>
    outgoingEnqueueCombi(subs: Array<{ clientId: string }>, packet: AnyPacket): Promise<void>
    outgoingUpdate(client: ClientRef, packet: AnyPacket): Promise<void>
    outgoingClearMessageId(client: ClientRef, packet: AnyPacket): Promise<AnyPacket | undefined>
    outgoingStream(client: ClientRef): Readable
    incomingStorePacket(client: ClientRef, packet: AnyPacket): Promise<void>
    incomingGetPacket(client: ClientRef, packet: AnyPacket): Promise<AnyPacket>
    incomingDelPacket(client: ClientRef, packet: AnyPacket): Promise<void>
    cleanIncoming(client: ClientRef): Promise<void>
    putWill(client: ClientRef, packet: AnyPacket): Promise<void>
    getWill(client: ClientRef): Promise<AnyPacket | undefined>
    delWill(client: ClientRef): Promise<AnyPacket | undefined>
    streamWill(brokers?: Record<string, unknown>): Readable
    getClientList(topic: string): Readable
    destroy(): Promise<void>
  }
}
