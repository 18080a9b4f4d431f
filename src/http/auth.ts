import { createHash, timingSafeEqual } from 'node:crypto'
import type { MiddlewareHandler } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { addressKey, remoteAddress } from '../util/address.js'
import { createFailureLimiter } from '../util/failure-limiter.js'
import { SCOPES, type Scope } from '../util/scope.js'

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest()

export type KeyLookup = (
  key: string,
) => Promise<{ name: string; scopes: readonly Scope[] } | undefined>

/**
 * Checks the key on /api/admin/*, /api/device/* and /api/v1/*: it comes as `X-API-Key` (the old OTA
 * service's header, which the firmware CI workflow sends) or `Authorization: Bearer`. Compared in
 * constant time over fixed-length digests; never logged. With neither a configured key nor a key store
 * the admin API is off (503), as in the old service; `paku serve` always has the store of named keys. What the key may do is each route's own check (util/scope.ts): this
 * puts the key's name and scopes in the context for it.
 *
 * Wrong keys are counted per address (an IPv6 /64 is one address) and a success clears nothing: a key
 * holder's own requests must not reset the count of its guesses at a better key.
 */
export function adminAuth(
  apiKey: string,
  maxFailuresPerMinute = 10,
  lookup?: KeyLookup,
): MiddlewareHandler {
  const expected = apiKey ? digest(apiKey) : undefined
  const limiter = createFailureLimiter({ maxFailures: maxFailuresPerMinute })
  return async (c, next) => {
    if (!expected && !lookup)
      throw new HTTPException(503, {
        message:
          'admin API disabled: set PAKU_ADMIN_API_KEY or create a key with `paku key create`',
      })
    const ip = addressKey(remoteAddress(c.env))
    const wait = limiter.blockedFor(ip)
    if (wait > 0) {
      c.header('retry-after', String(Math.ceil(wait / 1000)))
      throw new HTTPException(429, {
        message: `too many failed attempts; retry in ${Math.ceil(wait / 1000)} s`,
      })
    }
    const bearer = c.req.header('authorization')?.match(/^Bearer\s+(.+)$/i)?.[1]
    const given = c.req.header('x-api-key') ?? bearer
    // The configured key (PAKU_ADMIN_API_KEY, the old OTA_API_KEY's successor) has every scope;
    // named keys from `paku key create` have theirs.
    const named =
      given && expected && timingSafeEqual(digest(given), expected)
        ? { name: 'admin', scopes: SCOPES }
        : given && lookup
          ? await lookup(given)
          : undefined
    const scopes: readonly Scope[] | undefined = named?.scopes
    if (!named || !scopes) {
      limiter.fail(ip)
      throw new HTTPException(401, { message: 'missing or wrong API key' })
    }
    // Recorded as created_by on releases and rollouts; the scopes are for the route's own check.
    c.set('keyName' as never, named.name as never)
    c.set('keyScopes' as never, scopes as never)
    await next()
  }
}
