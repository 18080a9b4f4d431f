import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto'
import { sql, type Kysely } from 'kysely'
import type { DB } from '../db/index.js'

export const ROLES = ['device', 'bridge', 'service'] as const
export type Role = (typeof ROLES)[number]

// scrypt at N=2^14, r=8 (OWASP's minimum for scrypt): ~50 ms per CONNECT on a small VM, paid once per connection.
const PARAMS = { N: 16_384, r: 8, p: 1 }
const KEY_LEN = 32

function derive(password: string, salt: Buffer, o: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, KEY_LEN, { ...o, maxmem: 64 * 1024 * 1024 }, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  )
}

/** `scrypt$N$r$p$salt$hash`, base64url parts. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16)
  const key = await derive(password, salt, PARAMS)
  return `scrypt$${PARAMS.N}$${PARAMS.r}$${PARAMS.p}$${salt.toString('base64url')}$${key.toString('base64url')}`
}

/** Constant-time check of a password against a stored hash; false for any malformed hash. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split('$')
  if (scheme !== 'scrypt' || !salt || !hash) return false
  const expected = Buffer.from(hash, 'base64url')
  const key = await derive(password, Buffer.from(salt, 'base64url'), {
    N: Number(n),
    r: Number(r),
    p: Number(p),
  })
  return key.length === expected.length && timingSafeEqual(key, expected)
}

/** A device id / username as the firmware makes them (`ESP32-AABBCCDD`), or a bridge/service name. */
export const USERNAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/

export async function addCredential(
  db: Kysely<DB>,
  { username, password, role }: { username: string; password: string; role: Role },
): Promise<void> {
  const hash = await hashPassword(password)
  await db
    .insertInto('mqtt_credentials')
    .values({ username, password_hash: hash, role })
    .onConflict((oc) =>
      oc.column('username').doUpdateSet((eb) => ({
        password_hash: eb.ref('excluded.password_hash'),
        role: eb.ref('excluded.role'),
      })),
    )
    .execute()
}

/** Whether a username has its own credential (the shared credential may not claim such a client id). */
export async function hasCredential(db: Kysely<DB>, username: string): Promise<boolean> {
  const row = await db
    .selectFrom('mqtt_credentials')
    .select('username')
    .where('username', '=', username)
    .executeTakeFirst()
  return row !== undefined
}

export async function removeCredential(db: Kysely<DB>, username: string): Promise<boolean> {
  const r = await db
    .deleteFrom('mqtt_credentials')
    .where('username', '=', username)
    .executeTakeFirst()
  return r.numDeletedRows > 0n
}

export async function listCredentials(
  db: Kysely<DB>,
): Promise<Array<{ username: string; role: Role; created_at: Date; last_used_at: Date | null }>> {
  const rows = await db
    .selectFrom('mqtt_credentials')
    .select(['username', 'role', 'created_at', 'last_used_at'])
    .orderBy('username')
    .execute()
  // The column's CHECK (sql/0008_mqtt_credentials.sql) admits only ROLES.
  return rows.map((r) => ({ ...r, role: r.role as Role }))
}

/**
 * A well-formed hash of no password anyone knows. An unknown username is checked against it so that
 * its refusal costs the same scrypt as a wrong password: the time of an answer does not tell which
 * usernames exist.
 */
const UNKNOWN_USER_HASH = `scrypt$${PARAMS.N}$${PARAMS.r}$${PARAMS.p}$AAAAAAAAAAAAAAAAAAAAAA$${'A'.repeat(43)}`

/** The role for a username/password pair, or undefined; records the use. */
export async function checkCredential(
  db: Kysely<DB>,
  username: string,
  password: string,
): Promise<Role | undefined> {
  const row = await db
    .selectFrom('mqtt_credentials')
    .select(['password_hash', 'role'])
    .where('username', '=', username)
    .executeTakeFirst()
  const ok = await verifyPassword(password, row?.password_hash ?? UNKNOWN_USER_HASH)
  if (!row || !ok) return undefined
  await db
    .updateTable('mqtt_credentials')
    .set({ last_used_at: sql<Date>`NOW()` })
    .where('username', '=', username)
    .execute()
  // The column's CHECK admits only ROLES.
  return row.role as Role
}
