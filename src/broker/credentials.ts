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
  username: string,
  password: string,
  role: Role,
): Promise<void> {
  const hash = await hashPassword(password)
  await sql`INSERT INTO mqtt_credentials (username, password_hash, role) VALUES (${username}, ${hash}, ${role})
    ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = EXCLUDED.role`.execute(
    db,
  )
}

/** Whether a username has its own credential (the shared credential may not claim such a client id). */
export async function hasCredential(db: Kysely<DB>, username: string): Promise<boolean> {
  const r = await sql<{
    ok: number
  }>`SELECT 1 AS ok FROM mqtt_credentials WHERE username = ${username}`.execute(db)
  return r.rows.length > 0
}

export async function removeCredential(db: Kysely<DB>, username: string): Promise<boolean> {
  const r = await sql`DELETE FROM mqtt_credentials WHERE username = ${username}`.execute(db)
  return Number(r.numAffectedRows ?? 0) > 0
}

export async function listCredentials(
  db: Kysely<DB>,
): Promise<Array<{ username: string; role: Role; created_at: Date; last_used_at: Date | null }>> {
  const r = await sql<{
    username: string
    role: Role
    created_at: Date
    last_used_at: Date | null
  }>`
    SELECT username, role, created_at, last_used_at FROM mqtt_credentials ORDER BY username`.execute(
    db,
  )
  return r.rows
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
  const r = await sql<{
    password_hash: string
    role: Role
  }>`SELECT password_hash, role FROM mqtt_credentials WHERE username = ${username}`.execute(db)
  const row = r.rows[0]
  const ok = await verifyPassword(password, row?.password_hash ?? UNKNOWN_USER_HASH)
  if (!row || !ok) return undefined
  await sql`UPDATE mqtt_credentials SET last_used_at = NOW() WHERE username = ${username}`.execute(
    db,
  )
  return row.role
}
