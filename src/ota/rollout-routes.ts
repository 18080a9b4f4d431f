/** The rollout admin routes: create (also the old route), list, inspect, and the actions on one. */
import { Hono, type Context } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { scope } from '../util/scope.js'
import { validate } from '../util/validate.js'
import { ActionBody, jsonBody, queryInt, RolloutBody, RolloutStatusQuery } from './requests.js'
import {
  applyAction,
  countsOf,
  createRollout,
  currentPercentage,
  getRollout,
  listRollouts,
  rolloutDevices,
  stagesOf,
  DEVICE_STATES,
  type Action,
} from './rollouts.js'
import { keyName, type RoutesOptions } from './route-parts.js'
import * as store from './store.js'

/** Rollouts: create, list, inspect, act on. */
export function rolloutRoutes(o: RoutesOptions): Hono {
  return new Hono().route('/', createRoutes(o)).route('/', stateRoutes(o))
}

/**
 * The old workflow names a rollout after the build (`lilygo-t-display-s3-heater`) while the devices
 * report their board (`lilygo-t-display-s3`), and picked devices by that family: the old route targets
 * both, unless the request says which models.
 */
const familyOf = (model: string) => model.replace(/-heater(-emu)?$/, '')

/** A rollout for the API: its row, its stages and where it stands, and its devices by state. */
async function rolloutView(db: store.Db, id: string) {
  const r = await getRollout(db, id)
  if (!r) throw new HTTPException(404, { message: `no rollout ${id}` })
  const counts = (await countsOf(db, [id])).get(id)
  const unverified = (await countsOf(db, [id], { verified: false })).get(id)
  return {
    ...r,
    id: Number(r.id),
    stages: stagesOf(r),
    current_percentage: currentPercentage(r),
    counts,
    unverified_counts: unverified,
  }
}

/** POST /api/admin/rollouts, and the old POST /api/admin/rollout/create. */
function createRoutes(o: RoutesOptions): Hono {
  const routes = new Hono()
  const db = () => o.db()

  async function create(c: Context, legacy = false) {
    const b = await jsonBody(c.req, RolloutBody)
    const release = await store.getRelease(db(), b.device_model, b.firmware_version)
    if (!release)
      throw new HTTPException(404, {
        message: `no firmware ${b.device_model} ${b.firmware_version}: upload it before creating the rollout`,
      })
    if (!(await store.hasImage(db(), release.id)))
      throw new HTTPException(409, {
        message: `firmware ${b.device_model} ${b.firmware_version} has no stored image; run \`paku firmware import DIR\` with the old firmware volume`,
      })
    const f = b.target_filter ?? {}
    const groups = [...new Set([...(f.groups ?? []), ...(f.group ? [f.group] : [])])]
    for (const g of groups)
      if (!(await store.groupExists(db(), g)))
        throw new HTTPException(400, {
          message: `target_filter.groups: no group ${JSON.stringify(g)}`,
        })
    const deviceIds = [...new Set([...(f.device_ids ?? []), ...(b.target_device_ids ?? [])])]
    const filter = {
      ...(deviceIds.length > 0 ? { device_ids: deviceIds } : {}),
      ...(f.mac_addresses && f.mac_addresses.length > 0 ? { mac_addresses: f.mac_addresses } : {}),
      ...(groups.length > 0 ? { groups } : {}),
      ...(f.device_models && f.device_models.length > 0
        ? { device_models: f.device_models }
        : legacy && familyOf(b.device_model) !== b.device_model
          ? { device_models: [b.device_model, familyOf(b.device_model)] }
          : {}),
    }
    const created = await createRollout(db(), {
      name: b.name,
      release,
      targetType: b.target_type,
      targetFilter: Object.keys(filter).length > 0 ? filter : null,
      percentage: b.rollout_percentage,
      stages: b.stages ?? null,
      autoAdvance: b.auto_advance,
      successThresholdPercent: b.success_threshold_percent,
      errorThresholdCount: b.error_threshold.count ?? null,
      errorThresholdPercent: b.error_threshold.percent ?? null,
      errorThresholdMinExecuted: b.error_threshold.min_executed ?? 1,
      allowDowngrade: b.allow_downgrade ?? b.force ?? false,
      active: b.is_active,
      createdBy: keyName(c),
    })
    if (!created)
      throw new HTTPException(409, {
        message: `a rollout named ${JSON.stringify(b.name)} exists already`,
      })
    o.log.info('rollout created', {
      name: b.name,
      model: b.device_model,
      version: b.firmware_version,
      target: b.target_type,
      superseded: created.superseded,
    })
    await o.rolloutChanged(created.rollout.id)
    const view = await rolloutView(db(), created.rollout.id)
    return c.json({
      status: 'ok',
      message: 'Rollout created successfully',
      id: Number(created.rollout.id),
      rollout: view,
      superseded: created.superseded,
    })
  }
  routes.post('/api/admin/rollout/create', scope('rollout'), (c) => create(c, true))
  routes.post('/api/admin/rollouts', scope('rollout'), (c) => create(c))

  return routes
}

/** Listing and inspecting rollouts, their devices, and the admin actions on one. */
function stateRoutes(o: RoutesOptions): Hono {
  const routes = new Hono()
  const db = () => o.db()

  routes.get('/api/admin/rollouts', scope('read'), async (c) => {
    const status = validate(RolloutStatusQuery, c.req.query('status') || undefined)
    const model = c.req.query('device_model') || undefined
    const list = await listRollouts(db(), {
      status,
      model,
      limit: queryInt(c.req.query('limit'), { name: 'limit', def: 50, min: 1, max: 500 }),
    })
    const counts = await countsOf(
      db(),
      list.map((r) => r.id),
    )
    const unverified = await countsOf(
      db(),
      list.map((r) => r.id),
      { verified: false },
    )
    return c.json({
      rollouts: list.map((r) => ({
        ...r,
        id: Number(r.id),
        stages: stagesOf(r),
        current_percentage: currentPercentage(r),
        counts: counts.get(r.id),
        unverified_counts: unverified.get(r.id),
      })),
    })
  })

  routes.get('/api/admin/rollouts/:id', scope('read'), async (c) =>
    c.json({ rollout: await rolloutView(db(), c.req.param('id')) }),
  )

  routes.get('/api/admin/rollouts/:id/devices', scope('read'), async (c) => {
    const id = c.req.param('id')
    if (!(await getRollout(db(), id))) throw new HTTPException(404, { message: `no rollout ${id}` })
    const state = c.req.query('state') || undefined
    if (state !== undefined && !(DEVICE_STATES as readonly string[]).includes(state))
      throw new HTTPException(400, { message: `state: must be one of ${DEVICE_STATES.join(', ')}` })
    return c.json({ devices: await rolloutDevices(db(), id, state) })
  })

  for (const action of [
    'pause',
    'resume',
    'cancel',
    'advance',
    'retry',
  ] as const satisfies readonly Action[]) {
    routes.post(`/api/admin/rollouts/:id/${action}`, scope('rollout'), async (c) => {
      const id = c.req.param('id')
      if (!(await getRollout(db(), id)))
        throw new HTTPException(404, { message: `no rollout ${id}` })
      const body: { percentage?: number | undefined } =
        action === 'advance' ? await jsonBody(c.req, ActionBody) : {}
      const result = await applyAction(db(), { id, action, percentage: body.percentage })
      if ('error' in result) throw new HTTPException(409, { message: result.error })
      o.log.info('rollout changed', { rollout: result.rollout.name, action })
      await o.rolloutChanged(id)
      return c.json({ status: 'ok', rollout: await rolloutView(db(), id) })
    })
  }

  return routes
}
