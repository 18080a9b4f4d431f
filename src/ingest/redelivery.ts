import { hash } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { DB } from '../db/index.js'
import type { DedupKey } from './records.js'
import { RecentIds } from './recent-ids.js'
import { REDELIVERY_SLOTS, recentKeys, type RecentKey } from './store.js'

/** Message ids remembered per client for recognising redeliveries: as many as the database keeps. */
const RECENT_IDS = REDELIVERY_SLOTS
/** A client's history lookup that takes longer is abandoned: its messages are stored without it. */
const LOOKUP_TIMEOUT_MS = 2000
/** Clients looked up in one query at most (each up to RECENT_IDS rows). */
const LOOKUP_BATCH = 50

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  // If the timeout wins, p may still reject later: that must not become an unhandled rejection.
  p.catch(() => undefined)
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

/**
 * The key a QoS 1/2 message is recognised by when it is delivered again: client, message id and a
 * digest of topic and payload. Undefined for QoS 0 or without a client id.
 */
export function dedupKey(msg: {
  topic: string
  payload: Buffer
  clientId?: string | null | undefined
  qos?: 0 | 1 | 2 | undefined
  messageId?: number | undefined
}): DedupKey | undefined {
  if (!msg.qos || msg.messageId === undefined || !msg.clientId) return undefined
  // sha1(topic NUL payload), hashed in one call: half the cost of a Hash object on the hot path.
  const buf = Buffer.allocUnsafe(Buffer.byteLength(msg.topic) + 1 + msg.payload.length)
  const n = buf.write(msg.topic)
  buf[n] = 0
  msg.payload.copy(buf, n + 1)
  const digest = hash('sha1', buf, 'base64')
  return { clientId: msg.clientId, messageId: msg.messageId, digest }
}

/**
 * The last QoS 1/2 message ids per client (up to RECENT_IDS), loaded from ingest_dedup the first
 * time this process sees the client (and again after it disconnected, release()), so a redelivery
 * after a restart is recognised too.
 */
export function createRedeliveries(opts: {
  db: () => Kysely<DB>
  /** Database writes fail: no lookups. */
  failing: () => boolean
  /** Writes fail, or acknowledged messages wait in the spool: the database lacks ids this process has. */
  degraded: () => boolean
}) {
  const recent = new Map<string, RecentIds>()
  const loading = new Map<string, Promise<void>>()
  /** Clients to look up again (forget()): they may have published through another instance meanwhile. */
  const stale = new Set<string>()
  /** Clients whose ids the next query looks up, each with what to hand the keys (or the failure) to. */
  const wanted = new Map<string, (keys: RecentKey[] | Error) => void>()
  let querying = false

  /**
   * Looks up the wanted clients in one query, and those wanted meanwhile in the next once it is done: a
   * fleet that connects at once (after a restart, or a hundred new devices) makes a few queries instead of
   * one per device, and leaves the pool's connections to the batch writes. One query per device delayed the
   * first ~200 PUBACKs of 100 new devices at 1,000 msg/s by up to 0.24 s (docs/performance.md, "Where the
   * PUBACK tail comes from").
   */
  const lookUp = (): void => {
    if (querying || wanted.size === 0) return
    const batch = new Map([...wanted].slice(0, LOOKUP_BATCH))
    for (const id of batch.keys()) wanted.delete(id)
    querying = true
    // Bounded like each client's wait: a query that hangs must not hold up the lookups behind it.
    withTimeout(
      Promise.resolve().then(() => recentKeys(opts.db(), [...batch.keys()])),
      LOOKUP_TIMEOUT_MS,
    )
      .then(
        (by) => {
          for (const [id, settle] of batch) settle(by.get(id) ?? [])
        },
        (err: Error) => {
          for (const settle of batch.values()) settle(err)
        },
      )
      .finally(() => {
        querying = false
        lookUp()
      })
  }
  const keysOf = (clientId: string): Promise<RecentKey[]> =>
    new Promise((resolve, reject) => {
      wanted.set(clientId, (k) => (k instanceof Error ? reject(k) : resolve(k)))
      lookUp()
    })

  return {
    /** Remembers a message under its key, with the promise that resolves once it is durable. */
    remember(key: DedupKey, done: Promise<void> | undefined): void {
      let ids = recent.get(key.clientId)
      if (!ids) {
        // Let go between its lookup and now (release(), or the bound on clients): the next message
        // reads the client's ids from the database again, and merges them into these.
        ids = new RecentIds(RECENT_IDS)
        recent.set(key.clientId, ids)
        stale.add(key.clientId)
      }
      // The oldest ids are forgotten. A redelivery follows its original closely, and a client reuses
      // an id only after 65535 others, long after it left this window.
      ids.remember(key.messageId, key.digest, done)
      // Once durable the promise is let go: 100 clients' 1,024 resolved promises would keep ~5 MiB.
      const ring = ids
      if (done) void done.then(() => ring.settled(key.messageId, done))
    },

    /** Loads a client's recent ids from the database once per process; messages wait for it in order. */
    load(clientId: string): Promise<void> | undefined {
      if (recent.has(clientId) && !stale.has(clientId)) return undefined
      stale.delete(clientId)
      // While writes fail the lookup would only add an outage's worth of latency to every ack.
      if (opts.failing()) {
        recent.set(clientId, recent.get(clientId) ?? new RecentIds(RECENT_IDS))
        return undefined
      }
      let pending = loading.get(clientId)
      if (!pending) {
        pending = withTimeout(keysOf(clientId), LOOKUP_TIMEOUT_MS).then(
          (keys) => {
            const ids = recent.get(clientId) ?? new RecentIds(RECENT_IDS)
            for (const k of keys)
              if (!ids.has(k.messageId)) ids.remember(k.messageId, k.digest, undefined)
            recent.set(clientId, ids)
          },
          // Database away: no history to compare with; the message is stored (at-least-once).
          () => void recent.set(clientId, recent.get(clientId) ?? new RecentIds(RECENT_IDS)),
        )
        pending.finally(() => loading.delete(clientId)).catch(() => undefined)
        loading.set(clientId, pending)
        if (recent.size + loading.size > 50_000) recent.clear()
      }
      return pending
    },

    /** A message this process has already stored (or is storing) under the same id and content. */
    duplicateOf(key: DedupKey): { done: Promise<void> | undefined } | undefined {
      return recent.get(key.clientId)?.match(key.messageId, key.digest)
    },

    /** The client's ids are looked up again with its next QoS 1/2 message (see Ingest.forget). */
    forget(clientId: string): void {
      if (recent.has(clientId)) stale.add(clientId)
    },

    /**
     * The client disconnected: its ids are let go if every one is in the database (none still being
     * written, none only in the spool); its next QoS 1/2 message reads them back. Clients that come and
     * go under new ids (a load generator's, mqtt.js's random ones) each kept up to 1,024 ids for the
     * process's life, 3.0 MiB per 100 (docs/performance.md, "Memory after a burst").
     */
    release(clientId: string): void {
      const ids = recent.get(clientId)
      if (!ids || loading.has(clientId) || opts.degraded() || ids.hasPending()) return
      recent.delete(clientId)
      stale.delete(clientId)
    },

    /** How many clients' ids are in memory. */
    get clients(): number {
      return recent.size
    },
  }
}
