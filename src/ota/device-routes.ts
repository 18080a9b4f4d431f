/**
 * The OTA device routes: open (devices carry no admin key), also under ota.routePrefix for a proxy that
 * keeps /ota. The check and update routes are rate-limited per address and trust a request only as far
 * as it proves itself (pull-trust.ts).
 */
import { Hono, type Context } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { validate } from '../util/validate.js'
import { createDeviceGate, type DeviceGate } from './device-gate.js'
import { imageResponse } from './download.js'
import { deviceIdFromMac, parseUpdateHeaders } from './pull.js'
import { admitChecked, admitPolled, requestToken } from './pull-trust.js'
import { DeviceId } from './requests.js'
import { required, slug, type RoutesOptions } from './route-parts.js'
import * as store from './store.js'
import { SLUG } from './versions.js'

/** A release's image as the response, streamed from the database and counted once it went out. */
type Stream = (c: Context, release: store.Release) => Response

/** The device routes; see createOtaRoutes for the whole set. */
export function createDeviceRoutes(o: RoutesOptions): Hono {
  const routes = new Hono()
  const gate = createDeviceGate(o)
  const stream: Stream = (c, release) =>
    imageResponse({
      req: c.req,
      release,
      read: (offset, length) => store.readImage(o.db(), { releaseId: release.id, offset, length }),
      onServed: (bytes, partial) => {
        o.counters.downloads++
        if (partial) o.counters.downloadsPartial++
        o.counters.downloadBytes += bytes
      },
    })
  for (const prefix of o.config.routePrefix ? ['', o.config.routePrefix] : ['']) {
    routes.get(`${prefix}/api/firmware/download/:version`, (c) => download(o, c, stream))
    // Arduino HTTPUpdate / ESP8266httpUpdate: httpUpdate.update(client, "http://host/api/firmware/update?device_model=…&device_id=…&token=…")
    routes.get(`${prefix}/api/firmware/update`, gate.limited, (c) =>
      pullUpdate({ o, gate, c, stream }),
    )
    // The old service's JSON check (docs/compatibility.md, "The old routes"), kept for the examples that
    // use it.
    routes.get(`${prefix}/api/firmware/check`, gate.limited, (c) => check(o, gate, c))
  }
  return routes
}

/** GET /api/firmware/download/:version: a release's image by version (and model). */
async function download(o: RoutesOptions, c: Context, stream: Stream): Promise<Response> {
  const db = () => o.db()
  const version = c.req.param('version') ?? ''
  const model = c.req.query('device_model')
  if (!SLUG.test(version) || (model !== undefined && !SLUG.test(model)))
    throw new HTTPException(404, { message: 'Firmware version not found' })
  let release: store.Release | undefined
  if (model !== undefined) release = await store.getRelease(db(), model, version)
  else {
    const all = await store.releasesByVersion(db(), version)
    // The old service picked an arbitrary model here; serving one model's image to another bricks nothing only by luck.
    if (all.length > 1)
      throw new HTTPException(409, {
        message: `version ${version} exists for several models (${all.map((r) => r.device_model).join(', ')}); add ?device_model=`,
      })
    release = all[0]
  }
  if (!release) throw new HTTPException(404, { message: 'Firmware version not found' })
  if (!(await store.hasImage(db(), release.id)))
    throw new HTTPException(404, { message: 'Firmware file not found' })
  return stream(c, release)
}

/** GET /api/firmware/update: an HTTPUpdate check-in, answered with the image or a 304 and its reason. */
async function pullUpdate({
  o,
  gate,
  c,
  stream,
}: {
  o: RoutesOptions
  gate: DeviceGate
  c: Context
  stream: Stream
}): Promise<Response> {
  const db = () => o.db()
  o.counters.pullChecks++
  const model = slug(c.req.query('device_model'), 'device_model')
  const h = parseUpdateHeaders((n) => c.req.header(n))
  if ('error' in h) throw new HTTPException(400, { message: h.error })
  const given = c.req.query('device_id')
  if (given !== undefined) validate(DeviceId, given)
  const mac = h.staMac as string
  const token = requestToken(c.req.query('token'), c.req.header('authorization'))
  const running =
    h.version ??
    (await store.releaseByHash(db(), model, { md5: h.sketchMd5, sha256: h.sketchSha256 }))
      ?.version ??
    null
  const metadata = {
    protocol: 'http',
    chip_family: h.family,
    free_space: h.freeSpace ?? null,
    sketch_size: h.sketchSize ?? null,
    sketch_md5: h.sketchMd5 ?? null,
    chip_size: h.chipSize ?? null,
    sdk_version: h.sdkVersion ?? null,
  }
  let deviceId: string
  if (token !== undefined) {
    // The token is the device, whatever the MAC says; its MAC and version follow the request.
    deviceId = await gate.authenticated(c, token, given)
    await store.refreshPolledDevice(
      db(),
      { deviceId, model, mac, version: running, metadata },
      { claimMac: true },
    )
  } else {
    deviceId = given ?? (await store.deviceByMac(db(), mac)) ?? deviceIdFromMac(h.family, mac)
    await admitPolled(db(), { deviceId, model, mac, version: running, metadata })
  }
  const notModified = (reason: string) =>
    new Response(null, {
      status: 304,
      headers: { 'x-paku-reason': reason.replace(/[^\x20-\x7e]/g, '?').slice(0, 300) },
    })
  if (h.mode !== 'sketch') return notModified('only application (sketch) images are served')
  const decision = await o.pullDecision({
    deviceId,
    model,
    version: running,
    sha256: h.sketchSha256,
    md5: h.sketchMd5,
    freeSpace: h.freeSpace,
    verified: token !== undefined,
  })
  if ('reason' in decision) return notModified(decision.reason)
  o.counters.pullServed++
  const release = decision.release
  o.log.info('firmware offered to a polling device', {
    deviceId,
    model,
    version: release.version,
    from: running,
    verified: token !== undefined,
  })
  return stream(c, release)
}

/** GET /api/firmware/check: the old JSON answer, from the same rollouts. */
async function check(o: RoutesOptions, gate: DeviceGate, c: Context): Promise<Response> {
  const db = () => o.db()
  const given = validate(DeviceId, required(c.req.query('device_id'), 'device_id'))
  const model = slug(c.req.query('device_model'), 'device_model')
  const current = required(c.req.query('current_version'), 'current_version')
  if (current.length > 64)
    throw new HTTPException(400, { message: 'current_version: at most 64 characters' })
  const token = requestToken(c.req.query('token'), c.req.header('authorization'))
  let deviceId = given
  if (token !== undefined) {
    deviceId = await gate.authenticated(c, token, given)
    await store.refreshCheckedDevice(db(), deviceId, current)
  } else {
    await admitChecked(db(), { deviceId, model, version: current })
  }
  const hit = await o.checkDecision({ deviceId, model, current, verified: token !== undefined })
  if (!hit) {
    const latest = (await store.listReleases(db(), model, 1))[0]
    return c.json({
      update_available: false,
      current_version: current,
      latest_version: latest?.version ?? null,
      download_url: null,
      file_size: null,
      checksum_sha256: null,
      release_notes: null,
    })
  }
  const r = hit.release
  return c.json({
    update_available: true,
    current_version: current,
    latest_version: r.version,
    download_url: o.downloadUrl(r.device_model, r.version),
    file_size: r.file_size,
    checksum_sha256: r.checksum_sha256,
    release_notes: r.release_notes,
  })
}
