import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import mqtt from 'mqtt'
import {
  defer,
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'
import { refused, sample } from '../../scripts/test-support/openapi-values.js'
import { commandsOpenApi } from '../commands/index.js'
import { createKey, setupOpenApi } from '../http/index.js'
import { apiOpenApi } from './index.js'

type JsonSchema = Record<string, unknown> & {
  oneOf?: JsonSchema[]
  anyOf?: JsonSchema[]
  properties?: Record<string, JsonSchema>
  additionalProperties?: unknown
}
type Documented = {
  parameters?: Array<{ name: string; in: string; schema: JsonSchema }>
  requestBody?: { content: Record<string, { schema: JsonSchema } | undefined> }
}

const KEY = 'api-test-admin-key-0123456789-padded-to-32-characters'

async function setup(t: TestContext) {
  const databaseUrl = await testDatabase(t)
  const s = await startApp(
    t,
    testConfig({
      databaseUrl,
      http: { adminApiKey: KEY, maxAuthFailuresPerMinute: 1000 },
      rollup: { intervalSeconds: 3600 },
    }),
  )
  const db = await sqlClient(t, databaseUrl)
  const call = async (
    method: string,
    path: string,
    o: { body?: unknown; key?: string | null; headers?: Record<string, string> } = {},
  ) => {
    const headers: Record<string, string> = {
      ...(o.key === null ? {} : { authorization: `Bearer ${o.key ?? KEY}` }),
      ...o.headers,
    }
    if (o.body !== undefined && typeof o.body !== 'string')
      headers['content-type'] = 'application/json'
    const res = await fetch(`${s.httpUrl}${path}`, {
      method,
      headers,
      body:
        o.body === undefined
          ? undefined
          : typeof o.body === 'string'
            ? o.body
            : JSON.stringify(o.body),
    })
    const text = await res.text()
    let json: Record<string, unknown> = {}
    try {
      json = JSON.parse(text) as Record<string, unknown>
    } catch {
      json = {}
    }
    return { status: res.status, json, text, headers: res.headers }
  }
  return { ...s, db, call, databaseUrl }
}

describe('/api/v1', () => {
  it('documents exactly the /api/v1 routes the app registers, and serves the document without a key', async (t) => {
    const s = await setup(t)
    const r = await s.call('GET', '/api/v1/openapi.json', { key: null })
    assert.equal(r.status, 200)
    assert.equal(r.json.openapi, '3.1.0')
    const documented = new Set<string>()
    for (const [path, ops] of Object.entries(
      r.json.paths as Record<string, Record<string, unknown>>,
    ))
      for (const m of Object.keys(ops)) documented.add(`${m.toUpperCase()} ${path}`)
    const registered = new Set(
      s.app.http.app.routes
        .filter(
          (x) => (x.path.startsWith('/api/v1/') || x.path === '/api/setup') && x.method !== 'ALL',
        )
        .map((x) => `${x.method} ${x.path.replace(/:([a-z_]+)/g, '{$1}')}`),
    )
    assert.deepEqual([...registered].sort(), [...documented].sort())
  })

  it("documents the query and body each route validates: its parameters are the schema's, and what it calls invalid is a 400", async (t) => {
    const s = await setup(t)
    const doc = (await s.call('GET', '/api/v1/openapi.json', { key: null })).json as {
      paths: Record<string, Record<string, Documented>>
    }
    const operations = [apiOpenApi, commandsOpenApi, setupOpenApi].flatMap((p) => p.operations)
    assert.equal(
      operations.length,
      Object.values(doc.paths).flatMap((ops) => Object.keys(ops)).length,
      'every operation of the document is one of these',
    )
    // The status only: a live stream that opens is not read.
    const status = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${s.httpUrl}${path}`, {
        method,
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      })
      const text = res.headers.get('content-type')?.startsWith('text/event-stream')
        ? (await res.body?.cancel(), '')
        : await res.text()
      return { status: res.status, text }
    }
    let refusals = 0
    for (const op of operations) {
      const name = `${op.method.toUpperCase()} ${op.path}`
      const documented = doc.paths[op.path]?.[op.method]
      assert.ok(documented, name)
      const query = (documented.parameters ?? []).filter((p) => p.in === 'query')
      assert.deepEqual(
        query.map((p) => p.name).sort(),
        Object.keys(op.query?.entries ?? {}).sort(),
        `${name}: the query parameters are the schema's`,
      )
      const path = op.path.replace('{id}', 'dev-1')
      const method = op.method.toUpperCase()
      if (op.query) {
        // series needs one of metric and metrics: a rule across parameters, which the route checks.
        const control = await status(
          method,
          op.path === '/api/v1/measurements/series' ? `${path}?metric=m` : path,
        )
        assert.notEqual(control.status, 400, `${name} without parameters: ${control.text}`)
        if (op.query.type === 'strict_object')
          assert.equal((await status(method, `${path}?not_a_parameter=1`)).status, 400, name)
      }
      for (const p of query)
        for (const bad of refused(p.schema, true)) {
          const r = await status(method, `${path}?${p.name}=${encodeURIComponent(String(bad))}`)
          assert.equal(r.status, 400, `${name}?${p.name}=${String(bad).slice(0, 40)}: ${r.text}`)
          assert.match(r.text, new RegExp(p.name), 'the message names the parameter')
          refusals++
        }
      const body = documented.requestBody?.content['application/json']?.schema
      if (!body) continue
      for (const branch of body.oneOf ?? body.anyOf ?? [body]) {
        const valid = sample(branch) as Record<string, unknown>
        const control = await status(method, path, valid)
        assert.notEqual(control.status, 400, `${name} ${JSON.stringify(valid)}: ${control.text}`)
        const props = Object.entries(branch.properties ?? {})
        if (branch.additionalProperties === false) props.push(['not_a_field', { enum: [] }])
        for (const [field, schema] of props)
          for (const bad of field === 'not_a_field' ? [1] : refused(schema)) {
            const r = await status(method, path, { ...valid, [field]: bad })
            assert.equal(r.status, 400, `${name} ${field}: ${JSON.stringify(bad).slice(0, 40)}`)
            refusals++
          }
      }
    }
    assert.ok(refusals > 80, `positive control: ${refusals} refusals were sent`)
  })

  it('needs a key with the right scope', async (t) => {
    const s = await setup(t)
    const ingestOnly = await createKey(s.app.db.db, 'esp-fleet', ['ingest'])
    const reader = await createKey(s.app.db.db, 'grafana-ish', ['read'])
    const cases: Array<{
      name: string
      method: string
      path: string
      key: string | null
      body?: unknown
      want: number
    }> = [
      { name: 'no key', method: 'GET', path: '/api/v1/measurements', key: null, want: 401 },
      { name: 'wrong key', method: 'GET', path: '/api/v1/measurements', key: 'nope', want: 401 },
      {
        name: 'ingest key cannot read',
        method: 'GET',
        path: '/api/v1/measurements',
        key: ingestOnly,
        want: 403,
      },
      {
        name: 'read key reads',
        method: 'GET',
        path: '/api/v1/measurements',
        key: reader,
        want: 200,
      },
      {
        name: 'read key cannot ingest',
        method: 'POST',
        path: '/api/v1/telemetry',
        key: reader,
        body: { device_id: 'd', metric: 'm', value: 1 },
        want: 403,
      },
      {
        name: 'ingest key ingests',
        method: 'POST',
        path: '/api/v1/telemetry',
        key: ingestOnly,
        body: { device_id: 'd', metric: 'm', value: 1 },
        want: 200,
      },
      {
        name: 'read key cannot command',
        method: 'POST',
        path: '/api/v1/commands',
        key: reader,
        body: { device_id: 'd', type: 'control', scenario: 'default' },
        want: 403,
      },
      { name: 'no key, no live stream', method: 'GET', path: '/api/v1/live', key: null, want: 401 },
    ]
    for (const c of cases) {
      const r = await s.call(c.method, c.path, { key: c.key, body: c.body })
      assert.equal(r.status, c.want, `${c.name}: ${r.text}`)
      if (c.want >= 400) assert.equal(r.json.status, c.want, `${c.name}: one error shape`)
    }
  })

  it('stores HTTP telemetry durably before answering, through the same checks as MQTT', async (t) => {
    const s = await setup(t)
    const single = await s.call('POST', '/api/v1/telemetry', {
      body: {
        device_id: 'ESP32-AABBCCDD',
        timestamp: '2026-01-15T14:03:22+02:00',
        metric: 'temperature_c',
        value: 21.5,
        unit: 'C',
      },
    })
    assert.equal(single.status, 200, single.text)
    assert.deepEqual(single.json, { stored: 1, rows: 1, topic: 'paku/edge/ESP32-AABBCCDD/data' })
    // Answered after the commit: the row is there without waiting.
    const row = (
      await s.db.query(
        `SELECT site_id, system, device_id, ts, metrics FROM measurements WHERE device_id = 'ESP32-AABBCCDD'`,
      )
    ).rows
    assert.deepEqual(row, [
      {
        site_id: 'paku',
        system: 'edge',
        device_id: 'ESP32-AABBCCDD',
        ts: new Date('2026-01-15T12:03:22Z'),
        metrics: { temperature_c: 21.5 },
      },
    ])

    const batch = await s.call('POST', '/api/v1/telemetry', {
      body: {
        device_id: 'ESP32-S3-11223344',
        system: 'sensors',
        batch_timestamp: 1768485600,
        readings: [
          { metric: 'temperature_c', value: 20, unit: 'C' },
          { metric: 'humidity_percent', value: 40 },
          { metric: 'temperature_c', value: 19.5, timestamp: '2026-01-15T13:00:00Z' },
          { metric: 'heater_state', value: 'Running' },
        ],
      },
    })
    assert.equal(batch.status, 200, batch.text)
    assert.equal(batch.json.stored, 4)
    assert.equal(batch.json.rows, 2, 'one row per timestamp')
    const rows = (
      await s.db.query(
        `SELECT ts, metrics FROM measurements WHERE device_id = 'ESP32-S3-11223344' AND system = 'sensors' ORDER BY ts`,
      )
    ).rows
    assert.deepEqual(rows, [
      { ts: new Date('2026-01-15T13:00:00Z'), metrics: { temperature_c: 19.5 } },
      {
        ts: new Date(1768485600 * 1000),
        metrics: { temperature_c: 20, humidity_percent: 40, heater_state: 'Running' },
      },
    ])

    const bad: Array<{ name: string; body: unknown; want: number; match?: RegExp }> = [
      { name: 'not JSON', body: '{"device_id":', want: 400, match: /body must be JSON/ },
      { name: 'an array', body: [], want: 400 },
      { name: 'no metric', body: { device_id: 'd', value: 1 }, want: 400 },
      {
        name: 'object value',
        body: { device_id: 'd', metric: 'm', value: { x: 1 } },
        want: 400,
        match: /value/,
      },
      {
        name: 'NaN-ish string timestamp',
        body: { device_id: 'd', metric: 'm', value: 1, timestamp: 'yesterday' },
        want: 400,
        match: /not ISO-8601/,
      },
      {
        name: 'epoch far in the future',
        body: { device_id: 'd', metric: 'm', value: 1, timestamp: 1e20 },
        want: 400,
        match: /timestamp/,
      },
      {
        name: 'negative epoch',
        body: { device_id: 'd', metric: 'm', value: 1, timestamp: -5 },
        want: 400,
        match: /timestamp/,
      },
      {
        name: 'February 30th',
        body: { device_id: 'd', metric: 'm', value: 1, timestamp: '2026-02-30T00:00:00Z' },
        want: 400,
        match: /not a valid date/,
      },
      {
        name: 'slash in device id',
        body: { device_id: 'a/b', metric: 'm', value: 1 },
        want: 400,
        match: /device_id/,
      },
      { name: 'wildcard in metric', body: { device_id: 'd', metric: '#', value: 1 }, want: 400 },
      {
        name: 'SQL-ish device id is just a string',
        body: { device_id: "x'; DROP TABLE measurements;--", metric: 'm', value: 1 },
        want: 200,
      },
      {
        name: 'unknown field',
        body: { device_id: 'd', metric: 'm', value: 1, extra: true },
        want: 400,
      },
      {
        name: 'empty batch',
        body: { device_id: 'd', readings: [] },
        want: 400,
        match: /readings must not be empty/,
      },
      {
        name: 'too many readings',
        body: {
          device_id: 'd',
          readings: Array.from({ length: 1001 }, (_, i) => ({ metric: `m${i}`, value: i })),
        },
        want: 400,
        match: /at most 1000/,
      },
      {
        name: 'oversize body',
        body: JSON.stringify({ device_id: 'd', metric: 'm', value: 'x'.repeat(1_100_000) }),
        want: 413,
      },
    ]
    for (const c of bad) {
      const r = await s.call('POST', '/api/v1/telemetry', {
        body: c.body,
        headers: { 'content-type': 'application/json' },
      })
      assert.equal(r.status, c.want, `${c.name}: ${r.text.slice(0, 200)}`)
      if (c.want >= 400) assert.equal(r.json.status, c.want, c.name)
      if (c.match) assert.match(String(r.json.message), c.match, c.name)
    }
    assert.equal(
      (await s.db.query(`SELECT count(*)::int AS n FROM measurements`)).rows[0].n,
      4,
      'nothing of a rejected request was stored',
    )
    assert.equal(
      (await s.db.query(`SELECT to_regclass('measurements') IS NOT NULL AS ok`)).rows[0].ok,
      true,
    )
  })

  it('lists raw measurements with keyset pagination, filters, JSON and CSV', async (t) => {
    const s = await setup(t)
    const client = await mqtt.connectAsync(s.mqttUrl, { clientId: 'ruuvi-relay' })
    defer(t, () => client.endAsync())
    const base = Date.parse('2026-03-01T00:00:00Z')
    for (let i = 0; i < 25; i++) {
      const device = i % 2 === 0 ? 'ruuvi_cabin' : 'ruuvi_van'
      await client.publishAsync(
        `paku/sensors/${device}/data`,
        JSON.stringify({
          device_id: device,
          timestamp: new Date(base + i * 60_000).toISOString(),
          metrics: { temperature_c: i, ...(i % 5 === 0 ? { battery_mv: 3000 } : {}) },
        }),
        { qos: 1 },
      )
    }
    const range = 'from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z'
    // Pages of 4, newest first, collected through the cursor.
    const seen: number[] = []
    let cursor: string | null = null
    let pages = 0
    do {
      const r = await s.call(
        'GET',
        `/api/v1/measurements?${range}&limit=4${cursor ? `&cursor=${cursor}` : ''}`,
      )
      assert.equal(r.status, 200, r.text)
      for (const m of r.json.items as Array<{ metrics: { temperature_c: number } }>)
        seen.push(m.metrics.temperature_c)
      cursor = r.json.next as string | null
      pages++
    } while (cursor)
    assert.equal(pages, 7)
    assert.deepEqual(
      seen,
      Array.from({ length: 25 }, (_, i) => 24 - i),
    )

    const asc = await s.call(
      'GET',
      `/api/v1/measurements?${range}&device_id=ruuvi_van&order=asc&limit=2`,
    )
    assert.deepEqual(
      (asc.json.items as Array<{ metrics: { temperature_c: number } }>).map(
        (m) => m.metrics.temperature_c,
      ),
      [1, 3],
    )
    const metric = await s.call(
      'GET',
      `/api/v1/measurements?${range}&site_id=paku&system=sensors&metric=battery_mv`,
    )
    assert.deepEqual(
      (metric.json.items as Array<{ value: number; device_id: string }>).map((m) => [
        m.device_id,
        m.value,
      ]),
      [
        ['ruuvi_cabin', 3000],
        ['ruuvi_van', 3000],
        ['ruuvi_cabin', 3000],
        ['ruuvi_van', 3000],
        ['ruuvi_cabin', 3000],
      ],
    )

    const csv = await s.call(
      'GET',
      `/api/v1/measurements?${range}&device_id=ruuvi_cabin&metric=temperature_c&limit=2`,
      { headers: { accept: 'text/csv' } },
    )
    assert.equal(csv.status, 200)
    assert.match(csv.headers.get('content-type') ?? '', /^text\/csv/)
    assert.equal(
      csv.text,
      'ts,site_id,system,device_id,location,metric,value\r\n2026-03-01T00:24:00.000Z,paku,sensors,ruuvi_cabin,,temperature_c,24\r\n2026-03-01T00:22:00.000Z,paku,sensors,ruuvi_cabin,,temperature_c,22\r\n',
    )
    assert.ok(csv.headers.get('x-next-cursor'))
    const csv2 = await s.call(
      'GET',
      `/api/v1/measurements?${range}&device_id=ruuvi_cabin&format=csv&cursor=${csv.headers.get('x-next-cursor')}&limit=1`,
    )
    assert.match(
      csv2.text,
      /^ts,site_id,system,device_id,location,metrics\r\n2026-03-01T00:20:00.000Z,paku,sensors,ruuvi_cabin,,"{""battery_mv"":3000,""temperature_c"":20}"\r\n$/,
    )

    const latest = await s.call('GET', '/api/v1/latest')
    assert.deepEqual(
      (latest.json.items as Array<{ device_id: string; metrics: unknown }>).map((m) => [
        m.device_id,
        m.metrics,
      ]),
      [
        ['ruuvi_cabin', { temperature_c: 24 }],
        ['ruuvi_van', { temperature_c: 23 }],
      ],
    )
    const page1 = await s.call('GET', '/api/v1/latest?limit=1')
    const page2 = await s.call('GET', `/api/v1/latest?limit=1&cursor=${page1.json.next}`)
    assert.deepEqual(
      (page2.json.items as Array<{ device_id: string }>).map((m) => m.device_id),
      ['ruuvi_van'],
    )
    assert.equal(page2.json.next, null)
  })

  it('answers every bad query with a 400 in the one error shape', async (t) => {
    const s = await setup(t)
    const cases: Array<[string, RegExp]> = [
      ['/api/v1/measurements?from=yesterday', /from must be an ISO 8601/],
      [
        '/api/v1/measurements?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z',
        /from must be before to/,
      ],
      ['/api/v1/measurements?from=2026-13-45', /from is not a valid date/],
      ['/api/v1/measurements?limit=100000', /limit must be at most 10000/],
      ['/api/v1/measurements?limit=-1', /limit must be an integer/],
      ['/api/v1/measurements?limit=1e3', /limit must be an integer/],
      ['/api/v1/measurements?cursor=abc', /cursor/],
      [
        '/api/v1/measurements?cursor=' +
          Buffer.from(JSON.stringify(["1' OR 1=1", '1'])).toString('base64url'),
        /cursor/,
      ],
      ['/api/v1/measurements?device_id=a&device_id=b', /device_id: give it once/],
      ['/api/v1/measurements?device=x', /device/],
      ['/api/v1/measurements?format=xml', /format must be json or csv/],
      ['/api/v1/measurements?order=sideways', /order must be asc or desc/],
      ['/api/v1/measurements?device_id=' + 'x'.repeat(200), /device_id must be 1–128/],
      ['/api/v1/measurements/series', /metric/],
      ['/api/v1/measurements/series?metric=t&bucket=2m', /bucket must be 1m, 5m, 1h, 6h or 1d/],
      ['/api/v1/measurements/series?metric=t&agg=median', /agg must be avg, min, max or last/],
      [
        '/api/v1/measurements/series?metric=t&bucket=1m&from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z',
        /at most 10000/,
      ],
      ['/api/v1/latest?cursor=' + Buffer.from('[1,2,3]').toString('base64url'), /cursor/],
      ['/api/v1/devices?limit=0', /limit must be at least 1/],
      ['/api/v1/live?topic=a/%23/b', /topic must be an MQTT topic filter/],
    ]
    for (const [path, match] of cases) {
      const r = await s.call('GET', path)
      assert.equal(r.status, 400, `${path}: ${r.text}`)
      assert.equal(r.json.status, 400)
      assert.match(String(r.json.message), match, path)
    }
    assert.equal((await s.call('GET', '/api/v1/devices/ESP32-NOPE')).status, 404)
    assert.equal(
      (
        await s.call(
          'GET',
          "/api/v1/measurements?device_id=x'%3B%20DROP%20TABLE%20measurements%3B--",
        )
      ).status,
      200,
    )
  })

  it('serves downsampled series from the rollups, with the newest part from raw rows', async (t) => {
    const s = await setup(t)
    const now = Date.now()
    const start = Math.floor(now / 86_400_000) * 86_400_000 - 3 * 86_400_000
    // Three days and a bit of 10-minute readings for two devices, plus a string metric.
    await s.db.query(
      `
      INSERT INTO measurements (site_id, system, device_id, ts, metrics)
      SELECT 'paku', 'sensors', d, to_timestamp($1::float8 / 1000) + make_interval(mins => i * 10),
        jsonb_build_object('temperature_c', (i % 37) + (CASE WHEN d = 'b' THEN 100 ELSE 0 END), 'heater_state', CASE WHEN i % 2 = 0 THEN 'Off' ELSE 'Running' END)
      FROM generate_series(0, 3 * 144 - 1) i, unnest(ARRAY['a', 'b']) d`,
      [start],
    )
    await s.app.rollup.pass()
    const expected = async (width: string, from: number, to: number) =>
      (
        await s.db.query<{ t: Date; avg: number; min: number; max: number; n: number }>(
          `
        SELECT date_bin($1::interval, ts, TIMESTAMPTZ 'epoch') AS t, avg((metrics->>'temperature_c')::float8) AS avg,
          min((metrics->>'temperature_c')::float8) AS min, max((metrics->>'temperature_c')::float8) AS max, count(*)::int AS n
        FROM measurements WHERE device_id = 'a' AND ts >= to_timestamp($2::float8 / 1000) AND ts < to_timestamp($3::float8 / 1000) GROUP BY 1 ORDER BY 1`,
          [width, from, to],
        )
      ).rows
    const from = new Date(start).toISOString()
    const to = new Date(start + 3 * 86_400_000).toISOString()
    const want1h = await expected('1 hour', start, start + 3 * 86_400_000)
    const want1d = await expected('1 day', start, start + 3 * 86_400_000)
    const want1m = await expected('1 minute', start, start + 6 * 3_600_000)
    // Proof that 1h and 1d come from the rollups: the raw rows they cover are gone now.
    await s.db.query(`DELETE FROM measurements WHERE ts < $1`, [new Date(start + 86_400_000)])

    const h = await s.call(
      'GET',
      `/api/v1/measurements/series?metric=temperature_c&device_id=a&bucket=1h&from=${from}&to=${to}`,
    )
    assert.equal(h.status, 200, h.text)
    const hs = h.json.series as Array<{
      device_id: string
      points: Array<{ t: string; value: number; n: number }>
    }>
    assert.equal(hs.length, 1)
    assert.equal(hs[0]?.points.length, 72)
    for (const [i, w] of want1h.entries()) {
      const p: { t: string; value: number; n: number } | undefined = hs[0]?.points[i]
      assert.equal(p?.t, w.t.toISOString())
      assert.ok(Math.abs((p?.value ?? NaN) - w.avg) < 1e-9, `hour ${i}`)
      assert.equal(p?.n, w.n)
    }
    for (const agg of ['min', 'max'] as const) {
      const d = await s.call(
        'GET',
        `/api/v1/measurements/series?metric=temperature_c&device_id=a&bucket=1d&agg=${agg}&from=${from}&to=${to}`,
      )
      assert.deepEqual(
        (d.json.series as Array<{ points: Array<{ value: number }> }>)[0]?.points.map(
          (p) => p.value,
        ),
        want1d.map((w) => w[agg]),
      )
    }
    const d = await s.call(
      'GET',
      `/api/v1/measurements/series?metric=temperature_c&bucket=1d&from=${from}&to=${to}`,
    )
    assert.deepEqual(
      (d.json.series as Array<{ device_id: string }>).map((x) => x.device_id),
      ['a', 'b'],
      'one series per device',
    )
    const last = await s.call(
      'GET',
      `/api/v1/measurements/series?metric=heater_state&device_id=a&bucket=1h&agg=last&from=${from}&to=${to}`,
    )
    assert.equal(
      (last.json.series as Array<{ points: Array<{ value: unknown }> }>)[0]?.points[0]?.value,
      'Running',
    )

    // 1m comes from raw rows (the first day's are deleted now, so ask for day two).
    const m = await s.call(
      'GET',
      `/api/v1/measurements/series?metric=temperature_c&device_id=a&bucket=1m&from=${new Date(start + 86_400_000).toISOString()}&to=${new Date(start + 86_400_000 + 3_600_000).toISOString()}`,
    )
    assert.equal((m.json.series as Array<{ points: unknown[] }>)[0]?.points.length, 6)
    assert.ok(want1m.length > 0)

    // Rows after the rollup pass are in the newest bucket without waiting for the next pass.
    await s.db.query(
      `INSERT INTO measurements (site_id, system, device_id, ts, metrics) VALUES ('paku', 'sensors', 'a', NOW(), '{"temperature_c": 1000}')`,
    )
    const fresh = await s.call(
      'GET',
      `/api/v1/measurements/series?metric=temperature_c&device_id=a&bucket=1h&agg=max&from=${new Date(now - 3_600_000).toISOString()}`,
    )
    const points =
      (fresh.json.series as Array<{ points: Array<{ value: number }> }>)[0]?.points ?? []
    assert.equal(points[points.length - 1]?.value, 1000)

    const csv = await s.call(
      'GET',
      `/api/v1/measurements/series?metric=temperature_c&device_id=b&bucket=1d&format=csv&from=${from}&to=${to}`,
    )
    assert.match(csv.text, /^t,site_id,system,device_id,metric,value,n\r\n/)
    assert.equal(csv.text.trim().split('\r\n').length, 4)
  })

  it('lists devices with online state, firmware, last seen and their newest status', async (t) => {
    const s = await setup(t)
    const dev = await mqtt.connectAsync(s.mqttUrl, { clientId: 'ESP32-0A0B0C0D' })
    defer(t, () => dev.endAsync())
    await dev.publishAsync(
      'paku/edge/ESP32-0A0B0C0D/status',
      JSON.stringify({
        online: true,
        firmware_version: '1.4.2',
        device_model: 'esp32-heater',
        active_scenario: 'default',
        signal_strength_dbm: -61,
      }),
      { qos: 1, retain: true },
    )
    const r = await eventually(async () => {
      const x = await s.call('GET', '/api/v1/devices')
      return (x.json.items as unknown[]).length > 0 ? x : undefined
    })
    const d = (r.json.items as Array<Record<string, unknown>>)[0] as Record<string, unknown>
    assert.equal(d.device_id, 'ESP32-0A0B0C0D')
    assert.equal(d.firmware, '1.4.2')
    assert.equal(d.online, true)
    assert.equal((d.status as Record<string, unknown>).active_scenario, 'default')
    const one = await s.call('GET', '/api/v1/devices/ESP32-0A0B0C0D')
    assert.equal((one.json.device as Record<string, unknown>).device_model, 'esp32-heater')
    const csv = await s.call('GET', '/api/v1/devices?format=csv')
    assert.match(
      csv.text,
      /^device_id,site_id,device_model,firmware,online,last_seen,active_scenario,signal_strength_dbm\r\nESP32-0A0B0C0D,paku,esp32-heater,1.4.2,true,[^,]+,default,-61\r\n$/,
    )
  })

  it('streams live messages from MQTT and HTTP ingest as server-sent events, and stop() ends open streams', async (t) => {
    const s = await setup(t)
    const res = await fetch(
      `${s.httpUrl}/api/v1/live?topic=${encodeURIComponent('paku/+/+/data')}`,
      { headers: { 'x-api-key': KEY } },
    )
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/)
    const reader = (res.body as ReadableStream<Uint8Array>)
      .pipeThrough(new TextDecoderStream())
      .getReader()
    let text = ''
    const until = async (re: RegExp) => {
      while (!re.test(text)) {
        const { value, done } = await reader.read()
        if (done) throw new Error(`stream ended before ${re}; got ${text}`)
        text += value
      }
    }
    await until(/event: ready/)
    const client = await mqtt.connectAsync(s.mqttUrl, { clientId: 'live-test' })
    defer(t, () => client.endAsync())
    await client.publishAsync('paku/edge/x/status', JSON.stringify({ online: true }), { qos: 1 })
    await client.publishAsync(
      'paku/sensors/ruuvi_cabin/data',
      JSON.stringify({ device_id: 'r', metrics: { t: 1 } }),
      { qos: 1 },
    )
    await until(/ruuvi_cabin/)
    await s.call('POST', '/api/v1/telemetry', {
      body: { device_id: 'ESP32-LIVE', metric: 'm', value: 2 },
    })
    await until(/ESP32-LIVE/)
    assert.doesNotMatch(text, /edge\/x\/status/, 'the filter applies')
    assert.match(text, /"via":"http"/)
    // A client that goes away is forgotten (its queue with it).
    const other = new AbortController()
    const second = await fetch(`${s.httpUrl}/api/v1/live`, {
      headers: { 'x-api-key': KEY },
      signal: other.signal,
    })
    assert.equal(second.status, 200)
    await eventually(async () => s.app.live.stats().listeners === 2)
    other.abort()
    await eventually(async () => s.app.live.stats().listeners === 1, {
      what: 'the aborted stream to be dropped',
    })
    // An open stream must not hold shutdown.
    const t0 = Date.now()
    await s.app.stop()
    assert.ok(Date.now() - t0 < 5000)
    for (;;) if ((await reader.read()).done) break
  })
})
