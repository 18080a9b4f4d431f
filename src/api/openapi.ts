import {
  errorRef,
  json,
  operationObject,
  ref,
  type Obj,
  type OpenApiPart,
  type Operation,
} from '../util/openapi.js'
import {
  DevicesQuery,
  FleetQuery,
  HistoryQuery,
  LatestQuery,
  ListQuery,
  LiveQuery,
  SeriesQuery,
} from './params.js'
import { TelemetryBody } from './telemetry.js'

/**
 * The OpenAPI 3.1 document of /api/v1. Parameters and request bodies are converted from the valibot
 * schemas the routes validate with (util/openapi.ts); the responses, which no schema checks, are
 * written here. Other modules hand in their own operations (the commands routes, POST /api/setup).
 */

const str = { type: 'string' }
const strOrNull = { type: ['string', 'null'] }
const time = { type: 'string', format: 'date-time' }
const props = (names: readonly string[], schema: Obj = str): Obj =>
  Object.fromEntries(names.map((n) => [n, schema]))
const where = props(['site_id', 'system', 'device_id'])

const ok = (description: string, schema: Obj, csv = false): Obj => ({
  '200': {
    description,
    content: { ...json(schema), ...(csv ? { 'text/csv': { schema: str } } : {}) },
  },
  '400': errorRef('BadRequest'),
  '401': errorRef('Unauthorized'),
})
const page = (item: Obj): Obj => ({
  type: 'object',
  properties: {
    items: { type: 'array', items: item },
    next: { ...strOrNull, description: 'cursor of the next page; null on the last' },
  },
  required: ['items', 'next'],
})
const object = (properties: Obj): Obj => ({ type: 'object', properties })

const operations: Operation[] = [
  {
    method: 'get',
    path: '/api/v1/openapi.json',
    summary: 'This document',
    open: true,
    responses: { '200': { description: 'OpenAPI 3.1', content: json({ type: 'object' }) } },
  },
  {
    method: 'get',
    path: '/api/v1/measurements',
    summary: 'Raw measurements in a time range, keyset-paginated',
    query: ListQuery,
    responses: ok(
      'A page of rows',
      object({
        from: time,
        to: time,
        order: str,
        items: { type: 'array', items: ref('Measurement') },
        next: strOrNull,
      }),
      true,
    ),
  },
  {
    method: 'get',
    path: '/api/v1/measurements/series',
    summary: 'Metrics downsampled per device: 1m from raw rows, 5m, 1h, 6h and 1d from the rollups',
    query: SeriesQuery,
    responses: ok(
      'Series',
      object({
        ...props(['metric', 'source', 'bucket', 'agg', 'from', 'to']),
        series: { type: 'array', items: ref('Series') },
      }),
      true,
    ),
  },
  {
    method: 'get',
    path: '/api/v1/latest',
    summary: 'The newest measurement of every device',
    query: LatestQuery,
    responses: ok('A page of devices', page(ref('Latest')), true),
  },
  {
    method: 'get',
    path: '/api/v1/devices',
    summary: 'Edge devices with online state, firmware, last seen and their newest status',
    query: DevicesQuery,
    responses: ok('A page of devices', page(ref('Device')), true),
  },
  {
    method: 'get',
    path: '/api/v1/fleet',
    summary:
      'Every device paku knows, of every kind (edge devices, sensors, heaters, fridges, EcoFlow stations), with online state, last seen, firmware, battery, signal and newest readings; newest first',
    query: FleetQuery,
    responses: ok(
      'Devices',
      object({
        items: { type: 'array', items: ref('FleetDevice') },
        truncated: { type: 'boolean' },
        max: { type: 'integer' },
      }),
    ),
  },
  {
    method: 'get',
    path: '/api/v1/devices/{id}/history',
    summary:
      "An edge device's newest status messages (newest first) and the configuration it last reported",
    pathParams: { id: 'Device id, at most 128 characters' },
    query: HistoryQuery,
    responses: ok(
      'History',
      object({
        site_id: str,
        status: { type: 'array', items: object({ ts: time, status: { type: 'object' } }) },
        config: { type: ['object', 'null'] },
      }),
    ),
  },
  {
    method: 'get',
    path: '/api/v1/devices/{id}',
    summary: 'One device',
    pathParams: { id: 'Device id' },
    responses: {
      ...ok('The device', object({ device: ref('Device') })),
      '404': errorRef('NotFound'),
    },
  },
  {
    method: 'post',
    path: '/api/v1/telemetry',
    summary:
      "HTTP ingest (paku-core's PakuIotClient): one reading or a batch; answered once the rows are durable",
    body: TelemetryBody,
    responses: {
      ...ok(
        'Stored',
        object({ stored: { type: 'integer' }, rows: { type: 'integer' }, topic: str }),
      ),
      '413': errorRef('TooLarge'),
      '503': { description: 'Database and spool unavailable: retry', content: json(ref('Error')) },
    },
  },
  {
    method: 'get',
    path: '/api/v1/live',
    summary:
      'Server-sent events of incoming messages (event `message`; `dropped` when this client fell behind)',
    query: LiveQuery,
    responses: ok('text/event-stream', str),
  },
]

