/**
 * Property-based tests over every parser at paku's boundaries: whatever bytes arrive, each one returns
 * a result or a clear reason, and never throws (a throw in the MQTT path would reach aedes).
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { canPublish, canSubscribe } from './broker/acl.js'
import { PacketSizeGuard } from './broker/packet-guard.js'
import { loadConfig } from './config/index.js'
import { controlBody, ControlRequest } from './ecoflow/controls.js'
import { detectFamily, mapQuota, FAMILIES } from './ecoflow/mapping.js'
import { parseTimestamp } from './ingest/payloads.js'
import { toRow } from './ingest/records.js'
import { parseTopic } from './ingest/topic.js'
import { parseRange } from './ota/download.js'
import { inspectImage } from './ota/image.js'
import { parseUpdateHeaders } from './ota/pull.js'
import { RolloutBody } from './ota/requests.js'
import * as v from 'valibot'

const RUNS = { numRuns: 2000 }
const topicLike = fc
  .array(
    fc.oneof(
      fc.string({ maxLength: 12 }),
      fc.constantFrom(
        'paku',
        'edge',
        'data',
        'status',
        'ota',
        'config',
        'report',
        '',
        '+',
        '#',
        '$SYS',
      ),
    ),
    { maxLength: 8 },
  )
  .map((l) => l.join('/'))
const jsonish = fc.oneof(
  fc.json(),
  fc.string(),
  fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b).toString('latin1')),
)

describe('property: ingest never throws and always explains a refusal', () => {
  it('parseTopic classifies any topic', () => {
    fc.assert(
      fc.property(fc.oneof(topicLike, fc.string()), (topic) => {
        const r = parseTopic(topic)
        assert.ok(['route', 'ignore', 'reject'].includes(r.kind))
        if (r.kind === 'reject') assert.ok(r.reason.length > 0)
      }),
      RUNS,
    )
  })

  it('toRow turns any payload on any routed topic into a row or a reason', () => {
    fc.assert(
      fc.property(topicLike, jsonish, (topic, payload) => {
        const r = parseTopic(topic)
        if (r.kind !== 'route') return
        const row = toRow(r.route, Buffer.from(payload, 'latin1'), new Date())
        if (!row.ok) assert.ok(row.reason.length > 0)
        else if (row.row.kind === 'measurement') {
          const m = row.row.metrics
          assert.doesNotThrow(() => JSON.parse(m))
        }
      }),
      RUNS,
    )
  })

  it('valid-looking data payloads with arbitrary metrics are stored verbatim', () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.string({ minLength: 1, maxLength: 10 }), fc.jsonValue(), {
          minKeys: 1,
          maxKeys: 5,
        }),
        (metrics) => {
          const row = toRow(
            { type: 'data', siteId: 'p', system: 's', deviceId: 'd' },
            Buffer.from(JSON.stringify({ device_id: 'd', metrics })),
            new Date(),
          )
          const text = JSON.stringify(metrics)
          // Text PostgreSQL cannot store is refused with a reason; everything else round-trips.
          if (!row.ok) assert.match(row.reason, /U\+0000|surrogate/)
          else if (row.row.kind === 'measurement')
            assert.deepEqual(JSON.parse(row.row.metrics), JSON.parse(text))
        },
      ),
      RUNS,
    )
  })

  it('parseTimestamp accepts or refuses any string, and what it accepts is a real date', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
        ),
        (s) => {
          const r = parseTimestamp(s, new Date(0))
          if (r.ok) assert.ok(Number.isFinite(r.ts.getTime()))
          else assert.match(r.reason, /timestamp/)
        },
      ),
      RUNS,
    )
  })
})

describe('property: broker boundaries', () => {
  it('the packet guard passes or fails any byte stream, never throws', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 20 }), (chunks) => {
        const g = new PacketSizeGuard(256)
        g.on('error', () => undefined)
        g.on('data', () => undefined)
        for (const c of chunks) g.write(Buffer.from(c))
      }),
      RUNS,
    )
  })

  it('a device never gets another device’s command topics, whatever its id', () => {
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 20 }),
        fc.string({ minLength: 1, maxLength: 20 }),
        (me, other) => {
          fc.pre(me !== other && !other.includes('/'))
          const who = { rights: 'device' as const, deviceId: me }
          assert.equal(canSubscribe(who, `paku/edge/${other}/cmd/ota`), false)
          assert.equal(canPublish(who, `paku/edge/${other}/status`), false)
        },
      ),
      RUNS,
    )
  })
})

describe('property: config and EcoFlow inputs', () => {
  it('loadConfig answers any JSON file with a config or path: message lines', () => {
    fc.assert(
      fc.property(
        fc.json(),
        fc.dictionary(
          fc.constantFrom(
            'PAKU_MQTT_PORT',
            'PAKU_HTTP_PORT',
            'PAKU_LOG_LEVEL',
            'PAKU_ECOFLOW_DEVICES',
            'PAKU_MQTT_ANONYMOUS',
          ),
          fc.string(),
        ),
        (file, env) => {
          const r = loadConfig({ path: 'c.json', env, readFile: () => file })
          if (!r.ok) for (const line of r.issues) assert.match(line, /^\S.*: .+/)
        },
      ),
      { numRuns: 500 },
    )
  })

  it('EcoFlow mapping survives any quota object', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...FAMILIES),
        fc.dictionary(fc.string({ maxLength: 25 }), fc.jsonValue()),
        (family, quota) => {
          const { columns } = mapQuota(family, quota)
          for (const value of Object.values(columns))
            assert.ok(value === null || Number.isFinite(value))
          assert.ok(FAMILIES.includes(detectFamily(undefined, quota)))
        },
      ),
      RUNS,
    )
  })

  it('EcoFlow controls validate any body before anything is built', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.constantFrom(...FAMILIES), (body, family) => {
        const parsed = v.safeParse(ControlRequest, body)
        if (!parsed.success) return
        const built = controlBody(family, 'SN1', parsed.output)
        assert.ok('body' in built || built.error.length > 0)
      }),
      RUNS,
    )
  })
})

describe('property: OTA inputs', () => {
  it('inspectImage accepts an image or explains why not, for any bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, magic) => {
        const data = Uint8Array.from(bytes)
        if (magic && data.length > 0) data[0] = 0xe9
        const r = inspectImage(data, 512)
        if ('error' in r) assert.ok(r.error.length > 0)
        else {
          assert.equal(r.size, data.length)
          assert.match(r.sha256, /^[0-9a-f]{64}$/)
          if (r.app) assert.match(r.app.version, /^[\x20-\x7e]*$/)
        }
      }),
      RUNS,
    )
  })

  it('HTTPUpdate headers parse or are refused, whatever a client sends', () => {
    const names = [
      'x-esp32-sta-mac',
      'x-esp32-mode',
      'x-esp32-free-space',
      'x-esp32-sketch-md5',
      'x-esp32-sketch-sha256',
      'x-esp32-version',
      'x-esp8266-sta-mac',
      'x-esp8266-mode',
    ]
    fc.assert(
      fc.property(
        fc.dictionary(fc.constantFrom(...names), fc.string({ maxLength: 80 })),
        (headers) => {
          const r = parseUpdateHeaders((n) => headers[n])
          if ('error' in r) assert.ok(r.error.length > 0)
          else assert.match(r.staMac ?? '', /^[0-9A-F]{2}(:[0-9A-F]{2}){5}$/)
        },
      ),
      RUNS,
    )
  })

  it('a Range header gives a range inside the image, 416, or is ignored', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.tuple(fc.nat(), fc.nat()).map(([a, b]) => `bytes=${a}-${b}`),
          fc.nat().map((n) => `bytes=-${n}`),
        ),
        fc.integer({ min: 1, max: 1_000_000 }),
        (header, size) => {
          const r = parseRange(header, size)
          if (r === undefined || r === 'unsatisfiable') return
          assert.ok(r.start >= 0 && r.start <= r.end && r.end < size)
        },
      ),
      RUNS,
    )
  })

  it('rollout bodies validate or name the field, for any JSON', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (body) => {
        const r = v.safeParse(RolloutBody, body)
        if (!r.success) assert.ok(r.issues.length > 0)
      }),
      RUNS,
    )
  })
})
