import { randomBytes } from 'node:crypto'
import { Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { Kysely } from 'kysely'
import * as v from 'valibot'
import type { DB } from '../db/index.js'
import { addCredential, listCredentials, removeCredential, ROLES, USERNAME } from './credentials.js'
import { readJson } from '../util/validate.js'

const NewCredential = v.strictObject({
  username: v.pipe(v.string('username must be a string'), v.regex(USERNAME, 'username must be 1–128 characters of A-Z a-z 0-9 _ . : -')),
  password: v.optional(v.pipe(v.string('password must be a string'), v.minLength(8, 'password must be at least 8 characters'), v.maxLength(1024, 'password is too long'))),
  role: v.optional(v.picklist(ROLES, `role must be one of ${ROLES.join(', ')}`), 'device'),
})

/** /api/admin/mqtt/credentials: the same management as `paku device add|list|remove`, over HTTP. */
export function credentialRoutes(db: () => Kysely<DB>): Hono {
  const routes = new Hono()
  routes.get('/api/admin/mqtt/credentials', async (c) => c.json({ credentials: await listCredentials(db()) }))
  routes.post('/api/admin/mqtt/credentials', async (c) => {
    const body = await readJson(c.req, 'body must be JSON: {"username": …, "password"?: …, "role"?: …}')
    const parsed = v.safeParse(NewCredential, body)
    if (!parsed.success) throw new HTTPException(400, { message: parsed.issues.map((i) => i.message).join('; ') })
    const password = parsed.output.password ?? randomBytes(18).toString('base64url')
    await addCredential(db(), parsed.output.username, password, parsed.output.role)
    // A generated password is returned once; a given one is never echoed.
    return c.json({ username: parsed.output.username, role: parsed.output.role, ...(parsed.output.password ? {} : { password }) }, 201)
  })
  routes.delete('/api/admin/mqtt/credentials/:username', async (c) => {
    if (!(await removeCredential(db(), c.req.param('username')))) throw new HTTPException(404, { message: `no credential for ${c.req.param('username')}` })
    return c.body(null, 204)
  })
  return routes
}
