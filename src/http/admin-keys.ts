import { createHash, randomBytes } from 'node:crypto'
import { sql, type Kysely } from 'kysely'
import type { DB } from '../db/index.js'
import { SCOPES, type Scope } from '../util/scope.js'

export { SCOPES, type Scope } from '../util/scope.js'

export const KEY_NAME = /^[a-z0-9][a-z0-9_.-]{0,63}$/

const sha256 = (key: string) => createHash('sha256').update(key, 'utf8').digest('hex')

/** Creates a key and returns it; it is shown once and only its hash is stored. */
export async function createKey(db: Kysely<DB>, name: string, scopes: Scope[]): Promise<string> {
  const key = `paku_${randomBytes(32).toString('base64url')}`
  await sql`INSERT INTO admin_keys (name, key_sha256, scopes) VALUES (${name}, ${sha256(key)}, ${scopes}::text[])`.execute(
    db,
  )
  return key
}

/** Whether a named key that is not revoked exists (the configured PAKU_ADMIN_API_KEY is not in the table). */
export async function hasNamedKey(db: Kysely<DB>): Promise<boolean> {
  const r = await sql<{
    one: number
  }>`SELECT 1 AS one FROM admin_keys WHERE revoked_at IS NULL LIMIT 1`.execute(db)
  return r.rows.length > 0
}

/**
 * Creates the first admin key (every scope) for the setup link, unless a key that is not revoked exists
 * by then: undefined in that case. One transaction under an advisory lock, so two setup requests (on
 * two instances, say) cannot both create a first key.
 */
export async function createFirstKey(db: Kysely<DB>, name: string): Promise<string | undefined> {
  return db.transaction().execute(async (tx) => {
    await sql`SELECT pg_advisory_xact_lock(hashtext('paku.first-admin-key'))`.execute(tx)
    if (await hasNamedKey(tx)) return undefined
    return createKey(tx, name, [...SCOPES])
  })
}

export async function revokeKey(db: Kysely<DB>, name: string): Promise<boolean> {
  const r =
    await sql`UPDATE admin_keys SET revoked_at = NOW() WHERE name = ${name} AND revoked_at IS NULL`.execute(
      db,
    )
  return Number(r.numAffectedRows ?? 0) > 0
}

export async function listKeys(db: Kysely<DB>): Promise<
  Array<{
    name: string
    scopes: string[]
    created_at: Date
    last_used_at: Date | null
    revoked_at: Date | null
  }>
> {
  const r = await sql<{
    name: string
    scopes: string[]
    created_at: Date
    last_used_at: Date | null
    revoked_at: Date | null
  }>`
    SELECT name, scopes, created_at, last_used_at, revoked_at FROM admin_keys ORDER BY name`.execute(
    db,
  )
  return r.rows
}

/** The key's name and scopes when it is valid and not revoked; records its use. */
export async function lookupKey(
  db: Kysely<DB>,
  key: string,
): Promise<{ name: string; scopes: Scope[] } | undefined> {
  const r = await sql<{ name: string; scopes: Scope[] }>`
    UPDATE admin_keys SET last_used_at = NOW() WHERE key_sha256 = ${sha256(key)} AND revoked_at IS NULL RETURNING name, scopes`.execute(
    db,
  )
  return r.rows[0]
}
