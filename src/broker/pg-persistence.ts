import AsyncMemoryPersistence, { type AnyPacket, type ClientRef, type SubscriptionRecord } from 'aedes-persistence/asyncPersistence.js'
import { sql, type Kysely, type RawBuilder } from 'kysely'
import type { DB } from '../db/index.js'
import { errorText, type Logger } from '../log/index.js'

export type PgPersistenceOptions = {
  db: () => Kysely<DB>
  log: Logger
  /** Longest a state change waits in memory before it is written (coalesced with others). */
  flushDelayMs?: number
  /**
   * Several instances (docs/scaling.md): this instance's id. Every change is then also sent to the
   * other instances through the broker's emitter (mqemitter-redis), which apply it to their memory
   * only: the instance that made a change is the one that writes it to PostgreSQL.
   */
  replicate?: { instanceId: string }
}

/** The emitter topic of replicated changes; clients can neither publish nor subscribe there (acl.ts). */
export const STATE_TOPIC = '$SYS/paku-cluster/state'

/** One replicated change: the method and its arguments, as the instance that made it called it. */
type Change =
  | { op: 'storeRetained'; packet: AnyPacket }
  | { op: 'addSubscriptions'; client: string; subs: SubscriptionRecord[] }
  | { op: 'removeSubscriptions'; client: string; topics: string[] }
  | { op: 'cleanSubscriptions'; client: string }
  | { op: 'outgoingEnqueueCombi'; clients: string[]; packet: AnyPacket }
  | { op: 'outgoingUpdate'; client: string; packet: AnyPacket }
  | { op: 'outgoingClearMessageId'; client: string; packet: AnyPacket }
  | { op: 'incomingStorePacket'; client: string; packet: AnyPacket }
  | { op: 'incomingDelPacket'; client: string; packet: AnyPacket }
  | { op: 'cleanIncoming'; client: string }
  | { op: 'putWill'; client: string; packet: AnyPacket }
  | { op: 'delWill'; client: string }

type Emitter = {
  emit(msg: Record<string, unknown> & { topic: string }, done?: (err?: Error) => void): void
  on(topic: string, fn: (msg: Record<string, unknown>, done: () => void) => void, done?: () => void): void
}

type Op = RawBuilder<unknown>

/** outgoingEnqueueCombi's answer when there is no subscriber to queue for (one shared resolved promise). */
const NOTHING_TO_QUEUE = Promise.resolve()

/**
 * aedes persistence on PostgreSQL: aedes' own in-memory implementation answers every read (its topic
 * trie included), and every change is written behind, in order, one transaction per flush. start-up
 * loads the tables back into memory, so retained messages, sessions, queued QoS 1/2 messages and wills
 * survive a restart. Changes are coalesced for up to flushDelayMs (default 20 ms): a graceful stop
 * writes everything; a kill -9 can lose changes of that last window (never telemetry rows, which
 * ingest acknowledges only once durable).
 */
export class PgPersistence extends AsyncMemoryPersistence {
  #opts: PgPersistenceOptions
  #ops: Op[] = []
  #timer: NodeJS.Timeout | undefined
  #flushing: Promise<void> | undefined
  #loading = false
  #failing = false
  #destroyed = false
  /** The broker's emitter, when changes are shared with other instances. */
  #mq: Emitter | undefined

  constructor(opts: PgPersistenceOptions) {
    super()
    this.#opts = opts
  }

  /** Pending changes not yet in PostgreSQL (for /health). */
  get pendingChanges(): number {
    return this.#ops.length
  }

