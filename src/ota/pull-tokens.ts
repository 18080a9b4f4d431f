import { createHash, randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import type { Row } from '../db/index.js'
import type { Db } from './store.js'

/**
 * Per-device pull tokens (sql/0016_ota_pull_tokens.sql). A polling device sends its token as `?token=`
 * (an HTTPUpdate client can only set a URL) or `Authorization: Bearer`; a valid one authenticates the
 * request as that device. Only the SHA-256 is stored: the token is shown once, when it is created.
 */
export const PULL_TOKEN_PREFIX = 'pkd_'

const sha256 = (token: string) => createHash('sha256').update(token, 'utf8').digest('hex')

/**
 * Whether a device row (aliased `d`) is one that only unauthenticated pull or check requests know:
 * registered over HTTP, never heard over MQTT (ingest sets site_id from its status), and without a
 * pull token. Such a device's reports cannot be told apart from anyone else's.
 */
export const UNPROVEN_DEVICE = sql`(COALESCE(d.metadata->>'registered_via', '') = 'http' AND d.site_id IS NULL
  AND NOT EXISTS (SELECT 1 FROM device_pull_tokens t WHERE t.device_id = d.device_id))`

/** Creates or replaces a device's token and returns it; undefined when there is no such device. */
export async function createPullToken(db: Db, deviceId: string): Promise<string | undefined> {
  const token = `${PULL_TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`
  const r = await sql<Row<'device_pull_tokens', 'device_id'>>`
    INSERT INTO device_pull_tokens (device_id, token_sha256)
    SELECT device_id, ${sha256(token)} FROM devices WHERE device_id = ${deviceId}
    ON CONFLICT (device_id) DO UPDATE SET token_sha256 = EXCLUDED.token_sha256, created_at = NOW(), last_used_at = NULL
    RETURNING device_id`.execute(db)
  return r.rows.length > 0 ? token : undefined
}

export async function deletePullToken(db: Db, deviceId: string): Promise<boolean> {
  const r = await db
    .deleteFrom('device_pull_tokens')
    .where('device_id', '=', deviceId)
    .executeTakeFirst()
  return r.numDeletedRows > 0n
}

/** The device a token belongs to (looked up by its hash, which is indexed), recording its use; undefined when none. */
export async function pullTokenDevice(db: Db, token: string): Promise<string | undefined> {
  if (!token.startsWith(PULL_TOKEN_PREFIX) || token.length > 200) return undefined
  const row = await db
    .updateTable('device_pull_tokens')
    .set({ last_used_at: sql`NOW()` })
    .where('token_sha256', '=', sha256(token))
    .returning('device_id')
    .executeTakeFirst()
  return row?.device_id
}

/** When a device's token was made and last used (never the token), for the admin API. */
export async function pullTokenInfo(
  db: Db,
  deviceId: string,
): Promise<{ created_at: Date; last_used_at: Date | null } | undefined> {
  return db
    .selectFrom('device_pull_tokens')
    .select(['created_at', 'last_used_at'])
    .where('device_id', '=', deviceId)
    .executeTakeFirst()
}

/** What an unauthenticated pull may do with a device id: nothing known about it, or what proves it. */
export type PullTrust =
  { exists: false } | { exists: true; viaHttp: boolean; hasToken: boolean; mac: string | null }

export async function pullTrust(db: Db, deviceId: string): Promise<PullTrust> {
  const r = await sql<Row<'devices', 'mac_address'> & { via_http: boolean; has_token: boolean }>`
    SELECT d.mac_address, (COALESCE(d.metadata->>'registered_via', '') = 'http' AND d.site_id IS NULL) AS via_http,
      EXISTS (SELECT 1 FROM device_pull_tokens t WHERE t.device_id = d.device_id) AS has_token
    FROM devices d WHERE d.device_id = ${deviceId}`.execute(db)
  const row = r.rows[0]
  return row
    ? { exists: true, viaHttp: row.via_http, hasToken: row.has_token, mac: row.mac_address }
    : { exists: false }
}
