import { Readable } from 'node:stream'
import AsyncMemoryPersistence, {
  Packet,
  type AnyPacket,
  type ClientRef,
  type SubscriptionRecord,
} from 'aedes-persistence/asyncPersistence.js'
import { sql, type Kysely, type RawBuilder } from 'kysely'
import type { DB, Row } from '../db/index.js'
import { errorText, type Logger } from '../log/index.js'
import {
  kindOf,
  type Ledger,
  type QuotaKind,
  type QuotaName,
  type Quotas,
  type SessionEntry,
} from './ledger.js'
import { isSuppressed } from './suppress.js'

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
  /** The broker's accounts: owners of sessions and retained messages, and the quotas they are held to. */
  ledger: Ledger
  quotas: Quotas
  /** Persistent sessions whose client has been away this long are deleted at start-up. */
  sessionExpiryHours: number
  /**
   * Whether a subscription was authorised (aedes hands the persistence every topic of a SUBSCRIBE,
   * refused ones included, for a session that has at least one granted); refused ones are not kept.
   */
  acceptSubscription?: (clientId: string, topic: string) => boolean
  /** A QoS 1/2 message was not queued for a session over its quota (or the broker's total). */
  onQueueRefused?: (clientId: string, quota: QuotaName) => void
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
  | { op: 'session'; client: string; entry: SessionEntry | null }
  | { op: 'dropSession'; client: string }

type Emitter = {
  emit(msg: Record<string, unknown> & { topic: string }, done?: (err?: Error) => void): void
  on(
    topic: string,
    fn: (msg: Record<string, unknown>, done: () => void) => void,
    done?: () => void,
  ): void
}

type Op = RawBuilder<unknown>

/** outgoingEnqueueCombi's answer when there is no subscriber to queue for (one shared resolved promise). */
const NOTHING_TO_QUEUE = Promise.resolve()
const QUOTA_KINDS: readonly QuotaKind[] = ['device', 'bridge', 'service', 'anonymous']

/** A queued QoS 1/2 message and the payload bytes it was counted with (a PUBREL replacing it keeps them). */
type Queued = { packet: AnyPacket; bytes: number }

