import { createHash, timingSafeEqual } from 'node:crypto'
import type { MiddlewareHandler } from 'hono'
import { HTTPException } from 'hono/http-exception'

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest()

/**
 * Guards /api/admin/*: the key comes as `X-API-Key` (the old OTA service's header, which the firmware
 * CI workflow sends) or `Authorization: Bearer`. Compared in constant time over fixed-length digests;
 * never logged. With no key configured the admin API is off (503), as in the old service.
 */
export function adminAuth(apiKey: string): MiddlewareHandler {
  const expected = apiKey ? digest(apiKey) : undefined
  return async (c, next) => {
    if (!expected) throw new HTTPException(503, { message: 'admin API disabled: set PAKU_ADMIN_API_KEY' })
    const bearer = c.req.header('authorization')?.match(/^Bearer\s+(.+)$/i)?.[1]
    const given = c.req.header('x-api-key') ?? bearer
    if (!given || !timingSafeEqual(digest(given), expected)) throw new HTTPException(401, { message: 'missing or wrong API key' })
    await next()
  }
}
