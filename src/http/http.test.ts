import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { createLogger } from '../log/index.js'
import { scope } from '../util/scope.js'
import { buildHttpApp, type HealthReport } from './index.js'
import { histogramMetric, renderMetrics } from './metrics.js'

const logged: string[] = []
const log = createLogger({ level: 'error', format: 'json', write: (l) => logged.push(l) })

function app(status: HealthReport['status'] = 'ok') {
  const routes = new Hono()
  routes.get('/boom', () => {
    throw new Error('relation "secret_table" does not exist at /srv/paku/x.ts')
  })
  routes.get('/teapot', () => {
    throw new HTTPException(409, { message: 'firmware 1.2.3 for esp32 exists already' })
  })
  routes.post('/limited', () => {
    throw new HTTPException(413)
  })
  routes.get('/api/admin/thing', scope('read'), (c) => c.json({ secret: 42 }))
  return buildHttpApp({
    log,
    health: async () => ({ status, database: { ok: status === 'ok' } }),
    routes: [routes],
    adminApiKey: 'k3y',
  })
}

const scenarios: Array<{
  name: string
  method: string
  url: string
  health?: HealthReport['status']
  wantStatus: number
  wantBody: Record<string, unknown>
}> = [
  {
    name: 'health ok is 200',
    method: 'GET',
    url: '/health',
    wantStatus: 200,
    wantBody: { status: 'ok' },
  },
  {
    name: 'health degraded stays 200 (devices are still served)',
    method: 'GET',
    url: '/health',
    health: 'degraded',
    wantStatus: 200,
    wantBody: { status: 'degraded' },
  },
  {
    name: 'health down is 503',
    method: 'GET',
    url: '/health',
    health: 'down',
    wantStatus: 503,
    wantBody: { status: 'down' },
  },
  {
    name: 'unknown route is a JSON 404',
    method: 'GET',
    url: '/nope',
    wantStatus: 404,
    wantBody: { status: 404, message: 'no route for GET /nope' },
  },
  {
    name: 'client errors keep status and message',
    method: 'GET',
    url: '/teapot',
    wantStatus: 409,
    wantBody: { status: 409, message: 'firmware 1.2.3 for esp32 exists already' },
  },
  {
    name: 'a bare 413 gets a default message',
    method: 'POST',
    url: '/limited',
    wantStatus: 413,
    wantBody: { status: 413, message: 'request body too large' },
  },
]

describe('http app', () => {
  for (const s of scenarios) {
    it(s.name, async () => {
      const res = await app(s.health).request(s.url, { method: s.method })
      assert.equal(res.status, s.wantStatus)
      assert.equal(res.headers.get('content-type'), 'application/json')
      const body = (await res.json()) as Record<string, unknown>
      for (const [k, v] of Object.entries(s.wantBody)) assert.deepEqual(body[k], v)
    })
  }

  const auth: Array<{ name: string; headers: Record<string, string>; want: number }> = [
    { name: 'admin route without a key is 401', headers: {}, want: 401 },
    {
      name: 'admin route with a wrong X-API-Key is 401',
      headers: { 'x-api-key': 'nope' },
      want: 401,
    },
    {
      name: 'admin route with a wrong-length key is 401',
      headers: { 'x-api-key': 'k3y-and-more' },
      want: 401,
    },
    { name: 'admin route with X-API-Key is 200', headers: { 'x-api-key': 'k3y' }, want: 200 },
    {
      name: 'admin route with Authorization: Bearer is 200',
      headers: { authorization: 'Bearer k3y' },
      want: 200,
    },
  ]
  for (const a of auth) {
    it(a.name, async () => {
      const res = await app().request('/api/admin/thing', { headers: a.headers })
      assert.equal(res.status, a.want)
      if (a.want === 401)
        assert.deepEqual(await res.json(), { status: 401, message: 'missing or wrong API key' })
    })
  }

  it('refuses a body over http.maxBodyBytes with 413 before the route reads it', async () => {
    const a = buildHttpApp({
      log,
      health: async () => ({ status: 'ok' }),
      routes: [],
      adminApiKey: 'k',
      maxBodyBytes: 100,
    })
    const res = await a.request('/api/admin/x', {
      method: 'POST',
      headers: { 'x-api-key': 'k', 'content-length': '5000' },
      body: 'x'.repeat(5000),
    })
    assert.equal(res.status, 413)
    assert.deepEqual(await res.json(), { status: 413, message: 'request body over 100 bytes' })
  })

  it('admin routes answer 503 when no key is configured', async () => {
    const a = buildHttpApp({
      log,
      health: async () => ({ status: 'ok' }),
      routes: [],
      adminApiKey: '',
    })
    const res = await a.request('/api/admin/anything', { headers: { 'x-api-key': '' } })
    assert.equal(res.status, 503)
    assert.deepEqual(await res.json(), {
      status: 503,
      message: 'admin API disabled: set PAKU_ADMIN_API_KEY or create a key with `paku key create`',
    })
  })

  it('turns an unexpected error into 500 "internal error" with a request id, leaking nothing', async () => {
    logged.length = 0
    const res = await app().request('/boom')
    assert.equal(res.status, 500)
    const body = (await res.json()) as { status: number; message: string; requestId: string }
    assert.equal(body.status, 500)
    assert.equal(body.message, 'internal error')
    assert.match(body.requestId, /^[0-9a-f-]{36}$/)
    assert.doesNotMatch(JSON.stringify(body), /secret_table|\/srv/)
    // The stack goes to the log, under the same request id.
    assert.equal(logged.length, 1)
    assert.match(logged[0] as string, new RegExp(body.requestId))
    assert.match(logged[0] as string, /secret_table/)
  })
})