/**
 * aedes persistence on PostgreSQL: aedes' own in-memory implementation answers every read (its topic
 * trie included), and every change is written behind, in order, one transaction per flush. start-up
 * loads the tables back into memory, so retained messages, sessions, queued QoS 1/2 messages and wills
 * survive a restart. Changes are coalesced for up to flushDelayMs (default 20 ms): a graceful stop
 * writes everything; a kill -9 can lose changes of that last window (never telemetry rows, which
 * ingest acknowledges only once durable).
 *
 * It also keeps the broker's accounts (the ledger): who owns each retained message and persistent
 * session, and how much each session has queued. The outgoing queues are kept here rather than in the
 * in-memory implementation so that each message's bytes are counted exactly. start-up loads at most
 * what the quotas allow: expired sessions, and the oldest state beyond a quota or the broker's total,
 * are deleted first (and logged), so memory stays bounded whatever the tables hold.
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
  /** Outgoing QoS 1/2 messages per client id, in order. */
  #queues = new Map<string, { items: Queued[]; bytes: number }>()

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
      await new Promise<void>((resolve) =>
        this.#mq?.on(STATE_TOPIC, (msg, done) => void this.#apply(msg).finally(done), resolve),
      )
    }
    await this.#load()
  }

  /** Sends a change to the other instances (no-op for a single instance). Ordered with the messages themselves: one Redis connection publishes both. */
  #share(change: Change): void {
    if (!this.#mq || this.#loading) return
    this.#mq.emit(
      { topic: STATE_TOPIC, from: this.#opts.replicate?.instanceId, change: plain(change) },
      (err) => {
        if (err)
          this.#opts.log.warn('broker state change not shared with the other instances', {
            op: change.op,
            err: errorText(err),
          })
      },
    )
  }

  /** Applies another instance's change to memory only (that instance writes it to PostgreSQL). */
  async #apply(msg: Record<string, unknown>): Promise<void> {
    if (msg.from === this.#opts.replicate?.instanceId || this.#destroyed) return
    const c = msg.change as Change
    const ref = (id: string) => ({ id })
    try {
      switch (c.op) {
        case 'storeRetained':
          this.#opts.ledger.storeRetained(
            c.packet.topic as string,
            this.#opts.ledger.takeRetainedOwner(
              c.packet.clientId as string | undefined,
              c.packet.topic as string,
            ),
            toBuffer(c.packet.payload).length,
          )
          return await super.storeRetained(c.packet)
        case 'addSubscriptions':
          return await super.addSubscriptions(ref(c.client), c.subs)
        case 'removeSubscriptions':
          return await super.removeSubscriptions(ref(c.client), c.topics)
        case 'cleanSubscriptions':
          return await super.cleanSubscriptions(ref(c.client))
        case 'outgoingEnqueueCombi':
          for (const client of c.clients) this.#push(client, c.packet)
          return
        case 'outgoingUpdate':
          this.#update(c.client, c.packet)
          return
        case 'outgoingClearMessageId':
          this.#clear(c.client, c.packet)
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
        case 'session':
          this.#opts.ledger.restore(c.client, c.entry ?? undefined)
          return
        case 'dropSession':
          await this.#forget(c.client)
          return
      }
    } catch (err) {
      this.#opts.log.warn('broker state change from another instance not applied', {
        op: c?.op,
        err: errorText(err),
      })
    }
  }

  async #load(): Promise<void> {
    const db = this.#opts.db()
    const { ledger, quotas } = this.#opts
    this.#loading = true
    try {
      const bounded = await this.#bound()
      const sessions = await db
        .selectFrom('mqtt_sessions')
        .select(['client_id', 'principal', 'kind', 'last_seen'])
        .execute()
      for (const s of sessions) {
        const kind = (QUOTA_KINDS as readonly string[]).includes(s.kind ?? '')
          ? (s.kind as QuotaKind)
          : kindOf(s.principal)
        ledger.restore(s.client_id, {
          principal: s.principal,
          kind,
          persistent: true,
          connId: null,
          lastSeen: s.last_seen.getTime(),
        })
      }
      const retained = await db
        .selectFrom('mqtt_retained')
        .select(['payload', 'packet', 'owner'])
        .orderBy('topic')
        .execute()
      for (const r of retained) {
        const packet = decode(r.packet, r.payload)
        await super.storeRetained(packet)
        ledger.storeRetained(packet.topic as string, r.owner, r.payload.length)
      }
      const subs = await db
        .selectFrom('mqtt_subscriptions')
        .select(['client_id', 'topic', 'options'])
        .orderBy('client_id')
        .orderBy('topic')
        .execute()
      const byClient = new Map<string, SubscriptionRecord[]>()
      for (const s of subs)
        byClient.set(s.client_id, [
          ...(byClient.get(s.client_id) ?? []),
          // The column holds what addSubscriptions wrote: a subscription's options as JSON.
          { topic: s.topic, ...(s.options as Omit<SubscriptionRecord, 'topic'>) },
        ])
      for (const [id, list] of byClient) await super.addSubscriptions({ id }, list)
      const outgoing = await db
        .selectFrom('mqtt_outgoing')
        .select(['client_id', 'message_id', 'payload', 'packet'])
        .orderBy('seq')
        .execute()
      for (const o of outgoing) {
        const packet = decode(o.packet, o.payload)
        this.#push(o.client_id, packet, o.message_id ?? undefined)
      }
      const incoming = await db
        .selectFrom('mqtt_incoming')
        .select(['client_id', 'payload', 'packet'])
        .execute()
      for (const i of incoming)
        await super.incomingStorePacket({ id: i.client_id }, decode(i.packet, i.payload))
      const wills = await db
        .selectFrom('mqtt_wills')
        .select(['client_id', 'payload', 'packet'])
        .execute()
      for (const w of wills) {
        const will = decode(w.packet, w.payload)
        // Keep the broker id the will was registered under (putWill marks it with this broker's):
        // aedes publishes wills of brokers that are gone, which after a crash is exactly these.
        const registeredBy = will.brokerId
        await super.putWill({ id: w.client_id }, will)
        const stored = await super.getWill({ id: w.client_id })
        if (stored && registeredBy) stored.brokerId = registeredBy
      }
      this.#opts.log.info('broker state loaded', {
        retained: retained.length,
        sessions: sessions.length,
        queued: outgoing.length,
        wills: wills.length,
      })
      if (Object.values(bounded).some((n) => n > 0)) {
        this.#opts.log.warn('broker state over its quotas was deleted at start-up', {
          ...bounded,
          totalBytes: quotas.totalBytes,
        })
      }
    } finally {
      this.#loading = false
    }
  }

  /**
   * Deletes what start-up must not load: sessions whose client has been away longer than the expiry,
   * sessions beyond a principal's or the broker's count, and the newest queued messages, subscriptions
   * and oldest retained messages beyond their quotas or the broker's total. What is left fits the
   * quotas, so loading it keeps memory bounded whatever the tables held.
   */
  async #bound(): Promise<Record<string, number>> {
    const db = this.#opts.db()
    const q = this.#opts.quotas
    const byKind = (pick: (kind: QuotaKind) => number) =>
      sql`CASE s.kind ${sql.join(
        QUOTA_KINDS.map((k) => sql`WHEN ${k} THEN ${pick(k)}::bigint`),
        sql` `,
      )} ELSE ${pick('bridge')}::bigint END`
    const count = (r: { numAffectedRows?: bigint }) => Number(r.numAffectedRows ?? 0)
    // State that outlived its session row (a write that never reached the database) gets one, owner unknown, so it expires too.
    await sql`INSERT INTO mqtt_sessions (client_id) SELECT client_id FROM mqtt_subscriptions UNION SELECT client_id FROM mqtt_outgoing ON CONFLICT DO NOTHING`.execute(
      db,
    )
    const expired = await this.#dropSessions(
      sql`last_seen < NOW() - make_interval(hours => ${this.#opts.sessionExpiryHours})`,
    )
    const rows = await db
      .selectFrom('mqtt_sessions')
      .select(['client_id', 'principal', 'kind'])
      .orderBy('last_seen', 'desc')
      .orderBy('client_id')
      .limit(q.totalPersistentSessions)
      .execute()
    const over = await this.#dropSessions(
      sql`client_id NOT IN (SELECT client_id FROM mqtt_sessions ORDER BY last_seen DESC, client_id LIMIT ${q.totalPersistentSessions})`,
    )
    const perPrincipal = new Map<string, number>()
    const surplus: string[] = []
    for (const r of rows) {
      if (r.principal === null) continue
      const n = (perPrincipal.get(r.principal) ?? 0) + 1
      perPrincipal.set(r.principal, n)
      // The column holds what recordSession wrote: a QuotaKind, or null.
      const kind = r.kind as QuotaKind | null
      if (n > q[kind ?? kindOf(r.principal) ?? 'bridge'].persistentSessions)
        surplus.push(r.client_id)
    }
    const overPrincipal =
      surplus.length > 0 ? await this.#dropSessions(sql`client_id = ANY(${surplus}::text[])`) : 0
    const subscriptions = count(
      await sql`
        WITH ranked AS (
          SELECT m.client_id, m.topic, row_number() OVER (PARTITION BY m.client_id ORDER BY m.topic) AS n, ${byKind((k) => q[k].subscriptions)} AS cap
          FROM mqtt_subscriptions m LEFT JOIN mqtt_sessions s USING (client_id))
        DELETE FROM mqtt_subscriptions m USING ranked r WHERE m.client_id = r.client_id AND m.topic = r.topic AND r.n > r.cap`.execute(
        db,
      ),
    )
    const retained = count(
      await sql`
        WITH ranked AS (SELECT topic, sum(octet_length(payload)) OVER (ORDER BY updated_at DESC, topic) AS running FROM mqtt_retained)
        DELETE FROM mqtt_retained m USING ranked r WHERE m.topic = r.topic AND r.running > ${q.totalBytes}`.execute(
        db,
      ),
    )
    // Per owner, within what is left (at most totalBytes of it): the newest messages up to its quota.
    const owned = await sql<Row<'mqtt_retained', 'topic'> & { owner: string; bytes: number }>`
      SELECT topic, owner, octet_length(payload) AS bytes FROM mqtt_retained WHERE owner IS NOT NULL ORDER BY updated_at DESC, topic`.execute(
      db,
    )
    const used = new Map<string, { topics: number; bytes: number }>()
    const beyond: string[] = []
    for (const r of owned.rows) {
      const kind = kindOf(r.owner)
      const u = used.get(r.owner) ?? { topics: 0, bytes: 0 }
      if (
        kind &&
        (u.topics + 1 > q[kind].retainedTopics || u.bytes + r.bytes > q[kind].retainedBytes)
      )
        beyond.push(r.topic)
      else used.set(r.owner, { topics: u.topics + 1, bytes: u.bytes + r.bytes })
    }
    const retainedOverOwner =
      beyond.length > 0
        ? count(
            await sql`DELETE FROM mqtt_retained WHERE topic = ANY(${beyond}::text[])`.execute(db),
          )
        : 0
    const kept = await db
      .selectFrom('mqtt_retained')
      .select(sql<string>`COALESCE(sum(octet_length(payload)), 0)`.as('bytes'))
      .executeTakeFirst()
    const retainedBytes = Number(kept?.bytes ?? 0)
    // The oldest queued messages of each session are kept (a full queue drops new ones, as at run time).
    const queued = count(
      await sql`
        WITH ranked AS (
          SELECT o.seq,
            row_number() OVER w AS n, sum(octet_length(COALESCE(o.payload, ''::bytea))) OVER w AS bytes,
            sum(octet_length(COALESCE(o.payload, ''::bytea))) OVER (ORDER BY o.seq) AS running,
            ${byKind((k) => q[k].queuedMessages)} AS max_n, ${byKind((k) => q[k].queuedBytes)} AS max_bytes
          FROM mqtt_outgoing o LEFT JOIN mqtt_sessions s USING (client_id)
          WINDOW w AS (PARTITION BY o.client_id ORDER BY o.seq))
        DELETE FROM mqtt_outgoing o USING ranked r
        WHERE o.seq = r.seq AND (r.n > r.max_n OR r.bytes > r.max_bytes OR r.running > ${Math.max(0, q.totalBytes - retainedBytes)})`.execute(
        db,
      ),
    )
    // Inbound QoS 2 messages of clean sessions, left by a crash (a clean session ends with its connection,
    // [MQTT-3.1.2-6]). With several instances another one may hold such a session now: only alone.
    const incoming = this.#opts.replicate
      ? 0
      : count(
          await sql`DELETE FROM mqtt_incoming i WHERE NOT EXISTS (SELECT 1 FROM mqtt_sessions s WHERE s.client_id = i.client_id)`.execute(
            db,
          ),
        )
    return {
      expiredSessions: expired,
      sessions: over + overPrincipal,
      subscriptions,
      retained: retained + retainedOverOwner,
      queued,
      incoming,
    }
  }

  /** Deletes sessions matching `where` with everything they hold (not their wills: aedes publishes those). */
  async #dropSessions(where: RawBuilder<unknown>): Promise<number> {
    const r = await sql<{ n: number }>`
      WITH gone AS (DELETE FROM mqtt_sessions WHERE ${where} RETURNING client_id),
        s AS (DELETE FROM mqtt_subscriptions WHERE client_id IN (SELECT client_id FROM gone)),
        o AS (DELETE FROM mqtt_outgoing WHERE client_id IN (SELECT client_id FROM gone)),
        i AS (DELETE FROM mqtt_incoming WHERE client_id IN (SELECT client_id FROM gone))
      SELECT count(*)::int AS n FROM gone`.execute(this.#opts.db())
    return r.rows[0]?.n ?? 0
  }

  /**
   * Records a session's owner as the broker decided it and shares it with other instances. With
   * `write`, a persistent session's owner and last-seen time are written (a clean one deletes the row
   * it may have left as a persistent session before).
   */
  recordSession(clientId: string, entry: SessionEntry | undefined, write: boolean): void {
    this.#share({ op: 'session', client: clientId, entry: entry ?? null })
    if (!write) return
    this.#write(
      entry?.persistent
        ? sql`INSERT INTO mqtt_sessions (client_id, principal, kind, last_seen) VALUES (${clientId}, ${entry.principal}, ${entry.kind}, to_timestamp(${entry.lastSeen / 1000}))
            ON CONFLICT (client_id) DO UPDATE SET principal = EXCLUDED.principal, kind = EXCLUDED.kind, last_seen = EXCLUDED.last_seen`
        : sql`DELETE FROM mqtt_sessions WHERE client_id = ${clientId}`,
    )
  }

  /** Deletes a persistent session with its subscriptions, queued and inbound messages (expiry). */
  async dropSession(clientId: string): Promise<void> {
    await this.#forget(clientId)
    this.#share({ op: 'dropSession', client: clientId })
    this.#write(sql`DELETE FROM mqtt_subscriptions WHERE client_id = ${clientId}`)
    this.#write(sql`DELETE FROM mqtt_outgoing WHERE client_id = ${clientId}`)
    this.#write(sql`DELETE FROM mqtt_incoming WHERE client_id = ${clientId}`)
    this.#write(sql`DELETE FROM mqtt_sessions WHERE client_id = ${clientId}`)
  }

  async #forget(clientId: string): Promise<void> {
    await super.cleanSubscriptions({ id: clientId })
    await super.cleanIncoming({ id: clientId })
    this.#opts.ledger.queued(-(this.#queues.get(clientId)?.bytes ?? 0))
    this.#queues.delete(clientId)
    this.#opts.ledger.restore(clientId, undefined)
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
    if (this.#flushing)
      return this.#flushing.then(() => (this.#ops.length > 0 ? this.flush() : undefined))
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
          if (!this.#failing)
            this.#opts.log.error('broker state writes failing; retrying', { err: errorText(err) })
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
    const owner = this.#opts.ledger.takeRetainedOwner(
      packet.clientId as string | undefined,
      packet.topic as string,
    )
    this.#opts.ledger.storeRetained(packet.topic as string, owner, payload.length)
    this.#share({ op: 'storeRetained', packet })
    this.#write(
      payload.length === 0
        ? sql`DELETE FROM mqtt_retained WHERE topic = ${packet.topic}`
        : sql`INSERT INTO mqtt_retained (topic, payload, packet, owner) VALUES (${packet.topic}, ${payload}, ${meta(packet)}::jsonb, ${owner})
              ON CONFLICT (topic) DO UPDATE SET payload = EXCLUDED.payload, packet = EXCLUDED.packet, owner = EXCLUDED.owner, updated_at = NOW()`,
    )
  }

  override async addSubscriptions(client: ClientRef, all: SubscriptionRecord[]): Promise<void> {
    const accept = this.#opts.acceptSubscription
    const subs = accept ? all.filter((s) => accept(client.id, s.topic)) : all
    if (subs.length === 0) return
    await super.addSubscriptions(client, subs)
    this.#share({ op: 'addSubscriptions', client: client.id, subs })
    for (const { topic, ...options } of subs) {
      this
        .#write(sql`INSERT INTO mqtt_subscriptions (client_id, topic, options) VALUES (${client.id}, ${topic}, ${JSON.stringify(options)}::jsonb)
        ON CONFLICT (client_id, topic) DO UPDATE SET options = EXCLUDED.options`)
    }
  }

  override async removeSubscriptions(client: ClientRef, subs: string[]): Promise<void> {
    await super.removeSubscriptions(client, subs)
    this.#share({ op: 'removeSubscriptions', client: client.id, topics: subs })
    this.#write(
      sql`DELETE FROM mqtt_subscriptions WHERE client_id = ${client.id} AND topic = ANY(${subs}::text[])`,
    )
  }

  override async cleanSubscriptions(client: ClientRef): Promise<void> {
    await super.cleanSubscriptions(client)
    this.#share({ op: 'cleanSubscriptions', client: client.id })
    this.#write(sql`DELETE FROM mqtt_subscriptions WHERE client_id = ${client.id}`)
  }

  override async outgoingEnqueue(sub: { clientId: string }, packet: AnyPacket): Promise<void> {
    if (!this.#mayQueue(sub.clientId, packet)) return
    this.#push(sub.clientId, packet)
    this.#enqueueRow(sub.clientId, packet)
    await this.#enqueued([sub.clientId], packet)
  }

  override outgoingEnqueueCombi(
    subs: Array<{ clientId: string }>,
    packet: AnyPacket,
  ): Promise<void> {
    // aedes asks for every QoS 1/2 message, and telemetry has no offline subscriber: answering that case
    // without an async call saves two promises and their frames per message.
    if (subs.length === 0) return NOTHING_TO_QUEUE
    return this.#enqueueCombi(subs, packet)
  }

  async #enqueueCombi(subs: Array<{ clientId: string }>, packet: AnyPacket): Promise<void> {
    // Once per client: overlapping subscriptions would queue copies of one broker packet, which share
    // its id, so only the first could ever be matched and cleared; the others would stay, counted
    // against the quota, forever. MQTT 3.1.1 §3.3.5 asks for one delivery (further copies are optional).
    const ids = [...new Set(subs.map((s) => s.clientId))].filter((id) => this.#mayQueue(id, packet))
    for (const id of ids) {
      this.#push(id, packet)
      this.#enqueueRow(id, packet)
    }
    await this.#enqueued(ids, packet)
  }

  /** Whether one more message fits the session's queue quota and the broker's total; a refusal is counted and reported. */
  #mayQueue(clientId: string, packet: AnyPacket): boolean {
    // Acknowledged but not for delivery: nobody gets it, online or later.
    if (isSuppressed(packet)) return false
    const { ledger } = this.#opts
    const q = this.#queues.get(clientId)
    const bytes = toBuffer(packet.payload).length
    const limits = ledger.queueLimits(clientId)
    const refused: QuotaName | undefined =
      (q?.items.length ?? 0) + 1 > limits.messages || (q?.bytes ?? 0) + bytes > limits.bytes
        ? 'queued'
        : !ledger.totalFits(bytes)
          ? 'total'
          : undefined
    if (refused === undefined) return true
    ledger.refuse(refused)
    this.#opts.onQueueRefused?.(clientId, refused)
    return false
  }

  /**
   * Queues a copy of the packet in memory and counts its bytes. The copy (aedes-packet, as aedes'
   * in-memory persistence makes it) has no message id: aedes assigns one when it sends the message;
   * start-up passes the one a message already had.
   */
  #push(clientId: string, packet: AnyPacket, messageId?: number): void {
    let q = this.#queues.get(clientId)
    if (!q) {
      q = { items: [], bytes: 0 }
      this.#queues.set(clientId, q)
    }
    const bytes = toBuffer(packet.payload).length
    const copy = new Packet(packet)
    if (messageId !== undefined) copy.messageId = messageId
    q.items.push({ packet: copy, bytes })
    q.bytes += bytes
    this.#opts.ledger.queued(bytes)
  }

  /**
   * aedes-persistence's rule: the same broker packet gets its message id; a packet of another broker
   * (a PUBREL) replaces the entry that has its message id. Throws like it when nothing matches.
   */
  #update(clientId: string, packet: AnyPacket): void {
    for (const item of this.#queues.get(clientId)?.items ?? []) {
      if (item.packet.brokerId === packet.brokerId) {
        if (item.packet.brokerCounter === packet.brokerCounter) {
          item.packet.messageId = packet.messageId
          return
        }
      } else if (item.packet.messageId === packet.messageId) {
        item.packet = packet
        return
      }
    }
    throw new Error('no such packet')
  }

  /**
   * Removes a queued message: the one with this message id (an acknowledgement), or, for a message not
   * sent yet (no id: aedes drops a queued copy that authorizeForward refused), the one of this broker
   * packet. aedes-persistence matches the missing id itself, and would remove whichever message waits for
   * its id first: another one, whose outgoingUpdate then fails and closes the connection.
   */
  #clear(
    clientId: string,
    packet: Pick<AnyPacket, 'messageId' | 'brokerId' | 'brokerCounter'>,
  ): AnyPacket | undefined {
    const q = this.#queues.get(clientId)
    const fresh = packet.messageId === undefined
    if (fresh && (packet.brokerId === undefined || packet.brokerCounter === undefined))
      return undefined
    const i =
      q?.items.findIndex((item) =>
        fresh
          ? item.packet.messageId === undefined &&
            item.packet.brokerId === packet.brokerId &&
            item.packet.brokerCounter === packet.brokerCounter
          : item.packet.messageId === packet.messageId,
      ) ?? -1
    if (!q || i < 0) return undefined
    const [item] = q.items.splice(i, 1) as [Queued]
    q.bytes -= item.bytes
    this.#opts.ledger.queued(-item.bytes)
    if (q.items.length === 0) this.#queues.delete(clientId)
    return item.packet
  }

  override outgoingStream(client: ClientRef): Readable {
    // A copy: aedes clears entries while it streams them.
    return Readable.from((this.#queues.get(client.id)?.items ?? []).map((item) => item.packet))
  }

  /** Messages and bytes queued for a client (tests and /health). */
  queueOf(clientId: string): { messages: number; bytes: number } {
    const q = this.#queues.get(clientId)
    return { messages: q?.items.length ?? 0, bytes: q?.bytes ?? 0 }
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
    this
      .#write(sql`INSERT INTO mqtt_outgoing (client_id, broker_id, broker_counter, payload, packet)
      VALUES (${clientId}, ${packet.brokerId ?? null}, ${packet.brokerCounter ?? null}, ${toBuffer(packet.payload)}, ${meta(packet)}::jsonb)`)
  }

  override async outgoingUpdate(client: ClientRef, packet: AnyPacket): Promise<void> {
    this.#update(client.id, packet)
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

  override async outgoingClearMessageId(
    client: ClientRef,
    packet: AnyPacket,
  ): Promise<AnyPacket | undefined> {
    const cleared = this.#clear(client.id, packet)
    if (!cleared) return undefined
    const { messageId, brokerId, brokerCounter } = packet
    this.#share({
      op: 'outgoingClearMessageId',
      client: client.id,
      packet: { messageId, brokerId, brokerCounter },
    })
    const which =
      messageId === undefined
        ? sql`message_id IS NULL AND broker_id = ${brokerId ?? null} AND broker_counter = ${brokerCounter ?? null}`
        : sql`message_id = ${messageId}`
    this.#write(
      sql`DELETE FROM mqtt_outgoing WHERE seq = (SELECT seq FROM mqtt_outgoing WHERE client_id = ${client.id} AND ${which} ORDER BY seq LIMIT 1)`,
    )
    return cleared
  }

  override async incomingStorePacket(client: ClientRef, packet: AnyPacket): Promise<void> {
    await super.incomingStorePacket(client, packet)
    this.#share({ op: 'incomingStorePacket', client: client.id, packet })
    this
      .#write(sql`INSERT INTO mqtt_incoming (client_id, message_id, payload, packet) VALUES (${client.id}, ${packet.messageId}, ${toBuffer(packet.payload)}, ${meta(packet)}::jsonb)
      ON CONFLICT (client_id, message_id) DO UPDATE SET payload = EXCLUDED.payload, packet = EXCLUDED.packet`)
  }

  override async incomingDelPacket(client: ClientRef, packet: AnyPacket): Promise<void> {
    await super.incomingDelPacket(client, packet)
    this.#share({
      op: 'incomingDelPacket',
      client: client.id,
      packet: { messageId: packet.messageId },
    })
    this.#write(
      sql`DELETE FROM mqtt_incoming WHERE client_id = ${client.id} AND message_id = ${packet.messageId}`,
    )
  }

  override async cleanIncoming(client: ClientRef): Promise<void> {
    await super.cleanIncoming(client)
    this.#share({ op: 'cleanIncoming', client: client.id })
    this.#write(sql`DELETE FROM mqtt_incoming WHERE client_id = ${client.id}`)
  }

  override async putWill(client: ClientRef, packet: AnyPacket): Promise<void> {
    await super.putWill(client, packet)
    this.#share({ op: 'putWill', client: client.id, packet })
    this
      .#write(sql`INSERT INTO mqtt_wills (client_id, payload, packet) VALUES (${client.id}, ${toBuffer(packet.payload)}, ${meta(packet)}::jsonb)
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
    if (this.#ops.length > 0)
      this.#opts.log.error('stopped with broker state changes not written', {
        changes: this.#ops.length,
      })
    await super.destroy()
  }
}

/** A packet (aedes' Packet class, with its payload) as a plain object msgpack can carry. */
function plain(change: Change): Change {
  if (!('packet' in change)) return change
  const packet: AnyPacket = {}
  for (const [k, v] of Object.entries(change.packet))
    if (v !== undefined && typeof v !== 'function') packet[k] = v
  return { ...change, packet }
}

function toBuffer(payload: Buffer | string | undefined): Buffer {
  return payload === undefined
    ? Buffer.alloc(0)
    : Buffer.isBuffer(payload)
      ? payload
      : Buffer.from(payload)
}

/** Everything of a packet but its payload (stored as bytea beside it). */
function meta(packet: AnyPacket): string {
  const { payload: _payload, ...rest } = packet
  return JSON.stringify(rest)
}

/** A stored packet: its JSON column (meta()) with its payload put back. */
function decode(packet: Row<'mqtt_wills', 'packet'>['packet'], payload: Buffer | null): AnyPacket {
  // The column holds only what meta() wrote: a packet's fields but its payload.
  return { ...(packet as AnyPacket), payload: payload ?? Buffer.alloc(0) }
}