  override async setup(broker: unknown): Promise<void> {
    await super.setup(broker)
    if (this.#opts.replicate) {
      this.#mq = (broker as { mq: Emitter }).mq
      // Subscribed before the load, so nothing another instance changes meanwhile is missed (applying
      // a change twice is harmless: every change is idempotent in aedes' memory persistence).
      await new Promise<void>((resolve) => this.#mq?.on(STATE_TOPIC, (msg, done) => void this.#apply(msg).finally(done), resolve))
    }
    await this.#load()
  }

  /** Sends a change to the other instances (no-op for a single instance). Ordered with the messages themselves: one Redis connection publishes both. */
  #share(change: Change): void {
    if (!this.#mq || this.#loading) return
    this.#mq.emit({ topic: STATE_TOPIC, from: this.#opts.replicate?.instanceId, change: plain(change) }, (err) => {
      if (err) this.#opts.log.warn('broker state change not shared with the other instances', { op: change.op, err: errorText(err) })
    })
  }

  /** Applies another instance's change to memory only (that instance writes it to PostgreSQL). */
  async #apply(msg: Record<string, unknown>): Promise<void> {
    if (msg.from === this.#opts.replicate?.instanceId || this.#destroyed) return
    const c = msg.change as Change
    const ref = (id: string) => ({ id })
    try {
      switch (c.op) {
        case 'storeRetained':
          return await super.storeRetained(c.packet)
        case 'addSubscriptions':
          return await super.addSubscriptions(ref(c.client), c.subs)
        case 'removeSubscriptions':
          return await super.removeSubscriptions(ref(c.client), c.topics)
        case 'cleanSubscriptions':
          return await super.cleanSubscriptions(ref(c.client))
        case 'outgoingEnqueueCombi':
          return await super.outgoingEnqueueCombi(c.clients.map((clientId) => ({ clientId })), c.packet)
        case 'outgoingUpdate':
          return await super.outgoingUpdate(ref(c.client), c.packet).catch(() => undefined)
        case 'outgoingClearMessageId':
          await super.outgoingClearMessageId(ref(c.client), c.packet)
          return
        case 'incomingStorePacket':
          return await super.incomingStorePacket(ref(c.client), c.packet)
        case 'incomingDelPacket':
          return await super.incomingDelPacket(ref(c.client), c.packet).catch(() => undefined)
        case 'cleanIncoming':
          return await super.cleanIncoming(ref(c.client))
        case 'putWill':
          return await super.putWill(ref(c.client), c.packet)
        case 'delWill':
          await super.delWill(ref(c.client))
          return
      }
    } catch (err) {
      this.#opts.log.warn('broker state change from another instance not applied', { op: c?.op, err: errorText(err) })
    }
  }

  async #load(): Promise<void> {
    const db = this.#opts.db()
    this.#loading = true
    try {
      const retained = await sql<{ payload: Buffer; packet: AnyPacket }>`SELECT payload, packet FROM mqtt_retained ORDER BY topic`.execute(db)
      for (const r of retained.rows) await super.storeRetained(decode(r.packet, r.payload))
      const subs = await sql<{ client_id: string; topic: string; options: Omit<SubscriptionRecord, 'topic'> }>`
        SELECT client_id, topic, options FROM mqtt_subscriptions ORDER BY client_id, topic`.execute(db)
      const byClient = new Map<string, SubscriptionRecord[]>()
      for (const s of subs.rows) byClient.set(s.client_id, [...(byClient.get(s.client_id) ?? []), { topic: s.topic, ...s.options }])
      for (const [id, list] of byClient) await super.addSubscriptions({ id }, list)
      const outgoing = await sql<{ client_id: string; message_id: number | null; payload: Buffer | null; packet: AnyPacket }>`
        SELECT client_id, message_id, payload, packet FROM mqtt_outgoing ORDER BY seq`.execute(db)
      for (const o of outgoing.rows) {
        const packet = decode(o.packet, o.payload)
        await super.outgoingEnqueue({ clientId: o.client_id }, packet)
        if (o.message_id !== null) await super.outgoingUpdate({ id: o.client_id }, { ...packet, messageId: o.message_id })
      }
      const incoming = await sql<{ client_id: string; payload: Buffer | null; packet: AnyPacket }>`SELECT client_id, payload, packet FROM mqtt_incoming`.execute(db)
      for (const i of incoming.rows) await super.incomingStorePacket({ id: i.client_id }, decode(i.packet, i.payload))
      const wills = await sql<{ client_id: string; payload: Buffer | null; packet: AnyPacket }>`SELECT client_id, payload, packet FROM mqtt_wills`.execute(db)
      for (const w of wills.rows) {
        await super.putWill({ id: w.client_id }, decode(w.packet, w.payload))
        // Keep the broker id the will was registered under: aedes publishes wills of brokers that
        // are gone, which after a crash is exactly these.
        const stored = await super.getWill({ id: w.client_id })
        if (stored && w.packet.brokerId) stored.brokerId = w.packet.brokerId
      }
      this.#opts.log.info('broker state loaded', {
        retained: retained.rows.length,
        sessions: byClient.size,
        queued: outgoing.rows.length,
        wills: wills.rows.length,
      })
    } finally {
      this.#loading = false
    }
  }

  #write(op: Op): void {
    if (this.#loading) return
    this.#ops.push(op)
    if (!this.#timer && !this.#flushing) {
      this.#timer = setTimeout(() => void this.flush(), this.#opts.flushDelayMs ?? 20)
      this.#timer.unref()
    }
  }

  /** Writes every pending change, in order, in one transaction; on failure keeps them and retries. */
  flush(): Promise<void> {
    clearTimeout(this.#timer)
    this.#timer = undefined
    if (this.#flushing) return this.#flushing.then(() => (this.#ops.length > 0 ? this.flush() : undefined))
    if (this.#ops.length === 0) return Promise.resolve()
    const ops = this.#ops
    this.#ops = []
    this.#flushing = Promise.resolve()
      .then(() =>
        this.#opts
          .db()
          .transaction()
          .execute(async (tx) => {
            for (const op of ops) await op.execute(tx)
          }),
      )
      .then(
        () => {
          if (this.#failing) this.#opts.log.info('broker state writes recovered')
          this.#failing = false
        },
        (err: unknown) => {
          this.#ops = [...ops, ...this.#ops]
          if (!this.#failing) this.#opts.log.error('broker state writes failing; retrying', { err: errorText(err) })
          this.#failing = true
          if (this.#destroyed) return
          this.#timer = setTimeout(() => void this.flush(), 1000)
          this.#timer.unref()
        },
      )
      .finally(() => {
        this.#flushing = undefined
        if (this.#ops.length > 0 && !this.#timer && !this.#destroyed) {
          this.#timer = setTimeout(() => void this.flush(), this.#opts.flushDelayMs ?? 20)
          this.#timer.unref()
        }
      })
    return this.#flushing
  }

  override async storeRetained(packet: AnyPacket): Promise<void> {
    await super.storeRetained(packet)
    this.#share({ op: 'storeRetained', packet })
    const payload = toBuffer(packet.payload)
    this.#write(
      payload.length === 0
        ? sql`DELETE FROM mqtt_retained WHERE topic = ${packet.topic}`
        : sql`INSERT INTO mqtt_retained (topic, payload, packet) VALUES (${packet.topic}, ${payload}, ${meta(packet)}::jsonb)
              ON CONFLICT (topic) DO UPDATE SET payload = EXCLUDED.payload, packet = EXCLUDED.packet, updated_at = NOW()`,
    )
  }

  override async addSubscriptions(client: ClientRef, subs: SubscriptionRecord[]): Promise<void> {
    await super.addSubscriptions(client, subs)
    this.#share({ op: 'addSubscriptions', client: client.id, subs })
    for (const { topic, ...options } of subs) {
      this.#write(sql`INSERT INTO mqtt_subscriptions (client_id, topic, options) VALUES (${client.id}, ${topic}, ${JSON.stringify(options)}::jsonb)
        ON CONFLICT (client_id, topic) DO UPDATE SET options = EXCLUDED.options`)
    }
  }

  override async removeSubscriptions(client: ClientRef, subs: string[]): Promise<void> {
    await super.removeSubscriptions(client, subs)
    this.#share({ op: 'removeSubscriptions', client: client.id, topics: subs })
    this.#write(sql`DELETE FROM mqtt_subscriptions WHERE client_id = ${client.id} AND topic = ANY(${subs}::text[])`)
  }

  override async cleanSubscriptions(client: ClientRef): Promise<void> {
    await super.cleanSubscriptions(client)
    this.#share({ op: 'cleanSubscriptions', client: client.id })
    this.#write(sql`DELETE FROM mqtt_subscriptions WHERE client_id = ${client.id}`)
  }

  override async outgoingEnqueue(sub: { clientId: string }, packet: AnyPacket): Promise<void> {
    await super.outgoingEnqueue(sub, packet)
    this.#enqueueRow(sub.clientId, packet)
    await this.#enqueued([sub.clientId], packet)
  }

  override outgoingEnqueueCombi(subs: Array<{ clientId: string }>, packet: AnyPacket): Promise<void> {
    // aedes asks for every QoS 1/2 message, and telemetry has no offline subscriber: answering that case
    // without an async call saves two promises and their frames per message (docs/performance.md, ninth round).
    if (subs.length === 0) return NOTHING_TO_QUEUE
    return this.#enqueueCombi(subs, packet)
  }

  async #enqueueCombi(subs: Array<{ clientId: string }>, packet: AnyPacket): Promise<void> {
    await super.outgoingEnqueueCombi(subs, packet)
    for (const sub of subs) this.#enqueueRow(sub.clientId, packet)
    await this.#enqueued(subs.map((s) => s.clientId), packet)
  }

  /**
   * With several instances, a queued message is written before it is sent on: the subscriber's
   * instance updates and deletes the row when the client takes it, and must find it there. aedes
   * waits for this before it emits the message, so the change reaches the others first.
   */
  async #enqueued(clientIds: string[], packet: AnyPacket): Promise<void> {
    if (!this.#mq || clientIds.length === 0) return
    this.#share({ op: 'outgoingEnqueueCombi', clients: clientIds, packet })
    await this.flush()
  }

  #enqueueRow(clientId: string, packet: AnyPacket): void {
    this.#write(sql`INSERT INTO mqtt_outgoing (client_id, broker_id, broker_counter, payload, packet)
      VALUES (${clientId}, ${packet.brokerId ?? null}, ${packet.brokerCounter ?? null}, ${toBuffer(packet.payload)}, ${meta(packet)}::jsonb)`)
  }

  override async outgoingUpdate(client: ClientRef, packet: AnyPacket): Promise<void> {
    await super.outgoingUpdate(client, packet)
    this.#share({ op: 'outgoingUpdate', client: client.id, packet })
    // Mirrors the in-memory rule: the same broker packet gets its message id; a packet of another
    // broker (a PUBREL) replaces the entry that has its message id.
    this.#write(sql`WITH updated AS (
        UPDATE mqtt_outgoing SET message_id = ${packet.messageId ?? null}
        WHERE client_id = ${client.id} AND broker_id = ${packet.brokerId ?? null} AND broker_counter = ${packet.brokerCounter ?? null}
        RETURNING seq)
      UPDATE mqtt_outgoing SET packet = ${meta(packet)}::jsonb, payload = ${toBuffer(packet.payload)},
        broker_id = ${packet.brokerId ?? null}, broker_counter = ${packet.brokerCounter ?? null}
      WHERE NOT EXISTS (SELECT 1 FROM updated) AND client_id = ${client.id} AND message_id = ${packet.messageId ?? null}
        AND broker_id IS DISTINCT FROM ${packet.brokerId ?? null}`)
  }

  override async outgoingClearMessageId(client: ClientRef, packet: AnyPacket): Promise<AnyPacket | undefined> {
    const cleared = await super.outgoingClearMessageId(client, packet)
    if (cleared) this.#share({ op: 'outgoingClearMessageId', client: client.id, packet: { messageId: packet.messageId } })
    if (cleared) this.#write(sql`DELETE FROM mqtt_outgoing WHERE seq = (SELECT seq FROM mqtt_outgoing WHERE client_id = ${client.id} AND message_id = ${packet.messageId ?? null} ORDER BY seq LIMIT 1)`)
    return cleared
  }

  override async incomingStorePacket(client: ClientRef, packet: AnyPacket): Promise<void> {
    await super.incomingStorePacket(client, packet)
    this.#share({ op: 'incomingStorePacket', client: client.id, packet })
    this.#write(sql`INSERT INTO mqtt_incoming (client_id, message_id, payload, packet) VALUES (${client.id}, ${packet.messageId}, ${toBuffer(packet.payload)}, ${meta(packet)}::jsonb)
      ON CONFLICT (client_id, message_id) DO UPDATE SET payload = EXCLUDED.payload, packet = EXCLUDED.packet`)
  }

  override async incomingDelPacket(client: ClientRef, packet: AnyPacket): Promise<void> {
    await super.incomingDelPacket(client, packet)
    this.#share({ op: 'incomingDelPacket', client: client.id, packet: { messageId: packet.messageId } })
    this.#write(sql`DELETE FROM mqtt_incoming WHERE client_id = ${client.id} AND message_id = ${packet.messageId}`)
  }

  override async cleanIncoming(client: ClientRef): Promise<void> {
    await super.cleanIncoming(client)
    this.#share({ op: 'cleanIncoming', client: client.id })
    this.#write(sql`DELETE FROM mqtt_incoming WHERE client_id = ${client.id}`)
  }

  override async putWill(client: ClientRef, packet: AnyPacket): Promise<void> {
    await super.putWill(client, packet)
    this.#share({ op: 'putWill', client: client.id, packet })
    this.#write(sql`INSERT INTO mqtt_wills (client_id, payload, packet) VALUES (${client.id}, ${toBuffer(packet.payload)}, ${meta(packet)}::jsonb)
      ON CONFLICT (client_id) DO UPDATE SET payload = EXCLUDED.payload, packet = EXCLUDED.packet`)
  }

  override async delWill(client: ClientRef): Promise<AnyPacket | undefined> {
    const will = await super.delWill(client)
    this.#share({ op: 'delWill', client: client.id })
    this.#write(sql`DELETE FROM mqtt_wills WHERE client_id = ${client.id}`)
    return will
  }

  /** Writes the last changes (a few tries if the database is away), then stops for good. */
  override async destroy(): Promise<void> {
    for (let attempt = 0; attempt < 3 && this.#ops.length > 0; attempt++) {
      if (attempt > 0) await new Promise((r) => setTimeout(r, 500))
      await this.flush()
    }
    this.#destroyed = true
    clearTimeout(this.#timer)
    if (this.#ops.length > 0) this.#opts.log.error('stopped with broker state changes not written', { changes: this.#ops.length })
    await super.destroy()
  }
}

/** A packet (aedes' Packet class, with its payload) as a plain object msgpack can carry. */
function plain(change: Change): Change {
  if (!('packet' in change)) return change
  const packet: AnyPacket = {}
  for (const [k, v] of Object.entries(change.packet)) if (v !== undefined && typeof v !== 'function') packet[k] = v
  return { ...change, packet }
}

function toBuffer(payload: Buffer | string | undefined): Buffer {
  return payload === undefined ? Buffer.alloc(0) : Buffer.isBuffer(payload) ? payload : Buffer.from(payload)
}

/** Everything of a packet but its payload (stored as bytea beside it). */
function meta(packet: AnyPacket): string {
  const { payload: _payload, ...rest } = packet
  return JSON.stringify(rest)
}

function decode(packet: AnyPacket, payload: Buffer | null): AnyPacket {
  return { ...packet, payload: payload ?? Buffer.alloc(0) }
}
