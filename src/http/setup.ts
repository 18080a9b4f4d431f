import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import * as v from 'valibot'
import type { Logger } from '../log/index.js'
import { addressKey, remoteAddress } from '../util/address.js'
import { createFailureLimiter } from '../util/failure-limiter.js'
import { errorRef, json, ref, type OpenApiPart } from '../util/openapi.js'
import { readJson, validate } from '../util/validate.js'
import { KEY_NAME, SCOPES } from './admin-keys.js'

/**
 * First run without an admin key (PocketBase's installer link): at start paku logs a one-time link
 * `…/ui/#setup=TOKEN`; the page posts the token to `POST /api/setup` with a name and gets the first
 * admin key (every scope), shown once.
 *
 * The token is 256 random bits, kept only as its SHA-256 and compared in constant time. It travels in
 * the URL's fragment, which browsers never send to a server (so no access log or Referer carries it),
 * and in the request body. It is single use: the first request that presents it takes it before
 * anything is awaited, so concurrent requests cannot both pass; the key itself is created in one
 * transaction only while no key exists (several instances each log their own link). It expires after
 * `ttlMs`, and is void as soon as any admin key exists: PAKU_ADMIN_API_KEY (then there is no link at
 * all) or a named key made by `paku key create` or an earlier setup.
 */

/** How long the link stays valid: a first start is attended; a later one prints a new link. */
export const SETUP_TTL_MS = 30 * 60_000

const SetupBody = v.strictObject({
  token: v.pipe(
    v.string('token must be a string'),
    v.maxLength(128, 'token is too long'),
    v.description('from the link `/ui/#setup=TOKEN`'),
  ),
  name: v.pipe(
    v.string('name must be a string'),
    v.regex(
      KEY_NAME,
      'name must be 1–64 characters: a-z 0-9 _ . - (starting with a letter or digit)',
    ),
    v.description("the key's name"),
  ),
})

const error = (description: string) => ({ description, content: json(ref('Error')) })

/** POST /api/setup in the OpenAPI document of /api/v1; its body is the schema the route validates with. */
export const setupOpenApi: OpenApiPart = {
  operations: [
    {
      method: 'post',
      path: '/api/setup',
      summary:
        'First run: create the first admin key (every scope) with the one-time token of the setup link paku logs at start while no admin key exists',
      open: true,
      body: SetupBody,
      responses: {
        '201': {
          description: 'The key, shown once',
          content: json({
            type: 'object',
            properties: {
              name: { type: 'string' },
              scopes: { type: 'array', items: { type: 'string' } },
              key: { type: 'string' },
            },
          }),
        },
        '400': errorRef('BadRequest'),
        '401': error('Wrong token'),
        '409': error('A revoked key has that name'),
        '410': error('No link open: a key exists, or the link was used or has expired'),
        '429': error('Too many wrong tokens from this address'),
      },
    },
  ],
}

export type SetupOptions = {
  log: Logger
  /** Whether any admin key exists (configured or named and not revoked). */
  hasKey: () => Promise<boolean>
  /** Creates the first key with every scope unless a key exists by then (then undefined). */
  createFirstKey: (name: string) => Promise<string | undefined>
  /** Where the UI is reached, e.g. http://127.0.0.1:8080; asked when the link is made. */
  baseUrl: () => string
  now?: () => number
  ttlMs?: number
  maxFailuresPerMinute?: number
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest()

/** The setup link's service (start opens and logs the link when no key exists) and its `POST /api/setup` route. */
export function createSetup(opts: SetupOptions) {
  const now = opts.now ?? Date.now
  const ttlMs = opts.ttlMs ?? SETUP_TTL_MS
  const limiter = createFailureLimiter({ maxFailures: opts.maxFailuresPerMinute ?? 10, now })
  let armed: { digest: Buffer; expiresAt: number } | undefined

  const gone = (message: string) => new HTTPException(410, { message })
  const routes = new Hono()
  routes.post('/api/setup', async (c) => {
    c.header('cache-control', 'no-store')
    const ip = addressKey(remoteAddress(c.env))
    const wait = limiter.blockedFor(ip)
    if (wait > 0) {
      c.header('retry-after', String(Math.ceil(wait / 1000)))
      throw new HTTPException(429, {
        message: `too many failed attempts; retry in ${Math.ceil(wait / 1000)} s`,
      })
    }
    const body = validate(
      SetupBody,
      await readJson(c.req, 'body must be JSON: {"token": …, "name": …}'),
    )
    if (!armed)
      throw gone('no setup link is open: an admin key exists, or the link was used or has expired')
    if (now() >= armed.expiresAt) {
      armed = undefined
      throw gone(
        'the setup link has expired; restart paku for a new one (or use `paku key create`)',
      )
    }
    if (await opts.hasKey()) {
      armed = undefined
      throw gone('an admin key exists already; log in with it')
    }
    // Re-read after the await: another request may have taken the token meanwhile.
    const current = armed
    if (!current)
      throw gone('no setup link is open: an admin key exists, or the link was used or has expired')
    if (!timingSafeEqual(digest(body.token), current.digest)) {
      limiter.fail(ip)
      throw new HTTPException(401, { message: 'wrong setup token' })
    }
    // Taken synchronously, before anything else is awaited: a second request with it finds nothing.
    armed = undefined
    let key: string | undefined
    try {
      key = await opts.createFirstKey(body.name)
    } catch (err) {
      // The transaction failed as a whole and created nothing: the link stays usable until it expires.
      armed = current
      if ((err as { code?: string }).code === '23505')
        throw new HTTPException(409, {
          message: `a key named ${body.name} exists already (revoked); choose another name`,
        })
      throw err
    }
    if (key === undefined) throw gone('an admin key exists already; log in with it')
    opts.log.info('first admin key created through the setup link', { name: body.name })
    return c.json({ name: body.name, scopes: [...SCOPES], key }, 201)
  })

  return {
    name: 'setup',
    routes,
    /** Opens the link when no admin key exists and logs it: the one line meant for the operator. */
    async start(): Promise<void> {
      if (await opts.hasKey()) return
      const token = randomBytes(32).toString('base64url')
      armed = { digest: digest(token), expiresAt: now() + ttlMs }
      opts.log.warn(
        `no admin key yet: open this link within ${Math.round(ttlMs / 60_000)} minutes to create one (it works once)`,
        {
          url: `${opts.baseUrl()}/ui/#setup=${token}`,
        },
      )
    },
    async stop(): Promise<void> {
      armed = undefined
    },
    /** Whether a link is open (for /health: the admin API has no key yet). */
    open: (): boolean => armed !== undefined && now() < armed.expiresAt,
  }
}

export type Setup = ReturnType<typeof createSetup>
