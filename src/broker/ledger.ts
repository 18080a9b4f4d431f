import type { Config } from '../config/index.js'

export type Quotas = Config['mqtt']['quotas']
export type QuotaKind = keyof Omit<Quotas, 'totalBytes' | 'totalPersistentSessions'>
/** What a refusal was about, as counted in /health and /metrics. */
export const QUOTA_NAMES = [
  'retainedTopics',
  'retainedBytes',
  'persistentSessions',
  'subscriptions',
  'queued',
  'relayedSensors',
  'total',
] as const
export type QuotaName = (typeof QUOTA_NAMES)[number]

/**
 * A session paku keeps track of: every connected client's, and the persistent ones while their client
 * is away. `principal` null marks a session stored before owners were recorded: the next login claims it.
 */
export type SessionEntry = {
  principal: string | null
  kind: QuotaKind | null
  persistent: boolean
  connId: string | null
  lastSeen: number
}

/** The quota kind a principal string (`device:ESP32-…`, `bridge:…`, `shared:…`) belongs to. */
export function kindOf(principal: string | null): QuotaKind | null {
  const prefix = principal?.split(':')[0]
  if (prefix === 'device' || prefix === 'bridge' || prefix === 'service' || prefix === 'anonymous')
    return prefix
  // The shared credential with full rights is what the HA bridge used in the old stack.
  if (prefix === 'shared') return 'bridge'
  return null
}

type Book = {
  quotas: Quotas
  now: () => number
  /** Limits for a kind (createLedger). */
  limits: (kind: QuotaKind | null) => Quotas[QuotaKind]
  /** Counts a refusal and returns its name. */
  refuse: (name: QuotaName) => QuotaName
}

/** Who owns which client id: every connected client's session, and the persistent ones kept. */
function sessionBook({ quotas, now, limits, refuse }: Book) {
  const sessions = new Map<string, SessionEntry>()
  return {
    /** The session recorded for a client id, if any. */
    session: (clientId: string): SessionEntry | undefined => sessions.get(clientId),

    /**
     * Records that `principal` connects as `clientId`, unless another principal holds that client id
     * (connected or in a kept session) or one more persistent session would exceed its quota.
     */
    claim(
      clientId: string,
      s: { principal: string; kind: QuotaKind; persistent: boolean; connId: string },
    ): 'identifier' | 'persistentSessions' | undefined {
      const existing = sessions.get(clientId)
      if (existing && existing.principal !== null && existing.principal !== s.principal)
        return 'identifier'
      if (s.persistent && !existing?.persistent) {
        let mine = 0
        let all = 0
        for (const [id, e] of sessions) {
          if (!e.persistent || id === clientId) continue
          all++
          if (e.principal === s.principal) mine++
        }
        if (mine >= limits(s.kind).persistentSessions || all >= quotas.totalPersistentSessions) {
          refuse('persistentSessions')
          return 'persistentSessions'
        }
      }
      sessions.set(clientId, {
        principal: s.principal,
        kind: s.kind,
        persistent: s.persistent,
        connId: s.connId,
        lastSeen: now(),
      })
      return undefined
    },

    /**
     * The connection `connId` of `clientId` ended: a clean session is forgotten, a persistent one kept
     * (with the time, for expiry). A connection that was already replaced changes nothing.
     */
    release(clientId: string, connId: string): 'forgotten' | 'kept' | undefined {
      const e = sessions.get(clientId)
      if (!e || e.connId !== connId) return undefined
      if (!e.persistent) {
        sessions.delete(clientId)
        return 'forgotten'
      }
      e.connId = null
      e.lastSeen = now()
      return 'kept'
    },

    /** Sets a session as loaded from the database or replicated from another instance. */
    restore(clientId: string, e: SessionEntry | undefined): void {
      if (e) sessions.set(clientId, e)
      else sessions.delete(clientId)
    },

    /** Persistent sessions whose client has been away longer than `hours`. */
    expired(hours: number): string[] {
      const before = now() - hours * 3_600_000
      return [...sessions]
        .filter(([, e]) => e.persistent && e.connId === null && e.lastSeen < before)
        .map(([id]) => id)
    },

    /** The queue limits of a session's owner. */
    queueLimits(clientId: string): { messages: number; bytes: number } {
      const q = limits(sessions.get(clientId)?.kind ?? null)
      return { messages: q.queuedMessages, bytes: q.queuedBytes }
    },

    /** The number of sessions, and of persistent ones. */
    sessionCounts(): { sessions: number; persistentSessions: number } {
      let persistent = 0
      for (const e of sessions.values()) if (e.persistent) persistent++
      return { sessions: sessions.size, persistentSessions: persistent }
    },
  }
}

