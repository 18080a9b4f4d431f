import { Hono, type Context } from 'hono'
import { scope } from '../util/scope.js'
import { HTTPException } from 'hono/http-exception'
import type { Kysely } from 'kysely'
import * as v from 'valibot'
import type { DB } from '../db/index.js'
import type { Logger } from '../log/index.js'
import type { OpenApiPart } from '../util/openapi.js'
import { readJson, validate } from '../util/validate.js'
import { toCsv } from './csv.js'
import { LIVE_QUEUE, type LiveHub } from './live.js'
import { openApiDocument } from './openapi.js'
import { fleet, matches, MAX_FLEET } from './fleet.js'
import {
  decodeCursor,
  DevicesQuery,
  encodeCursor,
  FleetQuery,
  HistoryQuery,
  LatestQuery,
  ListQuery,
  LiveQuery,
  parseQuery,
  SeriesQuery,
  timeRange,
  wantsCsv,
  type Agg,
} from './params.js'
import { deviceHistory, devices, latest, listMeasurements, pointValue, series } from './queries.js'
import { BatchReadings, SingleReading, type TelemetryBody, toMessages } from './telemetry.js'

export { createLiveHub, topicMatches, type LiveHub, type LiveMessage } from './live.js'
export { apiOpenApi, openApiDocument } from './openapi.js'

export type ApiOptions = {
  db: () => Kysely<DB>
  log: Logger
  live: LiveHub
  /**
   * HTTP ingest: `check` validates a data message exactly as MQTT ingest would (a reason, or undefined);
   * `accept` hands it to ingest as a QoS 1 message and resolves once it is durable.
   */
  telemetry: {
    check: (topic: string, payload: Buffer) => string | undefined
    accept: (msg: { topic: string; payload: Buffer; clientId: string }) => Promise<void>
  }
  /** Where readings without site_id/system go: `{siteId}/{system}/{device_id}/data`. */
  defaults?: { siteId: string; system: string }
  /** The ecoflow_measurements columns that are readings, for series of source=ecoflow (src/rollup's list). */
  ecoflowColumns?: readonly string[]
  version: string
  /** Operations of other modules served under /api (commands, setup), for the OpenAPI document. */
  openApi?: readonly OpenApiPart[]
}

/**
 * /api/v1: telemetry queries (raw, downsampled, latest), device status, HTTP ingest, the live message
 * stream and the OpenAPI document. Authentication and scopes are http/'s middleware (read for GET,
 * ingest for POST /telemetry); the OpenAPI document is public.
 */
export function createApi(opts: ApiOptions) {
  const routes = new Hono()
  const doc = openApiDocument(opts.version, opts.openApi)
  routes.get('/api/v1/openapi.json', (c) => c.json(doc))
  measurementRoutes(routes, opts)
  deviceRoutes(routes, opts)
  telemetryRoute(routes, opts)
  liveRoute(routes, opts.live)
  return { routes }
}

type Routes = Hono

/** GET /measurements (raw rows, paged) and /measurements/series (downsampled). */
function measurementRoutes(routes: Routes, opts: ApiOptions): void {
  const { db } = opts
  routes.get('/api/v1/measurements', scope('read'), async (c) => {
    const q = parseQuery(ListQuery, c.req.queries())
    const { from, to } = timeRange(q)
    const order = q.order ?? 'desc'
    const r = await listMeasurements(db(), {
      ...q,
      from,
      to,
      order,
      limit: q.limit ?? 1000,
      after: decodeCursor(q.cursor, 2),
    })
    const last = r.rows[r.rows.length - 1]
    const next = r.more && last ? encodeCursor([last.ts_key, last.id]) : null
    if (wantsCsv(q.format, c.req.header('accept'))) {
      const header =
        q.metric === undefined
          ? ['ts', 'site_id', 'system', 'device_id', 'location', 'metrics']
          : ['ts', 'site_id', 'system', 'device_id', 'location', 'metric', 'value']
      const rows = r.rows.map((m) =>
        q.metric === undefined
          ? [m.ts, m.site_id, m.system, m.device_id, m.location, m.metrics]
          : [m.ts, m.site_id, m.system, m.device_id, m.location, q.metric, m.value],
      )
      return csv(c, toCsv(header, rows), next)
    }
    const items = r.rows.map(({ ts_key: _key, value, ...m }) =>
      q.metric === undefined ? m : { ...m, value },
    )
    return c.json({ from, to, order, items, next })
  })

  routes.get('/api/v1/measurements/series', scope('read'), async (c) => {
    const q = parseQuery(SeriesQuery, c.req.queries())
    if ((q.metric === undefined) === (q.metrics === undefined))
      throw new HTTPException(400, {
        message: 'metric is required (or metrics, a comma-separated list; not both)',
      })
    const metrics =
      q.metric !== undefined ? [q.metric] : [...new Set((q.metrics as string).split(','))]
    const range = timeRange(q)
    const r = await series(db(), { ...q, metrics, ...range, ecoflowColumns: opts.ecoflowColumns })
    if (wantsCsv(q.format, c.req.header('accept'))) {
      return csv(
        c,
        toCsv(
          ['t', 'site_id', 'system', 'device_id', 'metric', 'value', 'n'],
          r.rows.map((p) => [
            p.t,
            p.site_id,
            p.system,
            p.device_id,
            p.metric,
            pointValue(p, q.agg),
            p.n,
          ]),
        ),
        null,
      )
    }
    return c.json({
      metric: q.metric ?? metrics.join(','),
      source: q.source,
      bucket: q.bucket,
      agg: q.agg,
      from: r.from,
      to: r.to,
      series: groupSeries(r.rows, q.agg),
    })
  })
}

