import { sql, type Kysely } from 'kysely'
import type { Logger } from '../log/index.js'

/**
 * Tables Grafana's role may not read: credentials, and what may hold secrets (firmware images can carry
 * Wi-Fi credentials compiled in; pull tokens; command payloads; the broker's retained and queued
 * messages and wills, where a retained config/set may hold secrets; spooled batches). No dashboard
 * reads them. A new table holding secrets belongs here.
 */
export const GRAFANA_HIDDEN = [
  'mqtt_credentials',
  'admin_keys',
  'firmware_images',
  'device_pull_tokens',
  'device_commands',
  'ingest_spool_batches',
  'mqtt_retained',
  'mqtt_sessions',
  'mqtt_subscriptions',
  'mqtt_incoming',
  'mqtt_outgoing',
  'mqtt_wills',
  'mqtt_sensor_claims',
] as const

/**
 * Gives the read-only role paku_grafana (made by migration 0010 where paku may create roles, else by
 * the operator) its rights: SELECT on every table but GRAFANA_HIDDEN. At every start, not once: a role
 * an operator creates after paku's first start gets its rights at the next, and a table added by a
 * later migration is covered. Without the role, nothing happens.
 */
export async function grantGrafanaRole(db: Kysely<any>, log: Logger): Promise<void> {
  const { rows } = await sql<{
    n: number
  }>`SELECT count(*)::int AS n FROM pg_roles WHERE rolname = 'paku_grafana'`.execute(db)
  if ((rows[0]?.n ?? 0) === 0) return
  try {
    await db.transaction().execute(async (tx) => {
      const {
        rows: [database],
      } = await sql<{ name: string }>`SELECT current_database() AS name`.execute(tx)
      await sql`GRANT CONNECT ON DATABASE ${sql.id(database?.name ?? '')} TO paku_grafana`.execute(
        tx,
      )
      await sql`GRANT USAGE ON SCHEMA public TO paku_grafana`.execute(tx)
      await sql`GRANT SELECT ON ALL TABLES IN SCHEMA public TO paku_grafana`.execute(tx)
      await sql`REVOKE ALL ON ${sql.join(GRAFANA_HIDDEN.map((t) => sql.table(t)))} FROM paku_grafana`.execute(
        tx,
      )
    })
  } catch (err) {
    log.warn(
      "could not grant paku_grafana its rights (paku's role must own the database and its tables)",
      { err: (err as Error).message },
    )
  }
}
