import { AGGS, MAX_PAGE, MAX_POINTS, SOURCES } from './params.js'
import { MAX_READINGS } from './telemetry.js'

/**
 * The OpenAPI 3.1 document of /api/v1, written by hand: short, and a test checks that it lists exactly
 * the routes the app registers. The commands routes live in src/commands but are part of /api/v1.
 */

type Obj = Record<string, unknown>

const str = (description: string, extra: Obj = {}): Obj => ({
  type: 'string',
  description,
  ...extra,
})
const q = (
  name: string,
  description: string,
  schema: Obj = { type: 'string' },
  required = false,
): Obj => ({ name, in: 'query', required, description, schema })
const ref = (name: string): Obj => ({ $ref: `#/components/schemas/${name}` })
const json = (schema: Obj): Obj => ({ 'application/json': { schema } })
const ok = (description: string, schema: Obj, csv = false): Obj => ({
  '200': {
    description,
    content: { ...json(schema), ...(csv ? { 'text/csv': { schema: { type: 'string' } } } : {}) },
  },
  '400': { $ref: '#/components/responses/BadRequest' },
  '401': { $ref: '#/components/responses/Unauthorized' },
})

const filters = [
  q('site_id', 'Site, e.g. paku'),
  q('system', 'System, e.g. sensors, heater'),
  q('device_id', 'Device id'),
]
const format = q('format', 'json (default) or csv; `Accept: text/csv` also selects CSV', {
  enum: ['json', 'csv'],
})
const paging = [
  q('limit', `Page size, 1–${MAX_PAGE} (default 1000)`, {
    type: 'integer',
    minimum: 1,
    maximum: MAX_PAGE,
  }),
  q('cursor', 'The `next` of the previous page (CSV: the X-Next-Cursor header)'),
]
const range = [
  q('from', 'Start, ISO 8601 (default: a day before `to`)', {
    type: 'string',
    format: 'date-time',
  }),
  q('to', 'End, exclusive, ISO 8601 (default: now)', { type: 'string', format: 'date-time' }),
]
const page = (item: Obj): Obj => ({
  type: 'object',
  properties: {
    items: { type: 'array', items: item },
    next: { type: ['string', 'null'], description: 'cursor of the next page; null on the last' },
  },
  required: ['items', 'next'],
})