describe('route scopes', () => {
  it('refuses to build an app with a key route that declares no scope', () => {
    const routes = new Hono()
    routes.get('/api/admin/ok', scope('read'), (c) => c.json({}))
    routes.delete('/api/admin/forgot/:name', (c) => c.json({}))
    routes.get('/api/v1/openapi.json', (c) => c.json({}))
    routes.get('/public', (c) => c.json({}))
    assert.throws(
      () =>
        buildHttpApp({
          log,
          health: async () => ({ status: 'ok' }),
          routes: [routes],
          adminApiKey: 'k3y',
        }),
      /routes without a declared scope: DELETE \/api\/admin\/forgot\/:name$/,
    )
  })

  it('a route checks its own scope; without the key middleware in front it refuses', async () => {
    const a = app()
    const keys = async (key: string) => ({
      name: 'reader',
      scopes: key === 'reader-key' ? (['read'] as const) : (['ingest'] as const),
    })
    const withKeys = buildHttpApp({
      log,
      health: async () => ({ status: 'ok' }),
      routes: [
        (() => {
          const r = new Hono()
          r.get('/api/admin/thing', scope('read'), (c) => c.json({ ok: true }))
          return r
        })(),
      ],
      adminApiKey: '',
      lookupKey: keys,
    })
    assert.equal(
      (await withKeys.request('/api/admin/thing', { headers: { 'x-api-key': 'reader-key' } }))
        .status,
      200,
    )
    const denied = await withKeys.request('/api/admin/thing', {
      headers: { 'x-api-key': 'ingest-key' },
    })
    assert.equal(denied.status, 403)
    assert.deepEqual(await denied.json(), {
      status: 403,
      message: 'this key lacks the "read" scope',
    })
    assert.equal(
      (await a.request('/api/admin/thing', { headers: { 'x-api-key': 'k3y' } })).status,
      200,
    )
    const bare = new Hono()
    bare.onError((err, c) =>
      c.json({ status: (err as HTTPException).status }, (err as HTTPException).status),
    )
    bare.get('/api/admin/thing', scope('read'), (c) => c.json({ ok: true }))
    assert.equal(
      (await bare.request('/api/admin/thing')).status,
      401,
      'fails closed when no key was checked',
    )
  })
})

describe('renderMetrics', () => {
  it('renders a histogram with cumulative buckets, le="+Inf" equal to the count, then sum and count', () => {
    const text = renderMetrics([
      histogramMetric('x_seconds', 'How long.', {
        bounds: [0.1, 1],
        counts: [2, 3],
        sum: 4.5,
        count: 6,
      }),
    ])
    assert.equal(
      text,
      [
        '# HELP x_seconds How long.',
        '# TYPE x_seconds histogram',
        'x_seconds_bucket{le="0.1"} 2',
        'x_seconds_bucket{le="1"} 5',
        'x_seconds_bucket{le="+Inf"} 6',
        'x_seconds_sum 4.5',
        'x_seconds_count 6',
        '',
      ].join('\n'),
    )
  })
})
