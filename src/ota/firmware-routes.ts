/** The firmware admin routes: uploads (curl, and the old multipart form) and releases. */
import { Hono, type Context } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { scope } from '../util/scope.js'
import { inspectImage } from './image.js'
import { queryBool, queryInt } from './requests.js'
import { keyName, optionalText, releaseView, slug, type RoutesOptions } from './route-parts.js'
import * as store from './store.js'
import { parseVersion, SLUG } from './versions.js'

/** Firmware uploads, releases, what paku read from each image. */
export function firmwareRoutes(o: RoutesOptions): Hono {
  return new Hono().route('/', uploadRoutes(o)).route('/', releaseRoutes(o))
}

/** An upload's fields, checked for form, before the image itself is looked at. */
type Upload = {
  version: string
  model: string
  data: Uint8Array
  releaseNotes: string | null
  changelog: string | null
  minVersion: string | null
  isSigned: boolean
}

/** The old multipart upload and the raw PUT. */
function uploadRoutes(o: RoutesOptions): Hono {
  const routes = new Hono()

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
    const release = await storeUpload(o, c, {
      version: slug(field('version'), 'version'),
      model: slug(field('device_model'), 'device_model'),
      data: new Uint8Array(await file.arrayBuffer()),
      releaseNotes: optionalText(field('release_notes'), 'release_notes'),
      changelog: optionalText(field('changelog'), 'changelog'),
      minVersion: optionalText(field('min_version'), 'min_version', 64),
      isSigned: queryBool(field('is_signed'), 'is_signed') ?? false,
    })
    return c.json(uploadedView(release))
  })

  // Raw body: curl -T firmware.bin -H 'X-API-Key: …' …/api/admin/firmware/{model}/{version}
  routes.put('/api/admin/firmware/:model/:version', scope('upload'), async (c) => {
    const release = await storeUpload(o, c, {
      version: slug(c.req.param('version'), 'version'),
      model: slug(c.req.param('model'), 'device_model'),
      data: new Uint8Array(await c.req.arrayBuffer()),
      releaseNotes: optionalText(c.req.query('release_notes'), 'release_notes'),
      changelog: optionalText(c.req.query('changelog'), 'changelog'),
      minVersion: optionalText(c.req.query('min_version'), 'min_version', 64),
      isSigned: queryBool(c.req.query('is_signed'), 'is_signed') ?? false,
    })
    return c.json(uploadedView(release), 201)
  })

  return routes
}

/** The answer to an upload: the old service's fields (the CI workflow reads them), then the release. */
function uploadedView(release: store.Release) {
  return {
    status: 'ok',
    message: 'Firmware uploaded successfully',
    version: release.version,
    file_size: release.file_size,
    checksum_sha256: release.checksum_sha256,
    checksum_md5: release.checksum_md5,
    release: releaseView(release),
  }
}

/** Checks an uploaded image and stores it as a new release; a refusal is counted, logged and thrown. */
async function storeUpload(o: RoutesOptions, c: Context, f: Upload): Promise<store.Release> {
  const { config, counters } = o
  const db = () => o.db()
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
    o.log.info('firmware uploaded for a model no device has reported and no release used before', {
      model: f.model,
      version: f.version,
    })
  return release
}

/** Listing, showing and deleting releases. */
function releaseRoutes(o: RoutesOptions): Hono {
  const routes = new Hono()
  const db = () => o.db()

  routes.get('/api/admin/firmware/releases', scope('read'), async (c) => {
    const model = c.req.query('device_model') || undefined
    if (model !== undefined) slug(model, 'device_model')
    const releases = await store.listReleases(
      db(),
      model,
      queryInt(c.req.query('limit'), { name: 'limit', def: 10, min: 1, max: 100 }),
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
