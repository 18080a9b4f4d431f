import { sql, type Kysely } from 'kysely'
import type { DB, Row } from '../db/index.js'

/**
 * What the broker knows about its clients, for the console: each connection of this instance (since
 * when, from where, who, which subscriptions) and each persistent session (kept in PostgreSQL while
 * its client is away, with what is queued for it). With several instances a client connected to
 * another one shows as its session only.
 */

export type ClientView = {
  client_id: string
  connected: boolean
  connected_at: string | null
  address: string | null
  principal: string | null
  kind: string | null
  username: string | null
  rights: string | null
  bridge: boolean
  clean: boolean | null
  keepalive_seconds: number | null
  protocol_version: number | null
  subscriptions: Array<{ topic: string; qos: number }>
  session: { persistent: boolean; last_seen: string | null } | null
  queued: { messages: number; bytes: number }
}

/** One connection as the broker holds it. */
export type LiveClient = {
  id: string
  connectedAt: number | undefined
  address: string | undefined
  principal: string | undefined
  kind: string | undefined
  username: string | null | undefined
  rights: string | undefined
  bridge: boolean
  clean: boolean
  keepaliveSeconds: number | undefined
  version: number | undefined
  subscriptions: Array<{ topic: string; qos: number }>
}

export type ClientFilter = {
  clientId?: string | undefined
  deviceId?: string | undefined
  limit: number
}

/**
 * Whether a client belongs to a device: it uses the device id as client id, it logged in as that
 * device, or it subscribes to one of the device's topics (`site/system/DEVICE/…`: a heater's command
 * topic, which is how an emulator or a gateway with its own client id is found).
 */
export function belongsTo(
  c: {
    id: string
    principal?: string | null | undefined
    subscriptions: ReadonlyArray<{ topic: string }>
  },
  deviceId: string,
): boolean {
  return (
    c.id === deviceId ||
    c.principal === `device:${deviceId}` ||
    c.subscriptions.some((s) => s.topic.split('/')[2] === deviceId)
  )
}

/**
 * The connections (this instance's, from aedes) and then the persistent sessions of clients that are
 * away (from mqtt_sessions and mqtt_subscriptions) that pass the filter, at most `limit`.
 */
export async function listClients(o: {
  db: Kysely<DB>
  live: Iterable<LiveClient>
  session: (clientId: string) => { persistent: boolean; lastSeen: number } | undefined
  queueOf: (clientId: string) => { messages: number; bytes: number }
  filter: ClientFilter
}): Promise<ClientView[]> {
  const { filter } = o
  const out: ClientView[] = []
  const connected = new Set<string>()
  for (const c of o.live) {
    connected.add(c.id)
    if (filter.clientId !== undefined && c.id !== filter.clientId) continue
    if (filter.deviceId !== undefined && !belongsTo(c, filter.deviceId)) continue
    const s = o.session(c.id)
    out.push({
      client_id: c.id,
      connected: true,
      connected_at: c.connectedAt === undefined ? null : new Date(c.connectedAt).toISOString(),
      address: c.address ?? null,
      principal: c.principal ?? null,
      kind: c.kind ?? null,
      username: c.username ?? null,
      rights: c.rights ?? null,
      bridge: c.bridge,
      clean: c.clean,
      keepalive_seconds: c.keepaliveSeconds ?? null,
      protocol_version: c.version ?? null,
      subscriptions: c.subscriptions,
      session: s
        ? { persistent: s.persistent, last_seen: new Date(s.lastSeen).toISOString() }
        : null,
      queued: o.queueOf(c.id),
    })
    if (out.length >= filter.limit) return out
  }
  // Persistent sessions whose client is not connected here: from the database, with their subscriptions.
  const d = filter.deviceId ?? null
  const r = await sql<
    Row<'mqtt_sessions', 'client_id' | 'principal' | 'kind' | 'last_seen'> & {
      subscriptions: Array<{ topic: string; qos: number }>
    }
  >`
    SELECT m.client_id, m.principal, m.kind, m.last_seen,
      COALESCE((SELECT jsonb_agg(jsonb_build_object('topic', s.topic, 'qos', COALESCE((s.options ->> 'qos')::int, 0)) ORDER BY s.topic)
        FROM mqtt_subscriptions s WHERE s.client_id = m.client_id), '[]') AS subscriptions
    FROM mqtt_sessions m
    WHERE (${filter.clientId ?? null}::text IS NULL OR m.client_id = ${filter.clientId ?? null}::text)
      AND (${d}::text IS NULL OR m.client_id = ${d}::text OR m.principal = 'device:' || ${d}::text
        OR EXISTS (SELECT 1 FROM mqtt_subscriptions s WHERE s.client_id = m.client_id AND split_part(s.topic, '/', 3) = ${d}::text))
    ORDER BY m.last_seen DESC LIMIT ${filter.limit + connected.size}`.execute(o.db)
  for (const row of r.rows) {
    if (connected.has(row.client_id)) continue
    out.push({
      client_id: row.client_id,
      connected: false,
      connected_at: null,
      address: null,
      principal: row.principal,
      kind: row.kind,
      username: null,
      rights: null,
      bridge: false,
      clean: false,
      keepalive_seconds: null,
      protocol_version: null,
      subscriptions: row.subscriptions,
      session: { persistent: true, last_seen: row.last_seen.toISOString() },
      queued: o.queueOf(row.client_id),
    })
    if (out.length >= filter.limit) break
  }
  return out
}
