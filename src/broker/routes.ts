import { randomBytes } from 'node:crypto'
import { scope } from '../util/scope.js'
import { Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import type { Kysely } from 'kysely'
import * as v from 'valibot'
import type { DB } from '../db/index.js'
import { addCredential, listCredentials, removeCredential, ROLES, USERNAME } from './credentials.js'
import type { ClientFilter, ClientView } from './clients.js'
import type { SensorClaims } from './sensors.js'
import { readJson, validate } from '../util/validate.js'

const NewCredential = v.strictObject({
  username: v.pipe(
    v.string('username must be a string'),
    v.regex(USERNAME, 'username must be 1–128 characters of A-Z a-z 0-9 _ . : -'),
  ),
  password: v.optional(
    v.pipe(
      v.string('password must be a string'),
      v.minLength(8, 'password must be at least 8 characters'),
      v.maxLength(1024, 'password is too long'),
    ),
  ),
  role: v.optional(v.picklist(ROLES, `role must be one of ${ROLES.join(', ')}`), 'device'),
})

const Assignment = v.strictObject({
  device_id: v.pipe(
    v.string('device_id must be a string'),
    v.regex(USERNAME, 'device_id must be 1–128 characters of A-Z a-z 0-9 _ . : -'),
  ),
})
/** A topic level as the sensor key names it: no wildcards or separators. */
const LEVEL = /^[^/+#\u0000-\u001f]{1,128}$/

const ClientsQuery = v.strictObject({
  client_id: v.optional(
    v.pipe(
      v.string(),
      v.minLength(1, 'client_id must not be empty'),
      v.maxLength(256, 'client_id is too long'),
    ),
  ),
  device_id: v.optional(
    v.pipe(
      v.string(),
      v.regex(LEVEL, 'device_id must be one topic level (no / + #), 1–128 characters'),
    ),
  ),
  limit: v.optional(
    v.pipe(
      v.string(),
      v.regex(/^\d{1,4}$/, 'limit must be an integer'),
      v.transform(Number),
      v.minValue(1, 'limit must be at least 1'),
      v.maxValue(1000, 'limit must be at most 1000'),
    ),
  ),
})

/**
 * /api/admin/mqtt/credentials: the same management as `paku device add|list|remove`, over HTTP;
 * /api/admin/mqtt/sensors: which gateway relays which sensor, and moving or releasing a claim;
 * /api/admin/mqtt/clients: connections and persistent sessions, with their subscriptions.
 */
export function brokerRoutes(o: {
  db: () => Kysely<DB>
  claims: SensorClaims
  clients: (filter: ClientFilter) => Promise<ClientView[]>
}): Hono {
  const { db, claims } = o
  const routes = new Hono()
  routes.get('/api/admin/mqtt/clients', scope('read'), async (c) => {
    const q = validate(ClientsQuery, c.req.query())
    return c.json({
      clients: await o.clients({
        clientId: q.client_id,
        deviceId: q.device_id,
        limit: q.limit ?? 200,
      }),
    })
  })
  routes.get('/api/admin/mqtt/credentials', scope('read'), async (c) =>
    c.json({ credentials: await listCredentials(db()) }),
  )
  routes.post('/api/admin/mqtt/credentials', scope('admin'), async (c) => {
    const body = await readJson(
      c.req,
      'body must be JSON: {"username": …, "password"?: …, "role"?: …}',
    )
    const parsed = v.safeParse(NewCredential, body)
    if (!parsed.success)
      throw new HTTPException(400, { message: parsed.issues.map((i) => i.message).join('; ') })
    const password = parsed.output.password ?? randomBytes(18).toString('base64url')
    await addCredential(db(), {
      username: parsed.output.username,
      password,
      role: parsed.output.role,
    })
    // A generated password is returned once; a given one is never echoed.
    return c.json(
      {
        username: parsed.output.username,
        role: parsed.output.role,
        ...(parsed.output.password ? {} : { password }),
      },
      201,
    )
  })
  routes.delete('/api/admin/mqtt/credentials/:username', scope('admin'), async (c) => {
    if (!(await removeCredential(db(), c.req.param('username'))))
      throw new HTTPException(404, { message: `no credential for ${c.req.param('username')}` })
    return c.body(null, 204)
  })

  routes.get('/api/admin/mqtt/sensors', scope('read'), async (c) =>
    c.json({ sensors: await claims.list({ deviceId: c.req.query('device_id') || undefined }) }),
  )
  const sensorKey = (site: string, system: string, sensor: string) => {
    for (const [name, value] of [
      ['site', site],
      ['system', system],
      ['sensor', sensor],
    ] as const) {
      if (!LEVEL.test(value))
        throw new HTTPException(400, { message: `${name}: must be one topic level (no / + #)` })
    }
    if (system !== 'sensors' && system !== 'fridge')
      throw new HTTPException(400, {
        message: 'system: relayed sensors are under sensors or fridge',
      })
    return { site, system, sensor }
  }
  routes.put('/api/admin/mqtt/sensors/:site/:system/:sensor', scope('admin'), async (c) => {
    const k = sensorKey(c.req.param('site'), c.req.param('system'), c.req.param('sensor'))
    const parsed = v.safeParse(
      Assignment,
      await readJson(c.req, 'body must be JSON: {"device_id": …}'),
    )
    if (!parsed.success)
      throw new HTTPException(400, { message: parsed.issues.map((i) => i.message).join('; ') })
    const by = (c.get as (k: string) => unknown)('keyName')
    await claims.assign(k, parsed.output.device_id, typeof by === 'string' ? by : 'admin')
    return c.json({
      sensor: (await claims.list()).find(
        (s) => s.site_id === k.site && s.system === k.system && s.sensor_id === k.sensor,
      ),
    })
  })
  routes.delete('/api/admin/mqtt/sensors/:site/:system/:sensor', scope('admin'), async (c) => {
    const k = sensorKey(c.req.param('site'), c.req.param('system'), c.req.param('sensor'))
    if (!(await claims.release(k)))
      throw new HTTPException(404, { message: `no claim for ${k.site}/${k.system}/${k.sensor}` })
    return c.body(null, 204)
  })
  return routes
}