export function openApiDocument(version: string): Obj {
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
    paths: {
      '/api/setup': {
        post: {
          summary:
            'First run: create the first admin key (every scope) with the one-time token of the setup link paku logs at start while no admin key exists',
          security: [],
          requestBody: {
            required: true,
            content: json({
              type: 'object',
              required: ['token', 'name'],
              properties: {
                token: str('from the link `/ui/#setup=TOKEN`'),
                name: str("the key's name, a-z 0-9 _ . -"),
              },
            }),
          },
          responses: {
            '201': {
              description: 'The key, shown once',
              content: json({
                type: 'object',
                properties: {
                  name: str(''),
                  scopes: { type: 'array', items: { type: 'string' } },
                  key: str(''),
                },
              }),
            },
            '400': { $ref: '#/components/responses/BadRequest' },
            '401': { description: 'Wrong token', content: json(ref('Error')) },
            '409': { description: 'A revoked key has that name', content: json(ref('Error')) },
            '410': {
              description: 'No link open: a key exists, or the link was used or has expired',
              content: json(ref('Error')),
            },
            '429': {
              description: 'Too many wrong tokens from this address',
              content: json(ref('Error')),
            },
          },
        },
      },
      '/api/v1/openapi.json': {
        get: {
          summary: 'This document',
          security: [],
          responses: { '200': { description: 'OpenAPI 3.1', content: json({ type: 'object' }) } },
        },
      },
      '/api/v1/measurements': {
        get: {
          summary: 'Raw measurements in a time range, keyset-paginated',
          parameters: [
            ...filters,
            q('metric', 'Only rows that have this metric; adds its `value`'),
            ...range,
            q('order', 'desc (newest first, default) or asc', { enum: ['asc', 'desc'] }),
            ...paging,
            format,
          ],
          responses: ok(
            'A page of rows',
            {
              type: 'object',
              properties: {
                from: str('', { format: 'date-time' }),
                to: str('', { format: 'date-time' }),
                order: str(''),
                items: { type: 'array', items: ref('Measurement') },
                next: { type: ['string', 'null'] },
              },
            },
            true,
          ),
        },
      },
      '/api/v1/measurements/series': {
        get: {
          summary:
            'Metrics downsampled per device: 1m from raw rows, 5m, 1h, 6h and 1d from the rollups',
          parameters: [
            ...filters,
            q(
              'metric',
              'The metric, e.g. temperature_c (source ecoflow: a column such as soc_percent; status: signal_strength_dbm, uptime_seconds, heater_status); this or `metrics`',
            ),
            q(
              'metrics',
              'Several metrics at once, comma-separated (at most 32): one series per device and metric',
            ),
            q(
              'source',
              'measurements (default, telemetry), ecoflow (EcoFlow polls: no site, system ecoflow, device_id the serial number) or status (edge device status, system edge)',
              { enum: [...SOURCES] },
            ),
            ...range,
            q(
              'bucket',
              `1m (raw rows), 5m (rollup_5m), 1h (default; rollup_1h), 6h or 1d (rollup_6h); at most ${MAX_POINTS} buckets per query`,
              { enum: ['1m', '5m', '1h', '6h', '1d'] },
            ),
            q('agg', 'avg (default), min, max or last', { enum: [...AGGS] }),
            format,
          ],
          responses: ok(
            'Series',
            {
              type: 'object',
              properties: {
                metric: str(''),
                source: str(''),
                bucket: str(''),
                agg: str(''),
                from: str(''),
                to: str(''),
                series: { type: 'array', items: ref('Series') },
              },
            },
            true,
          ),
        },
      },
      '/api/v1/latest': {
        get: {
          summary: 'The newest measurement of every device',
          parameters: [...filters, ...paging, format],
          responses: ok('A page of devices', page(ref('Latest')), true),
        },
      },
      '/api/v1/devices': {
        get: {
          summary: 'Edge devices with online state, firmware, last seen and their newest status',
          parameters: [q('site_id', 'Site'), ...paging, format],
          responses: ok('A page of devices', page(ref('Device')), true),
        },
      },
      '/api/v1/fleet': {
        get: {
          summary:
            'Every device paku knows, of every kind (edge devices, sensors, heaters, fridges, EcoFlow stations), with online state, last seen, firmware, battery, signal and newest readings; newest first',
          parameters: [
            q('site_id', 'Site (EcoFlow stations have none)'),
            q('system', 'A system the device reports under, e.g. sensors, heater, edge, ecoflow'),
            q('device_id', 'Device id'),
            q(
              'q',
              'Text in the id, location, model, kind, site or gateway (at most 128 characters)',
            ),
          ],
          responses: ok('Devices', {
            type: 'object',
            properties: {
              items: { type: 'array', items: ref('FleetDevice') },
              truncated: { type: 'boolean' },
              max: { type: 'integer' },
            },
          }),
        },
      },
      '/api/v1/devices/{id}/history': {
        get: {
          summary:
            "An edge device's newest status messages (newest first) and the configuration it last reported",
          parameters: [
            { name: 'id', in: 'path', required: true, schema: { type: 'string' } },
            q('site_id', "Site (default: the device's, else paku)"),
            q('limit', 'Status messages, 1–500 (default 50)', {
              type: 'integer',
              minimum: 1,
              maximum: 500,
            }),
          ],
          responses: ok('History', {
            type: 'object',
            properties: {
              site_id: str(''),
              status: {
                type: 'array',
                items: {
                  type: 'object',
                  properties: { ts: str('', { format: 'date-time' }), status: { type: 'object' } },
                },
              },
              config: { type: ['object', 'null'] },
            },
          }),
        },
      },
      '/api/v1/devices/{id}': {
        get: {
          summary: 'One device',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          responses: {
            ...ok('The device', { type: 'object', properties: { device: ref('Device') } }),
            '404': { $ref: '#/components/responses/NotFound' },
          },
        },
      },
      '/api/v1/telemetry': {
        post: {
          summary: "HTTP ingest (paku-core's PakuIotClient): answered once the rows are durable",
          requestBody: { required: true, content: json({ oneOf: [ref('Reading'), ref('Batch')] }) },
          responses: {
            ...ok('Stored', {
              type: 'object',
              properties: {
                stored: { type: 'integer' },
                rows: { type: 'integer' },
                topic: str(''),
              },
            }),
            '413': { $ref: '#/components/responses/TooLarge' },
            '503': {
              description: 'Database and spool unavailable: retry',
              content: json(ref('Error')),
            },
          },
        },
      },
      '/api/v1/live': {
        get: {
          summary:
            'Server-sent events of incoming messages (event `message`; `dropped` when this client fell behind)',
          parameters: [q('topic', 'MQTT topic filter, default #')],
          responses: ok('text/event-stream', { type: 'string' }),
        },
      },
      '/api/v1/commands': {
        get: {
          summary: 'Commands, newest first',
          parameters: [
            q('device_id', 'Device'),
            q('status', 'pending, acknowledged, failed or expired', {
              enum: ['pending', 'acknowledged', 'failed', 'expired'],
            }),
            ...paging,
          ],
          responses: ok('A page of commands', page(ref('Command'))),
        },
        post: {
          summary: 'Send a command or configuration to a device',
          requestBody: { required: true, content: json(ref('NewCommand')) },
          responses: {
            '202': {
              description: 'Published; pending until acknowledged',
              content: json({ type: 'object', properties: { command: ref('Command') } }),
            },
            ...ok('', {}),
            '404': { $ref: '#/components/responses/NotFound' },
          },
        },
      },
      '/api/v1/commands/{id}': {
        get: {
          summary: 'One command',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          responses: {
            ...ok('The command', { type: 'object', properties: { command: ref('Command') } }),
            '404': { $ref: '#/components/responses/NotFound' },
          },
        },
      },
    },
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
      schemas: {
        Error: {
          type: 'object',
          properties: { status: { type: 'integer' }, message: { type: 'string' } },
          required: ['status', 'message'],
        },
        Measurement: {
          type: 'object',
          properties: {
            id: str(''),
            site_id: str(''),
            system: str(''),
            device_id: str(''),
            location: { type: ['string', 'null'] },
            mac: { type: ['string', 'null'] },
            ts: str('', { format: 'date-time' }),
            metrics: { type: 'object' },
            value: { description: 'with ?metric=' },
          },
        },
        Series: {
          type: 'object',
          properties: {
            site_id: str(''),
            system: str(''),
            device_id: str(''),
            metric: str(''),
            points: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  t: str('bucket start', { format: 'date-time' }),
                  value: { type: ['number', 'string', 'null'] },
                  n: { type: 'integer', description: 'numeric samples' },
                },
              },
            },
          },
        },
        Latest: {
          type: 'object',
          properties: {
            site_id: str(''),
            system: str(''),
            device_id: str(''),
            ts: str('', { format: 'date-time' }),
            location: { type: ['string', 'null'] },
            metrics: { type: 'object' },
          },
        },
        Device: {
          type: 'object',
          properties: {
            device_id: str(''),
            site_id: { type: ['string', 'null'] },
            device_model: str(''),
            firmware: { type: ['string', 'null'] },
            online: { type: ['boolean', 'null'] },
            last_seen: { type: ['string', 'null'] },
            status: { type: ['object', 'null'] },
            status_at: { type: ['string', 'null'] },
          },
        },
        FleetDevice: {
          type: 'object',
          properties: {
            site_id: { type: ['string', 'null'] },
            device_id: str(''),
            kind: { enum: ['edge', 'sensor', 'heater', 'fridge', 'ecoflow', 'other'] },
            systems: { type: 'array', items: { type: 'string' } },
            online: {
              type: 'boolean',
              description:
                'edge devices: their own online flag; others: a message within the last 10 minutes',
            },
            last_seen: { type: ['string', 'null'] },
            model: { type: ['string', 'null'] },
            firmware: { type: ['string', 'null'] },
            location: { type: ['string', 'null'] },
            via: { type: ['string', 'null'], description: 'the gateway relaying this sensor' },
            battery: { type: ['object', 'null'], properties: { value: {}, unit: str('') } },
            signal: { type: ['object', 'null'], properties: { value: {}, unit: str('') } },
            readings: {
              type: 'object',
              additionalProperties: {
                type: 'object',
                properties: {
                  value: {},
                  source: { enum: ['measurements', 'status', 'ecoflow'] },
                  system: str(''),
                  at: str(''),
                },
              },
            },
          },
        },
        Reading: {
          type: 'object',
          required: ['device_id', 'metric', 'value'],
          properties: {
            device_id: str(''),
            timestamp: {
              type: ['string', 'number', 'null'],
              description: 'ISO 8601 or epoch seconds; missing or "" = receive time',
            },
            metric: str(''),
            value: { type: ['number', 'string', 'boolean'] },
            unit: str('accepted, not stored'),
            site_id: str('default paku'),
            system: str('default edge'),
          },
        },
        Batch: {
          type: 'object',
          required: ['device_id', 'readings'],
          properties: {
            device_id: str(''),
            batch_timestamp: { type: ['string', 'number', 'null'] },
            readings: {
              type: 'array',
              maxItems: MAX_READINGS,
              items: {
                type: 'object',
                required: ['metric', 'value'],
                properties: {
                  metric: str(''),
                  value: { type: ['number', 'string', 'boolean'] },
                  unit: str(''),
                  timestamp: { type: ['string', 'number', 'null'] },
                },
              },
            },
            site_id: str(''),
            system: str(''),
          },
        },
        NewCommand: {
          type: 'object',
          required: ['device_id', 'type'],
          properties: {
            device_id: str(''),
            type: { enum: ['control', 'config', 'heater'] },
            scenario: str('control: heater_active, power_save or default'),
            config: {
              type: 'object',
              description: 'config: partial config (timing, sensors, power, peripherals, ha)',
            },
            cmd: { enum: ['start', 'stop', 'vent', 'reset'], description: 'heater' },
            power: { type: 'integer', minimum: 0, maximum: 9 },
            mode: { enum: ['power', 'thermostat'] },
            target_temp: { type: 'number' },
            ttl_seconds: {
              type: 'integer',
              minimum: 1,
              maximum: 604800,
              description: 'pending longer than this → expired (default 600)',
            },
          },
        },
        Command: {
          type: 'object',
          properties: {
            id: str(''),
            device_id: str(''),
            type: str(''),
            topic: str(''),
            payload: { type: 'object' },
            retain: { type: 'boolean' },
            status: { enum: ['pending', 'acknowledged', 'failed', 'expired'] },
            created_at: str(''),
            expires_at: str(''),
            closed_at: { type: ['string', 'null'] },
            closed_by: {
              type: ['string', 'null'],
              description: 'ack topic, state topic, ttl or publish error',
            },
            ack: { type: ['object', 'null'] },
            error: { type: ['string', 'null'] },
            created_by: { type: ['string', 'null'] },
          },
        },
      },
    },
  }
}
