import { createHash, timingSafeEqual } from 'node:crypto'
import type { MiddlewareHandler } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { createFailureLimiter } from '../util/failure-limiter.js'

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest()

/**
 * Guards /api/admin/*: the key comes as `X-API-Key` (the old OTA service's header, which the firmware
 * CI workflow sends) or `Authorization: Bearer`. Compared in constant time over fixed-length digests;
 * never logged. With no key configured the admin API is off (503), as in the old service.
 */
export function adminAuth(apiKey: string, maxFailuresPerMinute = 10): MiddlewareHandler {
  const expected = apiKey ? digest(apiKey) : undefined
  const limiter = createFailureLimiter({ maxFailures: maxFailuresPerMinute })
  return async (c, next) => {
    if (!expected) throw new HTTPException(503, { message: 'admin API disabled: set PAKU_ADMIN_API_KEY' })
    const ip = remoteAddress(c.env)
    const wait = limiter.blockedFor(ip)
    if (wait > 0) {
      c.header('retry-after', String(Math.ceil(wait / 1000)))
      throw new HTTPException(429, { message: `too many failed attempts; retry in ${Math.ceil(wait / 1000)} s` })
    }
    const bearer = c.req.header('authorization')?.match(/^Bearer\s+(.+)$/i)?.[1]
    const given = c.req.header('x-api-key') ?? bearer
    if (!given || !timingSafeEqual(digest(given), expected)) {
      limiter.fail(ip)
      throw new HTTPException(401, { message: 'missing or wrong API key' })
    }
    limiter.succeed(ip)
    await next()
  }
}

/** The peer address from @hono/node-server's bindings ('unknown' in app.request() tests). */
function remoteAddress(env: unknown): string {
  const incoming = (env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming
  return incoming?.socket?.remoteAddress ?? 'unknown'
}
