import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Hono } from 'hono'
import { HTTPException } from 'hono/http-exception'
import { createLogger } from '../log/index.js'
import { requiredScope } from './admin-keys.js'
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
  routes.get('/api/admin/thing', (c) => c.json({ secret: 42 }))
  return buildHttpApp({ log, health: async () => ({ status, database: { ok: status === 'ok' } }), routes: [routes], adminApiKey: 'k3y' })
}

const scenarios: Array<{ name: string; method: string; url: string; health?: HealthReport['status']; wantStatus: number; wantBody: Record<string, unknown> }> = [
  { name: 'health ok is 200', method: 'GET', url: '/health', wantStatus: 200, wantBody: { status: 'ok' } },
  { name: 'health degraded stays 200 (devices are still served)', method: 'GET', url: '/health', health: 'degraded', wantStatus: 200, wantBody: { status: 'degraded' } },
  { name: 'health down is 503', method: 'GET', url: '/health', health: 'down', wantStatus: 503, wantBody: { status: 'down' } },
  { name: 'unknown route is a JSON 404', method: 'GET', url: '/nope', wantStatus: 404, wantBody: { status: 404, message: 'no route for GET /nope' } },
  { name: 'client errors keep status and message', method: 'GET', url: '/teapot', wantStatus: 409, wantBody: { status: 409, message: 'firmware 1.2.3 for esp32 exists already' } },
  { name: 'a bare 413 gets a default message', method: 'POST', url: '/limited', wantStatus: 413, wantBody: { status: 413, message: 'request body too large' } },
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
    { name: 'admin route with a wrong X-API-Key is 401', headers: { 'x-api-key': 'nope' }, want: 401 },
    { name: 'admin route with a wrong-length key is 401', headers: { 'x-api-key': 'k3y-and-more' }, want: 401 },
    { name: 'admin route with X-API-Key is 200', headers: { 'x-api-key': 'k3y' }, want: 200 },
    { name: 'admin route with Authorization: Bearer is 200', headers: { authorization: 'Bearer k3y' }, want: 200 },
  ]
  for (const a of auth) {
    it(a.name, async () => {
      const res = await app().request('/api/admin/thing', { headers: a.headers })
      assert.equal(res.status, a.want)
      if (a.want === 401) assert.deepEqual(await res.json(), { status: 401, message: 'missing or wrong API key' })
    })
  }

  it('refuses a body over http.maxBodyBytes with 413 before the route reads it', async () => {
    const a = buildHttpApp({ log, health: async () => ({ status: 'ok' }), routes: [], adminApiKey: 'k', maxBodyBytes: 100 })
    const res = await a.request('/api/admin/x', { method: 'POST', headers: { 'x-api-key': 'k', 'content-length': '5000' }, body: 'x'.repeat(5000) })
    assert.equal(res.status, 413)
    assert.deepEqual(await res.json(), { status: 413, message: 'request body over 100 bytes' })
  })

  it('admin routes answer 503 when no key is configured', async () => {
    const a = buildHttpApp({ log, health: async () => ({ status: 'ok' }), routes: [], adminApiKey: '' })
    const res = await a.request('/api/admin/anything', { headers: { 'x-api-key': '' } })
    assert.equal(res.status, 503)
    assert.deepEqual(await res.json(), { status: 503, message: 'admin API disabled: set PAKU_ADMIN_API_KEY or create a key with `paku key create`' })
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

describe('requiredScope', () => {
  const table: Array<[string, string, string]> = [
    ['GET', '/api/admin/firmware/releases', 'read'],
    ['HEAD', '/api/admin/rollouts/1', 'read'],
    ['POST', '/api/admin/firmware/upload', 'upload'],
    ['PUT', '/api/admin/firmware/esp32-heater/1.4.2', 'upload'],
    ['DELETE', '/api/admin/firmware/esp32-heater/1.4.2', 'admin'],
    ['POST', '/api/admin/rollout/create', 'rollout'],
    ['POST', '/api/admin/rollouts', 'rollout'],
    ['POST', '/api/admin/rollouts/3/pause', 'rollout'],
    ['POST', '/api/device/ESP32-1/update-status', 'rollout'],
    ['PUT', '/api/admin/groups/van', 'admin'],
    ['PUT', '/api/admin/devices/ESP32-1', 'admin'],
    ['POST', '/api/admin/ecoflow/poll', 'admin'],
    ['GET', '/api/v1/measurements', 'read'],
    ['GET', '/api/v1/live', 'read'],
    ['GET', '/api/v1/commands', 'read'],
    ['POST', '/api/v1/telemetry', 'ingest'],
    ['POST', '/api/v1/commands', 'command'],
    ['POST', '/api/v1/commandsx', 'admin'],
  ]
  for (const [method, path, scope] of table) it(`${method} ${path} needs ${scope}`, () => assert.equal(requiredScope(method, path), scope))
})

describe('renderMetrics', () => {
  it('renders a histogram with cumulative buckets, le="+Inf" equal to the count, then sum and count', () => {
    const text = renderMetrics([histogramMetric('x_seconds', 'How long.', { bounds: [0.1, 1], counts: [2, 3], sum: 4.5, count: 6 })])
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
