import type { AddressInfo } from 'node:net'
import { serve, type ServerType } from '@hono/node-server'
import { Hono } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { HTTPException } from 'hono/http-exception'
import type { Config } from '../config/index.js'
import type { Logger } from '../log/index.js'
import { adminAuth, type KeyLookup } from './auth.js'
import { errorHandler, notFound } from './errors.js'

export { errorHandler, notFound, type ErrorBody } from './errors.js'
export { createKey, listKeys, lookupKey, revokeKey, SCOPES, KEY_NAME, type Scope } from './admin-keys.js'

export type HealthStatus = 'ok' | 'degraded' | 'down'
export type HealthReport = { status: HealthStatus } & Record<string, unknown>

export type HttpOptions = {
  config: Config['http']
  log: Logger
  /** Assembled by app.ts from every subsystem's health(). */
  health: () => Promise<HealthReport>
  /** Routes of other subsystems, mounted at `/`; everything under /api/admin/ needs the admin key. */
  routes?: ReadonlyArray<Hono>
  /** Finds a named key (`paku key create`); app.ts passes the database lookup. */
  lookupKey?: KeyLookup
}

/** The Hono app: /health, the subsystems' routes and one JSON error shape. Exposed for app.request() tests. */
export function buildHttpApp(opts: Omit<HttpOptions, 'config'> & { adminApiKey: string; maxAuthFailuresPerMinute?: number; maxBodyBytes?: number }): Hono {
  const app = new Hono()
  app.onError(errorHandler(opts.log))
  app.notFound(notFound)
  const maxBody = opts.maxBodyBytes ?? 1_048_576
  app.use('/api/*', bodyLimit({ maxSize: maxBody, onError: () => { throw new HTTPException(413, { message: `request body over ${maxBody} bytes` }) } }))
  app.use('/api/admin/*', adminAuth(opts.adminApiKey, opts.maxAuthFailuresPerMinute, opts.lookupKey))
  app.get('/health', async (c) => {
    const report = await opts.health()
    // degraded still serves devices, so load balancers keep it; only down is 503.
    return c.json(report, report.status === 'down' ? 503 : 200)
  })
  for (const routes of opts.routes ?? []) app.route('/', routes)
  return app
}

/** The HTTP service: listens on config.http, closes (and drains) on stop. */
export function createHttp(opts: HttpOptions) {
  let server: ServerType | undefined
  const app = buildHttpApp({ ...opts, adminApiKey: opts.config.adminApiKey, maxAuthFailuresPerMinute: opts.config.maxAuthFailuresPerMinute, maxBodyBytes: opts.config.maxBodyBytes })
  return {
    name: 'http',
    app,
    async start(): Promise<void> {
      await new Promise<void>((resolve, reject) => {
        const s = serve({ fetch: app.fetch, hostname: opts.config.host, port: opts.config.port }, () => resolve())
        s.once('error', reject)
        server = s
      })
    },
    address(): AddressInfo | undefined {
      return (server?.address() as AddressInfo | null) ?? undefined
    },
    async stop(): Promise<void> {
      const s = server
      server = undefined
      if (!s) return
      await new Promise<void>((resolve) => {
        s.close(() => resolve())
        // Keep-alive sockets would hold close() open; idle ones can go now.
        if ('closeIdleConnections' in s) s.closeIdleConnections()
      })
    },
  }
}

export type Http = ReturnType<typeof createHttp>
