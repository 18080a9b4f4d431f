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
  await db
    .insertInto('admin_keys')
    .values({ name, key_sha256: sha256(key), scopes })
    .execute()
  return key
}

/** Whether a named key that is not revoked exists (the configured PAKU_ADMIN_API_KEY is not in the table). */
export async function hasNamedKey(db: Kysely<DB>): Promise<boolean> {
  const key = await db
    .selectFrom('admin_keys')
    .select('name')
    .where('revoked_at', 'is', null)
    .limit(1)
    .executeTakeFirst()
  return key !== undefined
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
  const r = await db
    .updateTable('admin_keys')
    .set({ revoked_at: sql<Date>`NOW()` })
    .where('name', '=', name)
    .where('revoked_at', 'is', null)
    .executeTakeFirst()
  return r.numUpdatedRows > 0n
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
  return db
    .selectFrom('admin_keys')
    .select(['name', 'scopes', 'created_at', 'last_used_at', 'revoked_at'])
    .orderBy('name')
    .execute()
}

/** The key's name and scopes when it is valid and not revoked; records its use. */
export async function lookupKey(
  db: Kysely<DB>,
  key: string,
): Promise<{ name: string; scopes: Scope[] } | undefined> {
  const row = await db
    .updateTable('admin_keys')
    .set({ last_used_at: sql<Date>`NOW()` })
    .where('key_sha256', '=', sha256(key))
    .where('revoked_at', 'is', null)
    .returning(['name', 'scopes'])
    .executeTakeFirst()
  // The column holds only names from SCOPES: createKey and the routes accept nothing else.
  return row && { name: row.name, scopes: row.scopes as Scope[] }
}
