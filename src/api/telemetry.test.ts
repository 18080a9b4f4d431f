import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import * as v from 'valibot'
import { BatchReadings, SingleReading, toMessages } from './telemetry.js'

describe('HTTP telemetry bodies', () => {
  it('groups a batch by timestamp and converts epoch seconds and milliseconds', () => {
    const body = v.parse(BatchReadings, {
      device_id: 'ESP32-01',
      batch_timestamp: 1768485600,
      readings: [
        { metric: 'a', value: 1 },
        { metric: 'b', value: 'x', timestamp: 1768485600000 },
        { metric: 'c', value: true, timestamp: '2026-01-15T14:00:00+02:00' },
      ],
    })
    const m = toMessages(body, { siteId: 'paku', system: 'edge' })
    assert.deepEqual(
      m.map((x) => [x.topic, JSON.parse(x.payload.toString()), x.readings]),
      [
        [
          'paku/edge/ESP32-01/data',
          {
            device_id: 'ESP32-01',
            timestamp: '2026-01-15T14:00:00.000Z',
            metrics: { a: 1, b: 'x' },
          },
          2,
        ],
        [
          'paku/edge/ESP32-01/data',
          { device_id: 'ESP32-01', timestamp: '2026-01-15T14:00:00+02:00', metrics: { c: true } },
          1,
        ],
      ],
    )
  })

  it('leaves the timestamp out when there is none (ingest uses the receive time)', () => {
    const m = toMessages(
      v.parse(SingleReading, {
        device_id: 'd',
        metric: 'm',
        value: 1,
        site_id: 'cabin',
        system: 'sensors',
      }),
      { siteId: 'paku', system: 'edge' },
    )
    assert.deepEqual(
      m.map((x) => [x.topic, JSON.parse(x.payload.toString())]),
      [['cabin/sensors/d/data', { device_id: 'd', metrics: { m: 1 } }]],
    )
  })

  it('never throws on arbitrary JSON and only ever builds 4-level data topics', () => {
    const reading = fc.record(
      {
        metric: fc.string(),
        value: fc.oneof(fc.double(), fc.string(), fc.boolean(), fc.constant(null)),
        timestamp: fc.oneof(fc.string(), fc.integer(), fc.double(), fc.constant(undefined)),
      },
      { requiredKeys: [] },
    )
    const body = fc.oneof(
      fc.jsonValue(),
      fc.record(
        {
          device_id: fc.string(),
          metric: fc.string(),
          value: fc.jsonValue(),
          timestamp: fc.jsonValue(),
        },
        { requiredKeys: [] },
      ),
      fc.record(
        {
          device_id: fc.string(),
          readings: fc.array(reading, { maxLength: 5 }),
          batch_timestamp: fc.oneof(fc.integer(), fc.double(), fc.string()),
        },
        { requiredKeys: [] },
      ),
    )
    fc.assert(
      fc.property(body, (b) => {
        const schema =
          typeof b === 'object' && b !== null && 'readings' in b ? BatchReadings : SingleReading
        const r = v.safeParse(schema, b)
        if (!r.success) return
        for (const m of toMessages(r.output, { siteId: 'paku', system: 'edge' })) {
          const levels = m.topic.split('/')
          assert.equal(levels.length, 4)
          assert.equal(levels[3], 'data')
          assert.ok(levels.every((l) => l.length > 0 && !/[+#]/.test(l)))
        }
      }),
      { numRuns: 500 },
    )
  })
})
