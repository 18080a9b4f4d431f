import AsyncMemoryPersistence, { type AnyPacket, type ClientRef, type SubscriptionRecord } from 'aedes-persistence/asyncPersistence.js'
import { sql, type Kysely, type RawBuilder } from 'kysely'
import type { DB } from '../db/index.js'
import { errorText, type Logger } from '../log/index.js'

export type PgPersistenceOptions = {
  db: () => Kysely<DB>
  log: Logger
  /** Longest a state change waits in memory before it is written (coalesced with others). */
  flushDelayMs?: number
}

type Op = RawBuilder<unknown>

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
    await this.#load()
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
    for (const { topic, ...options } of subs) {
      this.#write(sql`INSERT INTO mqtt_subscriptions (client_id, topic, options) VALUES (${client.id}, ${topic}, ${JSON.stringify(options)}::jsonb)
        ON CONFLICT (client_id, topic) DO UPDATE SET options = EXCLUDED.options`)
    }
  }

  override async removeSubscriptions(client: ClientRef, subs: string[]): Promise<void> {
    await super.removeSubscriptions(client, subs)
    this.#write(sql`DELETE FROM mqtt_subscriptions WHERE client_id = ${client.id} AND topic = ANY(${subs}::text[])`)
  }

  override async cleanSubscriptions(client: ClientRef): Promise<void> {
    await super.cleanSubscriptions(client)
    this.#write(sql`DELETE FROM mqtt_subscriptions WHERE client_id = ${client.id}`)
  }

  override async outgoingEnqueue(sub: { clientId: string }, packet: AnyPacket): Promise<void> {
    await super.outgoingEnqueue(sub, packet)
    this.#enqueueRow(sub.clientId, packet)
  }

  override async outgoingEnqueueCombi(subs: Array<{ clientId: string }>, packet: AnyPacket): Promise<void> {
    await super.outgoingEnqueueCombi(subs, packet)
    for (const sub of subs) this.#enqueueRow(sub.clientId, packet)
  }

  #enqueueRow(clientId: string, packet: AnyPacket): void {
    this.#write(sql`INSERT INTO mqtt_outgoing (client_id, broker_id, broker_counter, payload, packet)
      VALUES (${clientId}, ${packet.brokerId ?? null}, ${packet.brokerCounter ?? null}, ${toBuffer(packet.payload)}, ${meta(packet)}::jsonb)`)
  }

  override async outgoingUpdate(client: ClientRef, packet: AnyPacket): Promise<void> {
    await super.outgoingUpdate(client, packet)
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
    if (cleared) this.#write(sql`DELETE FROM mqtt_outgoing WHERE seq = (SELECT seq FROM mqtt_outgoing WHERE client_id = ${client.id} AND message_id = ${packet.messageId ?? null} ORDER BY seq LIMIT 1)`)
    return cleared
  }

  override async incomingStorePacket(client: ClientRef, packet: AnyPacket): Promise<void> {
    await super.incomingStorePacket(client, packet)
    this.#write(sql`INSERT INTO mqtt_incoming (client_id, message_id, payload, packet) VALUES (${client.id}, ${packet.messageId}, ${toBuffer(packet.payload)}, ${meta(packet)}::jsonb)
      ON CONFLICT (client_id, message_id) DO UPDATE SET payload = EXCLUDED.payload, packet = EXCLUDED.packet`)
  }

  override async incomingDelPacket(client: ClientRef, packet: AnyPacket): Promise<void> {
    await super.incomingDelPacket(client, packet)
    this.#write(sql`DELETE FROM mqtt_incoming WHERE client_id = ${client.id} AND message_id = ${packet.messageId}`)
  }

  override async cleanIncoming(client: ClientRef): Promise<void> {
    await super.cleanIncoming(client)
    this.#write(sql`DELETE FROM mqtt_incoming WHERE client_id = ${client.id}`)
  }

  override async putWill(client: ClientRef, packet: AnyPacket): Promise<void> {
    await super.putWill(client, packet)
    this.#write(sql`INSERT INTO mqtt_wills (client_id, payload, packet) VALUES (${client.id}, ${toBuffer(packet.payload)}, ${meta(packet)}::jsonb)
      ON CONFLICT (client_id) DO UPDATE SET payload = EXCLUDED.payload, packet = EXCLUDED.packet`)
  }

  override async delWill(client: ClientRef): Promise<AnyPacket | undefined> {
    const will = await super.delWill(client)
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
