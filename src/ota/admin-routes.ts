/**
 * The OTA admin routes, under /api/admin behind a key with the route's scope: firmware uploads and
 * releases, rollouts, devices, groups, and the old update-status report the CI workflow posts.
 */
import { Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { scope } from '../util/scope.js'
import { validate } from '../util/validate.js'
import { firmwareRoutes } from './firmware-routes.js'
import { createPullToken, deletePullToken, pullTokenInfo } from './pull-tokens.js'
import {
  DeviceBody,
  DeviceId,
  GroupBody,
  jsonBody,
  MembersBody,
  queryInt,
  UpdateStatusBody,
} from './requests.js'
import { rolloutRoutes } from './rollout-routes.js'
import { deviceActions } from './rollouts.js'
import { keyName, slug, type RoutesOptions } from './route-parts.js'
import * as store from './store.js'

/** The admin routes; see createOtaRoutes for the whole set. */
export function createAdminRoutes(o: RoutesOptions): Hono {
  return new Hono()
    .route('/', firmwareRoutes(o))
    .route('/', rolloutRoutes(o))
    .route('/', deviceRoutes(o))
}

/** Devices, their OTA history and pull tokens, groups, and the old update-status report. */
function deviceRoutes(o: RoutesOptions): Hono {
  const routes = new Hono()
  const db = () => o.db()

  routes.get('/api/admin/devices', scope('read'), async (c) => {
    const model = c.req.query('device_model') || undefined
    const group = c.req.query('group') || undefined
    return c.json({
      devices: await store.listDevices(db(), {
        model,
        group,
        limit: queryInt(c.req.query('limit'), { name: 'limit', def: 50, min: 1, max: 500 }),
      }),
    })
  })
  routes.get('/api/admin/devices/:id', scope('read'), async (c) => {
    const d = await store.getDevice(db(), c.req.param('id'))
    if (!d) throw new HTTPException(404, { message: `no device ${c.req.param('id')}` })
    return c.json({
      device: { ...d, pull_token: (await pullTokenInfo(db(), d.device_id)) ?? null },
    })
  })
  // A device's firmware history: each rollout's action with the time of each step, the update reports
  // (device_update_status) and the OTA events about it. A device that sends only telemetry has none.
  routes.get('/api/admin/devices/:id/ota', scope('read'), async (c) => {
    const id = c.req.param('id')
    if (id.length > 128)
      throw new HTTPException(400, { message: 'device id is longer than 128 characters' })
    const limit = queryInt(c.req.query('limit'), { name: 'limit', def: 50, min: 1, max: 500 })
    const [device, actions, updates, events] = await Promise.all([
      store.getDevice(db(), id),
      deviceActions(db(), id, limit),
      store.listUpdateStatus(db(), { deviceId: id, version: undefined, limit }),
      store.deviceEvents(db(), id, limit),
    ])
    return c.json({ device: device ?? null, actions, updates, events })
  })
  routes.put('/api/admin/devices/:id', scope('admin'), async (c) => {
    const id = validate(DeviceId, c.req.param('id'))
    const b = await jsonBody(c.req, DeviceBody)
    for (const g of b.groups ?? [])
      if (!(await store.groupExists(db(), g)))
        throw new HTTPException(400, { message: `groups: no group ${JSON.stringify(g)}` })
    await store.putDevice(db(), {
      deviceId: id,
      model: b.device_model,
      metadata: b.metadata ?? null,
    })
    for (const g of b.groups ?? []) await store.addMembers(db(), g, [id])
    await o.rolloutChanged()
    return c.json({ device: await store.getDevice(db(), id) })
  })

  // A polling device's pull token: shown once here, only its SHA-256 is kept. Creating one replaces the old one.
  routes.post('/api/admin/devices/:id/pull-token', scope('admin'), async (c) => {
    const id = validate(DeviceId, c.req.param('id'))
    const d = await store.getDevice(db(), id)
    if (!d)
      throw new HTTPException(404, {
        message: `no device ${id}; register it first with PUT /api/admin/devices/${id}`,
      })
    const token = await createPullToken(db(), id)
    if (token === undefined) throw new HTTPException(404, { message: `no device ${id}` })
    o.log.info('pull token created', { deviceId: id, by: keyName(c) })
    return c.json({ device_id: id, token, update_url: o.updateUrl(d.device_model, id, token) }, 201)
  })
  routes.delete('/api/admin/devices/:id/pull-token', scope('admin'), async (c) => {
    const id = c.req.param('id')
    if (!(await deletePullToken(db(), id)))
      throw new HTTPException(404, { message: `device ${id} has no pull token` })
    o.log.info('pull token revoked', { deviceId: id, by: keyName(c) })
    return c.body(null, 204)
  })

  routes.get('/api/admin/groups', scope('read'), async (c) =>
    c.json({ groups: await store.listGroups(db()) }),
  )
  routes.put('/api/admin/groups/:name', scope('admin'), async (c) => {
    const name = slug(c.req.param('name'), 'group name')
    const b = await jsonBody(c.req, GroupBody)
    await store.putGroup(db(), {
      name,
      description: b.description ?? null,
      deviceIds: b.device_ids,
    })
    await o.rolloutChanged()
    return c.json({ group: (await store.listGroups(db())).find((g) => g.name === name) })
  })
  routes.post('/api/admin/groups/:name/devices', scope('admin'), async (c) => {
    const name = c.req.param('name')
    if (!(await store.groupExists(db(), name)))
      throw new HTTPException(404, { message: `no group ${name}` })
    const b = await jsonBody(c.req, MembersBody)
    await store.addMembers(db(), name, b.device_ids)
    await o.rolloutChanged()
    return c.json({ group: (await store.listGroups(db())).find((g) => g.name === name) })
  })
  routes.delete('/api/admin/groups/:name/devices/:id', scope('admin'), async (c) => {
    if (!(await store.removeMember(db(), c.req.param('name'), c.req.param('id'))))
      throw new HTTPException(404, {
        message: `device ${c.req.param('id')} is not in group ${c.req.param('name')}`,
      })
    return c.json({ status: 'ok' })
  })
  routes.delete('/api/admin/groups/:name', scope('admin'), async (c) => {
    if (!(await store.deleteGroup(db(), c.req.param('name'))))
      throw new HTTPException(404, { message: `no group ${c.req.param('name')}` })
    return c.json({ status: 'ok' })
  })

  routes.get('/api/admin/update-status', scope('read'), async (c) => {
    const updates = await store.listUpdateStatus(db(), {
      deviceId: c.req.query('device_id') || undefined,
      version: c.req.query('firmware_version') || undefined,
      limit: queryInt(c.req.query('limit'), { name: 'limit', def: 50, min: 1, max: 500 }),
    })
    return c.json({ updates })
  })

  routes.post('/api/device/:id/update-status', scope('rollout'), async (c) => {
    const id = validate(DeviceId, c.req.param('id'))
    const b = await jsonBody(c.req, UpdateStatusBody)
    await store.reportUpdateStatus(db(), id, b)
    await o.rolloutChanged()
    return c.json({ status: 'ok', message: 'Status reported successfully' })
  })

  return routes
}
