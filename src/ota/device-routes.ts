/**
 * The OTA device routes: open (devices carry no admin key), also under ota.routePrefix for a proxy that
 * keeps /ota. The check and update routes are rate-limited per address and trust a request only as far
 * as it proves itself (pull-trust.ts).
 */
import { Hono, type Context, type MiddlewareHandler } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { imageResponse } from './download.js'
import { deviceIdFromMac, parseUpdateHeaders } from './pull.js'
import { DeviceId } from './requests.js'
import * as store from './store.js'
import { addressKey, remoteAddress } from '../util/address.js'
import { createFailureLimiter } from '../util/failure-limiter.js'
import { validate } from '../util/validate.js'
import { SLUG } from './versions.js'
import { pullTokenDevice } from './pull-tokens.js'
import { admitChecked, admitPolled, requestToken } from './pull-trust.js'
import { createRateLimiter } from './rate-limit.js'
import { required, slug, type RoutesOptions } from './route-parts.js'

/** Unknown pull tokens one address may send per minute before the device routes refuse it for a minute. */
const MAX_BAD_TOKENS_PER_MINUTE = 10

/** The device routes; see createOtaRoutes for the whole set. */
export function createDeviceRoutes(o: RoutesOptions): Hono {
  const routes = new Hono()
  const { config, counters } = o
  const db = () => o.db()

  // ---- device-facing (no admin key: devices have none) ------------------------------------------

  // One budget per address (an IPv6 /64) across check and update, with and without the prefix.
  const perAddress = createRateLimiter({
    limit: config.deviceRequestsPerMinute,
    ...(o.now ? { now: o.now } : {}),
  })
  const badTokens = createFailureLimiter({
    maxFailures: MAX_BAD_TOKENS_PER_MINUTE,
    ...(o.now ? { now: o.now } : {}),
  })
  const tooMany = (c: Context, waitMs: number, what: string): never => {
    const seconds = Math.max(1, Math.ceil(waitMs / 1000))
    c.header('retry-after', String(seconds))
    throw new HTTPException(429, { message: `${what}; retry in ${seconds} s` })
  }
  const limited: MiddlewareHandler = async (c, next) => {
    const key = addressKey(remoteAddress(c.env))
    const blocked = badTokens.blockedFor(key)
    if (blocked > 0) tooMany(c, blocked, 'too many unknown pull tokens')
    const wait = perAddress.hit(key)
    if (wait > 0)
      tooMany(
        c,
        wait,
        `more than ${config.deviceRequestsPerMinute} device requests a minute from this address`,
      )
    await next()
  }
  /**
   * The device a request's pull token authenticates: the token is the device, so a `device_id` naming
   * another one is a 403. An unknown token is a 401 and counts against the address (a valid one does not
   * clear the count: one device's own token must not pay for guesses at others).
   */
  const authenticated = async (
    c: Context,
    token: string,
    givenId: string | undefined,
  ): Promise<string> => {
    const deviceId = await pullTokenDevice(db(), token)
    if (deviceId === undefined) {
      badTokens.fail(addressKey(remoteAddress(c.env)))
      throw new HTTPException(401, { message: 'unknown pull token' })
    }
    if (givenId !== undefined && givenId !== deviceId)
      throw new HTTPException(403, {
        message: `this pull token belongs to another device than ${givenId}`,
      })
    return deviceId
  }

  for (const prefix of config.routePrefix ? ['', config.routePrefix] : ['']) {
    routes.get(`${prefix}/api/firmware/download/:version`, async (c) => {
      const version = c.req.param('version')
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
      const id = release.id
      return imageResponse(
        c.req,
        release,
        (off, len) => store.readImage(db(), id, off, len),
        (bytes, partial) => served(bytes, partial),
      )
    })

    // Arduino HTTPUpdate / ESP8266httpUpdate: httpUpdate.update(client, "http://host/api/firmware/update?device_model=…&device_id=…&token=…")
    routes.get(`${prefix}/api/firmware/update`, limited, async (c) => {
      counters.pullChecks++
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
        deviceId = await authenticated(c, token, given)
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
      counters.pullServed++
      const release = decision.release
      o.log.info('firmware offered to a polling device', {
        deviceId,
        model,
        version: release.version,
        from: running,
        verified: token !== undefined,
      })
      return imageResponse(
        c.req,
        release,
        (off, len) => store.readImage(db(), release.id, off, len),
        (bytes, partial) => served(bytes, partial),
      )
    })

    // The old service's JSON check (docs/compatibility.md, "The old routes"), kept for the examples that
    // use it.
    routes.get(`${prefix}/api/firmware/check`, limited, async (c) => {
      const given = validate(DeviceId, required(c.req.query('device_id'), 'device_id'))
      const model = slug(c.req.query('device_model'), 'device_model')
      const current = required(c.req.query('current_version'), 'current_version')
      if (current.length > 64)
        throw new HTTPException(400, { message: 'current_version: at most 64 characters' })
      const token = requestToken(c.req.query('token'), c.req.header('authorization'))
      let deviceId = given
      if (token !== undefined) {
        deviceId = await authenticated(c, token, given)
        await store.refreshCheckedDevice(db(), deviceId, current)
      } else {
        await admitChecked(db(), deviceId, model, current)
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
    })
  }

  function served(bytes: number, partial: boolean): void {
    counters.downloads++
    if (partial) counters.downloadsPartial++
    counters.downloadBytes += bytes
  }

  return routes
}
