/**
 * The OTA admin routes, under /api/admin behind a key with the route's scope: firmware uploads and
 * releases, rollouts, devices, groups, and the old update-status report the CI workflow posts.
 */
import { Hono, type Context } from 'hono'
import { scope } from '../util/scope.js'
import { HTTPException } from 'hono/http-exception'
import { inspectImage } from './image.js'
import {
  ActionBody,
  DeviceBody,
  DeviceId,
  GroupBody,
  jsonBody,
  MembersBody,
  queryBool,
  queryInt,
  RolloutBody,
  RolloutStatusQuery,
  UpdateStatusBody,
} from './requests.js'
import {
  applyAction,
  countsOf,
  createRollout,
  currentPercentage,
  deviceActions,
  getRollout,
  listRollouts,
  rolloutDevices,
  stagesOf,
  DEVICE_STATES,
  type Action,
} from './rollouts.js'
import * as store from './store.js'
import { validate } from '../util/validate.js'
import { parseVersion, SLUG } from './versions.js'
import { createPullToken, deletePullToken, pullTokenInfo } from './pull-tokens.js'
import { keyName, optionalText, releaseView, slug, type RoutesOptions } from './route-parts.js'

/** The admin routes; see createOtaRoutes for the whole set. */
export function createAdminRoutes(o: RoutesOptions): Hono {
  return new Hono()
    .route('/', firmwareRoutes(o))
    .route('/', rolloutRoutes(o))
    .route('/', deviceRoutes(o))
}

/** Firmware uploads (curl, and the old multipart form), releases, what paku read from each image. */
function firmwareRoutes(o: RoutesOptions): Hono {
  const routes = new Hono()
  const { config, counters } = o
  const db = () => o.db()

  async function storeUpload(
    c: Context,
    f: {
      version: string
      model: string
      data: Uint8Array
      releaseNotes: string | null
      changelog: string | null
      minVersion: string | null
      isSigned: boolean
    },
  ) {
    const refuse = (status: 400 | 404 | 409 | 413, message: string, data?: unknown): never => {
      counters.uploadsRejected++
      o.log.warn('firmware upload refused', { model: f.model, version: f.version, reason: message })
      if (data === undefined) throw new HTTPException(status, { message })
      throw new HTTPException(status, { res: c.json({ status, message, data }, status) })
    }
    // Versions are semver or opaque (the old workflow's test-YYYYMMDD-HHMMSS, {commit7}-{date}); opaque
    // ones are ordered by upload time, as the old service ordered all of them.
    if (f.minVersion !== null && !SLUG.test(f.minVersion))
      refuse(400, 'min_version: must be 1–64 letters, digits, . _ + or -')
    const image = inspectImage(f.data, config.maxFirmwareBytes)
    if ('error' in image) refuse(f.data.length > config.maxFirmwareBytes ? 413 : 400, image.error)
    const info = image as Exclude<typeof image, { error: string }>
    // A first build for a model no device has reported yet (a new board) is stored like any other.
    const newModel = !(await store.isKnownModel(db(), f.model))
    const result = await store.insertRelease(db(), { ...f, image: info, createdBy: keyName(c) })
    if ('conflict' in result) {
      const same = result.conflict.checksum_sha256 === info.sha256
      refuse(
        409,
        `firmware ${f.model} ${f.version} already exists${same ? ' with identical content' : ' with different content'}; releases are immutable: upload a new version (or delete this one if no rollout uses it)`,
        {
          existing: releaseView(result.conflict),
          identical: same,
        },
      )
    }
    const release = (result as { release: store.Release }).release
    counters.uploads++
    o.log.info('firmware uploaded', {
      model: f.model,
      version: f.version,
      bytes: info.size,
      sha256: info.sha256,
      chip: info.chip,
      semver: parseVersion(f.version) !== undefined,
    })
    if (newModel)
      o.log.info(
        'firmware uploaded for a model no device has reported and no release used before',
        { model: f.model, version: f.version },
      )
    return release
  }

  // The old multipart upload (docs/compatibility.md, "The old routes"): fields in the query (as the CI
  // workflow sends them) or the form.
  routes.post('/api/admin/firmware/upload', scope('upload'), async (c) => {
    const type = c.req.header('content-type') ?? ''
    if (!/^multipart\/form-data/i.test(type)) {
      throw new HTTPException(415, {
        message:
          'expected multipart/form-data with a "file" field (curl -F file=@firmware.bin), or PUT the raw image to /api/admin/firmware/{device_model}/{version}',
      })
    }
    let form: Record<string, string | File | (string | File)[]>
    try {
      form = await c.req.parseBody({ all: true })
    } catch (err) {
      throw new HTTPException(400, {
        message: `malformed multipart body: ${(err as Error).message}`,
      })
    }
    const field = (name: string): string | undefined => {
      const q = c.req.query(name)
      if (q !== undefined) return q
      const f = form[name]
      if (Array.isArray(f))
        throw new HTTPException(400, { message: `${name}: given more than once` })
      return typeof f === 'string' ? f : undefined
    }
    const file = form.file
    if (Array.isArray(file))
      throw new HTTPException(400, { message: 'file: send one file per upload' })
    if (!(file instanceof File))
      throw new HTTPException(400, {
        message: 'file: the multipart field "file" with the firmware image is missing',
      })
    const release = await storeUpload(c, {
      version: slug(field('version'), 'version'),
      model: slug(field('device_model'), 'device_model'),
      data: new Uint8Array(await file.arrayBuffer()),
      releaseNotes: optionalText(field('release_notes'), 'release_notes'),
      changelog: optionalText(field('changelog'), 'changelog'),
      minVersion: optionalText(field('min_version'), 'min_version', 64),
      isSigned: queryBool(field('is_signed'), 'is_signed') ?? false,
    })
    return c.json({
      status: 'ok',
      message: 'Firmware uploaded successfully',
      version: release.version,
      file_size: release.file_size,
      checksum_sha256: release.checksum_sha256,
      checksum_md5: release.checksum_md5,
      release: releaseView(release),
    })
  })

  // Raw body: curl -T firmware.bin -H 'X-API-Key: …' …/api/admin/firmware/{model}/{version}
  routes.put('/api/admin/firmware/:model/:version', scope('upload'), async (c) => {
    const release = await storeUpload(c, {
      version: slug(c.req.param('version'), 'version'),
      model: slug(c.req.param('model'), 'device_model'),
      data: new Uint8Array(await c.req.arrayBuffer()),
      releaseNotes: optionalText(c.req.query('release_notes'), 'release_notes'),
      changelog: optionalText(c.req.query('changelog'), 'changelog'),
      minVersion: optionalText(c.req.query('min_version'), 'min_version', 64),
      isSigned: queryBool(c.req.query('is_signed'), 'is_signed') ?? false,
    })
    return c.json(
      {
        status: 'ok',
        message: 'Firmware uploaded successfully',
        version: release.version,
        file_size: release.file_size,
        checksum_sha256: release.checksum_sha256,
        checksum_md5: release.checksum_md5,
        release: releaseView(release),
      },
      201,
    )
  })

  routes.get('/api/admin/firmware/releases', scope('read'), async (c) => {
    const model = c.req.query('device_model') || undefined
    if (model !== undefined) slug(model, 'device_model')
    const releases = await store.listReleases(
      db(),
      model,
      queryInt(c.req.query('limit'), 'limit', 10, 1, 100),
    )
    return c.json({ releases: releases.map(releaseView) })
  })

  routes.get('/api/admin/firmware/:model/:version', scope('read'), async (c) => {
    const r = await store.getRelease(db(), c.req.param('model'), c.req.param('version'))
    if (!r)
      throw new HTTPException(404, {
        message: `no firmware ${c.req.param('model')} ${c.req.param('version')}`,
      })
    return c.json({
      release: {
        ...releaseView(r),
        stored: await store.hasImage(db(), r.id),
        download_url: o.downloadUrl(r.device_model, r.version),
      },
    })
  })

  routes.delete('/api/admin/firmware/:model/:version', scope('admin'), async (c) => {
    const { deleted, blockedBy } = await store.deleteRelease(
      db(),
      c.req.param('model'),
      c.req.param('version'),
    )
    if (blockedBy.length > 0)
      throw new HTTPException(409, {
        message: `firmware is delivered by live rollouts (${blockedBy.join(', ')}); cancel them first`,
      })
    if (!deleted)
      throw new HTTPException(404, {
        message: `no firmware ${c.req.param('model')} ${c.req.param('version')}`,
      })
    o.log.info('firmware deleted', { model: c.req.param('model'), version: c.req.param('version') })
    return c.json({ status: 'ok', message: 'Firmware deleted' })
  })

  return routes
}

