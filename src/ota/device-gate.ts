import type { Context, MiddlewareHandler } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { addressKey, remoteAddress } from '../util/address.js'
import { createFailureLimiter } from '../util/failure-limiter.js'
import { pullTokenDevice } from './pull-tokens.js'
import { createRateLimiter } from './rate-limit.js'
import type { RoutesOptions } from './route-parts.js'

/** Unknown pull tokens one address may send per minute before the device routes refuse it for a minute. */
const MAX_BAD_TOKENS_PER_MINUTE = 10

/**
 * What stands in front of the check and update routes: a per-address request budget (an IPv6 /64,
 * shared by check and update, with and without the prefix) and the pull-token check.
 */
export function createDeviceGate(o: Pick<RoutesOptions, 'config' | 'db' | 'now'>) {
  const { config } = o
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
    const deviceId = await pullTokenDevice(o.db(), token)
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
  return { limited, authenticated }
}

export type DeviceGate = ReturnType<typeof createDeviceGate>