type Point = Awaited<ReturnType<typeof series>>['rows'][number]

/** Points in query order → one series per device and metric. */
function groupSeries(rows: readonly Point[], agg: Agg) {
  const bySeries = new Map<
    string,
    {
      site_id: string
      system: string
      device_id: string
      metric: string
      points: Array<{ t: Date; value: number | string | null; n: number }>
    }
  >()
  for (const p of rows) {
    const key = JSON.stringify([p.site_id, p.system, p.device_id, p.metric])
    let s = bySeries.get(key)
    if (!s)
      bySeries.set(
        key,
        (s = {
          site_id: p.site_id,
          system: p.system,
          device_id: p.device_id,
          metric: p.metric,
          points: [],
        }),
      )
    s.points.push({ t: p.t, value: pointValue(p, agg), n: p.n })
  }
  return [...bySeries.values()]
}

/** GET /latest, /devices, /fleet, /devices/:id/history and /devices/:id. */
function deviceRoutes(routes: Routes, opts: ApiOptions): void {
  const { db } = opts
  routes.get('/api/v1/latest', scope('read'), async (c) => {
    const q = parseQuery(LatestQuery, c.req.queries())
    const r = await latest(db(), { ...q, limit: q.limit ?? 1000, after: decodeCursor(q.cursor, 3) })
    const last = r.rows[r.rows.length - 1]
    const next = r.more && last ? encodeCursor([last.site_id, last.system, last.device_id]) : null
    if (wantsCsv(q.format, c.req.header('accept'))) {
      return csv(
        c,
        toCsv(
          ['site_id', 'system', 'device_id', 'ts', 'location', 'metrics'],
          r.rows.map((m) => [m.site_id, m.system, m.device_id, m.ts, m.location, m.metrics]),
        ),
        next,
      )
    }
    return c.json({ items: r.rows, next })
  })

  routes.get('/api/v1/devices', scope('read'), async (c) => {
    const q = parseQuery(DevicesQuery, c.req.queries())
    const after = decodeCursor(q.cursor, 1)
    const r = await devices(db(), { site_id: q.site_id, limit: q.limit ?? 1000, after: after?.[0] })
    const last = r.rows[r.rows.length - 1]
    const next = r.more && last ? encodeCursor([last.device_id]) : null
    if (wantsCsv(q.format, c.req.header('accept'))) {
      const rows = r.rows.map((d) => [
        d.device_id,
        d.site_id,
        d.device_model,
        d.firmware,
        d.online,
        d.last_seen,
        d.status?.active_scenario ?? null,
        d.status?.signal_strength_dbm ?? null,
      ])
      return csv(
        c,
        toCsv(
          [
            'device_id',
            'site_id',
            'device_model',
            'firmware',
            'online',
            'last_seen',
            'active_scenario',
            'signal_strength_dbm',
          ],
          rows,
        ),
        next,
      )
    }
    return c.json({ items: r.rows, next })
  })

  // Every device of every kind with its newest readings: the console's fleet page.
  routes.get('/api/v1/fleet', scope('read'), async (c) => {
    const q = parseQuery(FleetQuery, c.req.queries())
    const r = await fleet(db(), { site_id: q.site_id, device_id: q.device_id })
    const items = r.devices.filter((d) => matches(d, q))
    return c.json({ items, truncated: r.truncated, max: MAX_FLEET })
  })

  routes.get('/api/v1/devices/:id/history', scope('read'), async (c) => {
    const q = parseQuery(HistoryQuery, c.req.queries())
    const id = c.req.param('id')
    if (id.length > 128)
      throw new HTTPException(400, { message: 'device id is longer than 128 characters' })
    return c.json(
      await deviceHistory(db(), { device_id: id, site_id: q.site_id, limit: q.limit ?? 50 }),
    )
  })

  routes.get('/api/v1/devices/:id', scope('read'), async (c) => {
    const r = await devices(db(), { device_id: c.req.param('id'), limit: 1 })
    const device = r.rows[0]
    if (!device)
      throw new HTTPException(404, { message: `no device ${c.req.param('id').slice(0, 128)}` })
    return c.json({ device })
  })
}