/** Rollouts: create (also the old route), list, inspect, and the actions on one. */
function rolloutRoutes(o: RoutesOptions): Hono {
  const routes = new Hono()
  const db = () => o.db()

  /**
   * The old workflow names a rollout after the build (`lilygo-t-display-s3-heater`) while the devices
   * report their board (`lilygo-t-display-s3`), and picked devices by that family: the old route targets
   * both, unless the request says which models.
   */
  const familyOf = (model: string) => model.replace(/-heater(-emu)?$/, '')

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
    const view = await rolloutView(created.rollout.id)
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

  async function rolloutView(id: string) {
    const r = await getRollout(db(), id)
    if (!r) throw new HTTPException(404, { message: `no rollout ${id}` })
    const counts = (await countsOf(db(), [id])).get(id)
    const unverified = (await countsOf(db(), [id], { verified: false })).get(id)
    return {
      ...r,
      id: Number(r.id),
      stages: stagesOf(r),
      current_percentage: currentPercentage(r),
      counts,
      unverified_counts: unverified,
    }
  }

  routes.get('/api/admin/rollouts', scope('read'), async (c) => {
    const status = validate(RolloutStatusQuery, c.req.query('status') || undefined)
    const model = c.req.query('device_model') || undefined
    const list = await listRollouts(db(), {
      status,
      model,
      limit: queryInt(c.req.query('limit'), 'limit', 50, 1, 500),
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
    c.json({ rollout: await rolloutView(c.req.param('id')) }),
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
      const body = action === 'advance' ? await jsonBody(c.req, ActionBody) : {}
      const result = await applyAction(db(), id, action, body)
      if ('error' in result) throw new HTTPException(409, { message: result.error })
      o.log.info('rollout changed', { rollout: result.rollout.name, action })
      await o.rolloutChanged(id)
      return c.json({ status: 'ok', rollout: await rolloutView(id) })
    })
  }

  return routes
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
        limit: queryInt(c.req.query('limit'), 'limit', 50, 1, 500),
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
    const limit = queryInt(c.req.query('limit'), 'limit', 50, 1, 500)
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
    await store.putDevice(db(), id, b.device_model, b.metadata ?? null)
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
    await store.putGroup(db(), name, b.description ?? null, b.device_ids)
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
      limit: queryInt(c.req.query('limit'), 'limit', 50, 1, 500),
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
