import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createTopicParser, parseTopic, type TopicResult } from './topic.js'

const route = (r: object): TopicResult => ({ kind: 'route', route: r }) as TopicResult

const cases: Array<{ name: string; topic: string; want: TopicResult | { reject: RegExp } }> = [
  {
    name: 'routes a sensor data topic by its levels',
    topic: 'paku/sensors/ruuvi_cabin/data',
    want: route({ type: 'data', siteId: 'paku', system: 'sensors', deviceId: 'ruuvi_cabin' }),
  },
  {
    name: 'routes heater data with the device from the topic',
    topic: 'paku/heater/ESP32-AABBCCDD/data',
    want: route({ type: 'data', siteId: 'paku', system: 'heater', deviceId: 'ESP32-AABBCCDD' }),
  },
  {
    name: 'routes edge data like any other system',
    topic: 'cabin/edge/ESP32-1/data',
    want: route({ type: 'data', siteId: 'cabin', system: 'edge', deviceId: 'ESP32-1' }),
  },
  {
    name: 'routes edge status',
    topic: 'paku/edge/ESP32-AABBCCDD/status',
    want: route({ type: 'status', siteId: 'paku', deviceId: 'ESP32-AABBCCDD' }),
  },
  {
    name: 'routes the legacy 4-level config',
    topic: 'paku/edge/ESP32-1/config',
    want: route({ type: 'config', siteId: 'paku', deviceId: 'ESP32-1' }),
  },
  {
    name: 'routes config/report (the old collector never stored it)',
    topic: 'paku/edge/ESP32-1/config/report',
    want: route({ type: 'config', siteId: 'paku', deviceId: 'ESP32-1' }),
  },
  {
    name: 'routes ota/status',
    topic: 'paku/edge/ESP32-1/ota/status',
    want: route({ type: 'ota_status', siteId: 'paku', deviceId: 'ESP32-1' }),
  },
  {
    name: 'routes ota/progress',
    topic: 'paku/edge/ESP32-1/ota/progress',
    want: route({ type: 'ota_progress', siteId: 'paku', deviceId: 'ESP32-1' }),
  },
  {
    name: 'routes ota/result',
    topic: 'paku/edge/ESP32-1/ota/result',
    want: route({ type: 'ota_result', siteId: 'paku', deviceId: 'ESP32-1' }),
  },
  {
    name: 'routes the legacy flat ruuvi topic',
    topic: 'paku/ruuvi/van_inside',
    want: route({ type: 'legacy_ruuvi', siteId: 'paku', sensorId: 'van_inside' }),
  },
  {
    name: 'ignores OTA commands to devices',
    topic: 'paku/edge/ESP32-1/cmd/ota',
    want: { kind: 'ignore' },
  },
  {
    name: 'ignores config/set to devices',
    topic: 'paku/edge/ESP32-1/config/set',
    want: { kind: 'ignore' },
  },
  {
    name: 'ignores 5-level light status',
    topic: 'paku/edge/ESP32-1/status/light/1',
    want: { kind: 'ignore' },
  },
  { name: 'ignores heater HA state', topic: 'paku/heater/emu01/state', want: { kind: 'ignore' } },
  { name: 'ignores $SYS topics', topic: '$SYS/broker/heartbeat', want: { kind: 'ignore' } },
  {
    name: 'ignores HA discovery',
    topic: 'homeassistant/sensor/x/config',
    want: { kind: 'ignore' },
  },
  {
    name: 'ignores the edge status topic of another shape',
    topic: 'paku/edge/status',
    want: { kind: 'ignore' },
  },
  {
    name: 'rejects a 3-level data topic',
    topic: 'paku/sensors/data',
    want: { reject: /\(4 levels\), got 3/ },
  },
  {
    name: 'rejects a 5-level data topic',
    topic: 'paku/sensors/a/b/data',
    want: { reject: /\(4 levels\), got 5/ },
  },
  {
    name: 'rejects an empty device level',
    topic: 'paku/sensors//data',
    want: { reject: /level 3 is empty/ },
  },
  {
    name: 'rejects an empty site level',
    topic: '/sensors/x/data',
    want: { reject: /level 1 is empty/ },
  },
  {
    name: 'rejects an empty edge device',
    topic: 'paku/edge//status',
    want: { reject: /level 3 is empty/ },
  },
  {
    name: 'rejects an unknown ota sub-topic',
    topic: 'paku/edge/ESP32-1/ota/bogus',
    want: { reject: /unknown OTA topic ota\/bogus/ },
  },
  {
    name: 'rejects a control character in the device id',
    topic: 'paku/sensors/a\u0000b/data',
    want: { reject: /control character/ },
  },
  {
    name: 'rejects an over-long device id',
    topic: `paku/sensors/${'x'.repeat(129)}/data`,
    want: { reject: /longer than 128/ },
  },
]

describe('parseTopic', () => {
  for (const c of cases) {
    it(c.name, () => {
      const got = parseTopic(c.topic)
      if ('reject' in c.want) {
        assert.equal(got.kind, 'reject', JSON.stringify(got))
        assert.match((got as { reason: string }).reason, c.want.reject)
      } else {
        assert.deepEqual(got, c.want)
      }
    })
  }
})

describe('createTopicParser (parseTopic with its answers remembered)', () => {
  it('answers as parseTopic does for every case, the second time from memory (the same frozen object)', () => {
    const parse = createTopicParser()
    for (const c of cases) {
      const first = parse(c.topic)
      assert.deepEqual(first, parseTopic(c.topic), c.name)
      assert.equal(parse(c.topic), first, c.name)
      assert.ok(Object.isFrozen(first), c.name)
      if (first.kind === 'route') assert.ok(Object.isFrozen(first.route), c.name)
    }
  })

  it('keeps at most maxTopics answers and never remembers an overlong topic', () => {
    const parse = createTopicParser(2)
    const a = parse('paku/heater/a/data')
    parse('paku/heater/b/data')
    assert.equal(parse('paku/heater/a/data'), a)
    parse('paku/heater/c/data') // the third starts over
    assert.notEqual(parse('paku/heater/a/data'), a)
    const long = `paku/heater/${'x'.repeat(600)}/data`
    const first = parse(long)
    assert.equal(first.kind, 'reject')
    assert.notEqual(parse(long), first)
  })
})