/** POST /telemetry: HTTP ingest, answered once every row is durable. */
function telemetryRoute(routes: Routes, opts: ApiOptions): void {
  const defaults = opts.defaults ?? { siteId: 'paku', system: 'edge' }
  routes.post('/api/v1/telemetry', scope('ingest'), async (c) => {
    const body = await readJson(
      c.req,
      'body must be JSON: {device_id, timestamp, metric, value, unit?} or {device_id, batch_timestamp, readings: [...]}',
    )
    if (typeof body !== 'object' || body === null || Array.isArray(body))
      throw new HTTPException(400, {
        message: 'body must be a JSON object: one reading or a batch',
      })
    // A batch is told by its readings array; each shape then gets its own, precise messages.
    const parsed: v.InferOutput<typeof TelemetryBody> =
      'readings' in body ? validate(BatchReadings, body) : validate(SingleReading, body)
    const messages = toMessages(parsed, defaults)
    // All or nothing: every message is checked before any is queued.
    for (const m of messages) {
      const reason = opts.telemetry.check(m.topic, m.payload)
      if (reason) throw new HTTPException(400, { message: reason })
    }
    const keyName = (c.get('keyName' as never) as string | undefined) ?? 'http'
    try {
      // Answered only once every row is committed or spooled, as a QoS 1 PUBACK is.
      await Promise.all(
        messages.map((m) =>
          opts.telemetry.accept({
            topic: m.topic,
            payload: m.payload,
            clientId: `http:${keyName}`,
          }),
        ),
      )
    } catch (err) {
      opts.log.warn('HTTP telemetry not stored', { err: (err as Error).message })
      throw new HTTPException(503, {
        message: 'telemetry not stored (database and spool unavailable); retry later',
      })
    }
    for (const m of messages)
      opts.live.push({
        topic: m.topic,
        payload: m.payload,
        clientId: `http:${keyName}`,
        qos: 1,
        via: 'http',
      })
    return c.json({
      stored: messages.reduce((n, m) => n + m.readings, 0),
      rows: messages.length,
      topic: messages[0]?.topic,
    })
  })
}

/** GET /live: server-sent events of the messages matching `topic`. */
function liveRoute(routes: Routes, live: LiveHub): void {
  routes.get('/api/v1/live', scope('read'), (c) => {
    const q = v.safeParse(LiveQuery, { topic: c.req.query('topic') })
    if (!q.success) throw new HTTPException(400, { message: q.issues[0].message })
    const filter = q.output.topic
    const enc = new TextEncoder()
    let cleanup = () => undefined as void
    const stream = new ReadableStream<Uint8Array>(
      {
        start(controller) {
          // desiredSize is the room left in this client's queue: full means drop (counted by the hub).
          const send = (s: string) => {
            if ((controller.desiredSize ?? 0) <= 0) return false
            controller.enqueue(enc.encode(s))
            return true
          }
          const close = () => {
            cleanup()
            try {
              controller.close()
            } catch {
              // already closed or cancelled
            }
          }
          const remove = live.listen(filter, send, close)
          // Proxies close idle streams; a comment line every 15 s keeps it open.
          const heartbeat = setInterval(() => send(': keep-alive\n\n'), 15_000)
          heartbeat.unref()
          cleanup = () => {
            clearInterval(heartbeat)
            remove()
          }
          send(`retry: 3000\nevent: ready\ndata: ${JSON.stringify({ topic: filter })}\n\n`)
        },
        cancel() {
          cleanup()
        },
      },
      new CountQueuingStrategy({ highWaterMark: LIVE_QUEUE }),
    )
    c.req.raw.signal.addEventListener('abort', () => cleanup())
    return new Response(stream, {
      headers: {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
        'x-accel-buffering': 'no',
      },
    })
  })
}

function csv(c: Context, body: string, next: string | null): Response {
  // CSV has no room for the cursor: it travels in a Link-like header.
  const headers: Record<string, string> = { 'content-type': 'text/csv; charset=utf-8' }
  if (next) headers['x-next-cursor'] = next
  return c.body(body, 200, headers)
}