/** Who owns which retained message, and how many topics and bytes each principal holds. */
function retainedBook({ quotas, limits, refuse }: Book, queuedBytes: () => number) {
  const retained = new Map<string, { owner: string | null; bytes: number }>()
  const owners = new Map<string, { topics: number; bytes: number }>()
  /** Who is about to store a retained message (set when a PUBLISH is authorised, taken when it is stored). */
  const expected = new Map<string, string>()
  let retainedBytes = 0
  const usage = (principal: string) => owners.get(principal) ?? { topics: 0, bytes: 0 }

  return {
    /**
     * Whether `principal` may store `bytes` as the retained message of `topic` (a replacement frees what
     * it replaces). Returns the quota it would break, counted, or undefined; records who stores it.
     */
    checkRetained(r: {
      clientId: string
      principal: string
      kind: QuotaKind
      topic: string
      bytes: number
    }): QuotaName | undefined {
      const { clientId, principal, kind, topic, bytes } = r
      if (bytes > 0) {
        const old = retained.get(topic)
        const mine = old?.owner === principal
        const u = usage(principal)
        const q = limits(kind)
        if (u.topics + (mine ? 0 : 1) > q.retainedTopics) return refuse('retainedTopics')
        if (u.bytes - (mine ? (old?.bytes ?? 0) : 0) + bytes > q.retainedBytes)
          return refuse('retainedBytes')
        if (retainedBytes + queuedBytes() - (old?.bytes ?? 0) + bytes > quotas.totalBytes)
          return refuse('total')
      }
      if (expected.size > 10_000) expected.clear()
      expected.set(`${clientId}\u0000${topic}`, principal)
      return undefined
    },

    /** The owner checkRetained recorded for this client's message on this topic, if any. */
    takeExpectedOwner(clientId: string, topic: string): string | undefined {
      const key = `${clientId}\u0000${topic}`
      const owner = expected.get(key)
      expected.delete(key)
      return owner
    },

    /** A retained message was stored (bytes > 0) or removed (0). */
    storeRetained(topic: string, owner: string | null, bytes: number): void {
      const old = retained.get(topic)
      if (old) {
        retainedBytes -= old.bytes
        if (old.owner !== null) {
          const u = usage(old.owner)
          u.topics--
          u.bytes -= old.bytes
          if (u.topics <= 0) owners.delete(old.owner)
        }
        retained.delete(topic)
      }
      if (bytes === 0) return
      retained.set(topic, { owner, bytes })
      retainedBytes += bytes
      if (owner !== null) {
        const u = usage(owner)
        owners.set(owner, { topics: u.topics + 1, bytes: u.bytes + bytes })
      }
    },

    /** Retained usage of one principal (for tests and the API). */
    retainedOf: (principal: string): { topics: number; bytes: number } => ({ ...usage(principal) }),

    /** The number of retained topics and their bytes. */
    retainedTotals: () => ({ retainedTopics: retained.size, retainedBytes }),
  }
}

/**
 * The broker's accounts: who owns which client id, how much retained and queued state each login
 * holds, and the refusals. Pure bookkeeping in memory, filled by the persistence at start-up and kept in
 * step by the broker (logins, publishes) and the persistence (what it stores and drops).
 */
export function createLedger(opts: { quotas: Quotas; now: () => number }) {
  const { quotas, now } = opts
  const refused: Record<QuotaName, number> = {
    retainedTopics: 0,
    retainedBytes: 0,
    persistentSessions: 0,
    subscriptions: 0,
    queued: 0,
    relayedSensors: 0,
    total: 0,
  }
  let queuedBytes = 0

  /** Limits for a kind; a session of unknown owner (stored before owners were kept) gets the bridge's, which was the old stack's only persistent session. */
  const limits = (kind: QuotaKind | null) => quotas[kind ?? 'bridge']

  function refuse(name: QuotaName): QuotaName {
    refused[name]++
    return name
  }

  const book: Book = { quotas, now, limits, refuse }
  const { sessionCounts, ...sessions } = sessionBook(book)
  const { takeExpectedOwner, retainedTotals, ...retained } = retainedBook(book, () => queuedBytes)

  return {
    ...sessions,
    ...retained,

    /** Subscriptions a client of this kind may hold. */
    subscriptionLimit: (kind: QuotaKind): number => limits(kind).subscriptions,
    relayedSensorLimit: (kind: QuotaKind): number => limits(kind).relayedSensors,

    /** The owner recorded by checkRetained for this client's message on this topic (null: the broker's own). */
    takeRetainedOwner(clientId: string | undefined, topic: string): string | null {
      if (clientId === undefined) return null
      return takeExpectedOwner(clientId, topic) ?? sessions.session(clientId)?.principal ?? null
    },

    /** Whether `bytes` more of queued messages fit in the broker's total. */
    totalFits: (bytes: number): boolean =>
      retainedTotals().retainedBytes + queuedBytes + bytes <= quotas.totalBytes,
    /** Queued bytes added (positive) or taken (negative) by the persistence. */
    queued(delta: number): void {
      queuedBytes += delta
    },

    refuse,

    stats(): {
      sessions: number
      persistentSessions: number
      retainedTopics: number
      retainedBytes: number
      queuedBytes: number
      refused: Record<QuotaName, number>
    } {
      return { ...sessionCounts(), ...retainedTotals(), queuedBytes, refused: { ...refused } }
    },
  }
}

export type Ledger = ReturnType<typeof createLedger>
