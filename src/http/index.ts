import type { AddressInfo } from 'node:net'
import { serve, type ServerType } from '@hono/node-server'
import { Hono } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { HTTPException } from 'hono/http-exception'
import type { Config } from '../config/index.js'
import type { Logger } from '../log/index.js'
import { adminAuth, type KeyLookup } from './auth.js'
import { errorHandler, notFound } from './errors.js'
import { renderMetrics, type Metric } from './metrics.js'
import { routeScopes } from '../util/scope.js'

export { errorHandler, notFound, type ErrorBody } from './errors.js'
export { histogramMetric, renderMetrics, type Metric } from './metrics.js'
export { createRuntimeMonitor, type RuntimeMonitor } from './runtime.js'
export {
  createFirstKey,
  createKey,
  hasNamedKey,
  listKeys,
  lookupKey,
  revokeKey,
  SCOPES,
  KEY_NAME,
  type Scope,
} from './admin-keys.js'
export { createSetup, SETUP_TTL_MS, setupOpenApi, type Setup } from './setup.js'
export { routeScopes } from '../util/scope.js'

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
  /** Routes that take uploads larger than http.maxBodyBytes (firmware images). */
  bodyLimits?: ReadonlyArray<{ path: RegExp; maxBytes: number }>
  /** Every subsystem's counters, served at /metrics in Prometheus text format. */
  metrics?: () => Promise<Metric[]>
}

/** The Hono app: /health, the subsystems' routes and one JSON error shape. Exposed for app.request() tests. */
export function buildHttpApp(
  opts: Omit<HttpOptions, 'config'> & {
    adminApiKey: string
    maxAuthFailuresPerMinute?: number
    maxBodyBytes?: number
  },
): Hono {
  const app = new Hono()
  app.onError(errorHandler(opts.log))
  app.notFound(notFound)
  const limit = (maxSize: number) =>
    bodyLimit({
      maxSize,
      onError: () => {
        throw new HTTPException(413, { message: `request body over ${maxSize} bytes` })
      },
    })
  const defaultLimit = limit(opts.maxBodyBytes ?? 1_048_576)
  const special = (opts.bodyLimits ?? []).map((l) => ({ path: l.path, check: limit(l.maxBytes) }))
  app.use('/api/*', (c, next) =>
    (special.find((l) => l.path.test(c.req.path))?.check ?? defaultLimit)(c, next),
  )
  const auth = adminAuth(opts.adminApiKey, opts.maxAuthFailuresPerMinute, opts.lookupKey)
  app.use('/api/admin/*', auth)
  // The old service's device status report took the same X-API-Key.
  app.use('/api/device/*', auth)
  // /api/v1 (telemetry API, HTTP ingest, commands): the same keys by scope; its OpenAPI document is public.
  app.use('/api/v1/*', (c, next) => (c.req.path === OPEN_API ? next() : auth(c, next)))
  app.get('/health', async (c) => {
    const report = await opts.health()
    // degraded still serves devices, so load balancers keep it; only down is 503.
    return c.json(report, report.status === 'down' ? 503 : 200)
  })
  const metrics = opts.metrics
  if (metrics) {
    // Open like the old /metrics (a scraper on the LAN); it shows counts, never identities or secrets.
    app.get('/metrics', async (c) =>
      c.body(renderMetrics(await metrics()), 200, {
        'content-type': 'text/plain; version=0.0.4; charset=utf-8',
      }),
    )
  }
  for (const routes of opts.routes ?? []) app.route('/', routes)
  // Every route behind a key declares the scope it needs (util/scope.ts); one that does not would
  // be open to any valid key, so the app refuses to be built with it.
  const undeclared = routeScopes(app).filter(
    (r) => KEY_ROUTE.test(r.path) && r.path !== OPEN_API && r.scope === undefined,
  )
  if (undeclared.length > 0)
    throw new Error(
      `routes without a declared scope: ${undeclared.map((r) => `${r.method} ${r.path}`).join(', ')}`,
    )
  return app
}

/** Paths behind the key middleware (the public OpenAPI document aside). */
const KEY_ROUTE = /^\/api\/(admin|device|v1)\//
const OPEN_API = '/api/v1/openapi.json'

/** The HTTP service: listens on config.http, closes (and drains) on stop. */
export function createHttp(opts: HttpOptions) {
  let server: ServerType | undefined
  const app = buildHttpApp({
    ...opts,
    adminApiKey: opts.config.adminApiKey,
    maxAuthFailuresPerMinute: opts.config.maxAuthFailuresPerMinute,
    maxBodyBytes: opts.config.maxBodyBytes,
  })
  return {
    name: 'http',
    app,
    async start(): Promise<void> {
      await new Promise<void>((resolve, reject) => {
        const s = serve(
          { fetch: app.fetch, hostname: opts.config.host, port: opts.config.port },
          () => resolve(),
        )
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