const reading = { type: ['object', 'null'], properties: { value: {}, unit: str } }
const schemas: Record<string, Obj> = {
  Error: {
    type: 'object',
    properties: { status: { type: 'integer' }, message: str },
    required: ['status', 'message'],
  },
  Measurement: object({
    id: str,
    ...where,
    location: strOrNull,
    mac: strOrNull,
    ts: time,
    metrics: { type: 'object' },
    value: { description: 'with ?metric=' },
  }),
  Series: object({
    ...where,
    metric: str,
    points: {
      type: 'array',
      items: object({
        t: { ...time, description: 'bucket start' },
        value: { type: ['number', 'string', 'null'] },
        n: { type: 'integer', description: 'numeric samples' },
      }),
    },
  }),
  Latest: object({ ...where, ts: time, location: strOrNull, metrics: { type: 'object' } }),
  Device: object({
    device_id: str,
    device_model: str,
    ...props(['site_id', 'firmware', 'last_seen', 'status_at'], strOrNull),
    online: { type: ['boolean', 'null'] },
    status: { type: ['object', 'null'] },
  }),
  FleetDevice: object({
    device_id: str,
    ...props(['site_id', 'last_seen', 'model', 'firmware', 'location'], strOrNull),
    kind: { enum: ['edge', 'sensor', 'heater', 'fridge', 'ecoflow', 'other'] },
    systems: { type: 'array', items: str },
    online: {
      type: 'boolean',
      description:
        'edge devices: their own online flag; others: a message within the last 10 minutes',
    },
    via: { ...strOrNull, description: 'the gateway relaying this sensor' },
    battery: reading,
    signal: reading,
    readings: {
      type: 'object',
      additionalProperties: object({
        value: {},
        source: { enum: ['measurements', 'status', 'ecoflow'] },
        system: str,
        at: str,
      }),
    },
  }),
}

/** The /api/v1 routes of this module, for the document and for the test that holds them to the routes. */
export const apiOpenApi: OpenApiPart = { operations, schemas }

/**
 * The document: this module's operations and those of `parts`. Throws when a schema has a rule the
 * converter cannot express (util/openapi.ts), so such a rule cannot go undocumented.
 */
export function openApiDocument(version: string, parts: readonly OpenApiPart[] = []): Obj {
  const all = [apiOpenApi, ...parts]
  const paths: Record<string, Obj> = {}
  for (const op of all.flatMap((p) => p.operations))
    paths[op.path] = { ...paths[op.path], [op.method]: operationObject(op) }
  return {
    openapi: '3.1.0',
    info: {
      title: 'paku API',
      version,
      description:
        'Telemetry queries, HTTP ingest, device commands and the live message stream. Authenticate with `X-API-Key` or `Authorization: Bearer` (PAKU_ADMIN_API_KEY or a key from `paku key create`): GET routes need the `read` scope, POST /telemetry `ingest`, POST /commands `command`. Errors are `{status, message}`.',
    },
    servers: [{ url: '/' }],
    security: [{ apiKey: [] }, { bearer: [] }],
    paths,
    components: {
      securitySchemes: {
        apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
        bearer: { type: 'http', scheme: 'bearer' },
      },
      responses: {
        BadRequest: { description: 'Invalid parameter or body', content: json(ref('Error')) },
        Unauthorized: { description: 'Missing or wrong key', content: json(ref('Error')) },
        NotFound: { description: 'No such resource', content: json(ref('Error')) },
        TooLarge: { description: 'Body too large', content: json(ref('Error')) },
      },
      schemas: Object.assign({}, ...all.map((p) => p.schemas ?? {})) as Obj,
    },
  }
}
