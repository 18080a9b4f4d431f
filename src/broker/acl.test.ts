import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  canPublish,
  canReceive,
  canSubscribe,
  discoveryProblem,
  namedOwner,
  within,
  type Rights,
  type Verdict,
} from './acl.js'

const dev: Rights = { rights: 'device', deviceId: 'ESP32-AABBCCDD' }
const bridge: Rights = { rights: 'full', deviceId: null }
const readonly: Rights = { rights: 'readonly', deviceId: null }
const relayed = (system: string, sensor: string): Verdict => ({
  sensor: { site: 'paku', system, sensor },
})

describe('topic permissions', () => {
  // What paku-core publishes (its own edge, heater and devices topics, Home Assistant discovery of its
  // heater add-on, relayed BLE and wired sensors) and what it must not.
  const pub: Array<[string, Verdict]> = [
    ['paku/edge/ESP32-AABBCCDD/status', true],
    ['paku/edge/ESP32-AABBCCDD/ota/progress', true],
    ['paku/edge/ESP32-AABBCCDD/config/report', true],
    ['paku/edge/ESP32-AABBCCDD/status/light/1', true],
    ['paku/heater/ESP32-AABBCCDD/data', true],
    ['paku/heater/ESP32-AABBCCDD/state', true],
    ['paku/devices/ESP32-AABBCCDD/wifi/status', true],
    ['homeassistant/sensor/autoterm_ESP32-AABBCCDD/coolant_temp/config', true],
    ['homeassistant/switch/autoterm_ESP32-AABBCCDD/power/config', true],
    ['homeassistant/sensor/ESP32-AABBCCDD/config', true],
    ['paku/sensors/ESP32-AABBCCDD_wired/data', true],
    ['paku/sensors/ruuvi_cabin/data', relayed('sensors', 'ruuvi_cabin')],
    ['paku/fridge/van/data', relayed('fridge', 'van')],
    ['paku/sensors/ESP32-11111111_wired/data', false],
    ['paku/heater/ESP32-11111111/data', false],
    ['homeassistant/sensor/autoterm_ESP32-11111111/coolant_temp/config', false],
    ['homeassistant/sensor/coolant_temp/config', false],
    ['paku/edge/ESP32-11111111/status', false],
    ['paku/edge/ESP32-11111111/cmd/ota', false],
    ['paku/edge/ESP32-AABBCCDD-x/status', false],
    ['paku/sensors/ruuvi_cabin/config', false],
    ['paku/ecoflow/SN1/power', false],
    ['paku/control', false],
    ['$SYS/broker/x', false],
  ]
  for (const [topic, want] of pub)
    it(`device: publish ${topic} → ${JSON.stringify(want)}`, () =>
      assert.deepEqual(canPublish(dev, topic), want))

  // What paku-core subscribes to, the Waveshare screen boards' shared feeds among it, and what it must not.
  const sub: Array<[string, Verdict]> = [
    ['paku/edge/ESP32-AABBCCDD/cmd/ota', true],
    ['paku/edge/ESP32-AABBCCDD/cmd/light/3', true],
    ['paku/edge/ESP32-AABBCCDD/cmd/#', true],
    ['paku/edge/ESP32-AABBCCDD/config/set', true],
    ['paku/edge/ESP32-AABBCCDD/control', true],
    ['paku/devices/ESP32-AABBCCDD/cmd/wifi', true],
    ['paku/devices/ESP32-AABBCCDD/cmd/ruuvi', true],
    ['paku/heater/ESP32-AABBCCDD/cmd', true],
    ['paku/control', true],
    ['paku/ecoflow/+/power', true],
    ['paku/sensors/+/data', true],
    ['paku/heater/+/data', true],
    ['paku/fridge/van/cmd', relayed('fridge', 'van')],
    ['paku/fridge/+/cmd', false],
    ['paku/edge/ESP32-11111111/cmd/ota', false],
    ['paku/edge/+/cmd/ota', false],
    ['paku/edge/+/status', false],
    ['paku/heater/+/cmd', false],
    ['paku/#', false],
    ['#', false],
    ['paku/+/+/data', false],
  ]
  for (const [topic, want] of sub)
    it(`device: subscribe ${topic} → ${JSON.stringify(want)}`, () =>
      assert.deepEqual(canSubscribe(dev, topic), want))

  it('bridges and services may do anything; read-only clients subscribe but never publish', () => {
    assert.equal(canPublish(bridge, 'paku/edge/ESP32-1/cmd/ota'), true)
    assert.equal(canSubscribe(bridge, '#'), true)
    assert.equal(canSubscribe(readonly, 'paku/#'), true)
    assert.equal(canPublish(readonly, 'paku/edge/ESP32-1/status'), false)
    assert.equal(canPublish(readonly, 'paku/sensors/ruuvi_cabin/data'), false)
  })
  it("no one may publish to $SYS or subscribe where the cluster's broker state travels", () => {
    for (const who of [bridge, readonly]) {
      assert.equal(canPublish(who, '$SYS/paku-cluster/state'), false)
      assert.equal(canPublish(who, '$SYS/x/new/clients'), false)
      for (const f of [
        '$SYS/paku-cluster/state',
        '$SYS/paku-cluster/#',
        '$SYS/#',
        '$SYS/+/state',
        '$SYS',
      ])
        assert.equal(canSubscribe(who, f), false, f)
      assert.equal(
        canSubscribe(who, '$SYS/broker-1/heartbeat'),
        true,
        'other $SYS topics stay readable',
      )
      assert.equal(canSubscribe(who, '#'), true, 'MQTT: # does not match $ topics [MQTT-4.7.2-1]')
    }
  })
  it('a device id with wildcard characters or none matches nothing', () => {
    assert.equal(canPublish({ rights: 'device', deviceId: '+' }, 'paku/edge/x/status'), false)
    assert.equal(canSubscribe({ rights: 'device', deviceId: '#' }, 'paku/edge/x/cmd/ota'), false)
    assert.equal(canPublish({ rights: 'device', deviceId: null }, 'paku/edge/x/status'), false)
    assert.equal(canPublish({ rights: 'device', deviceId: '' }, 'paku/sensors/ruuvi_x/data'), false)
  })
  it('within() treats filter wildcards strictly', () => {
    assert.equal(within('a/+/c', 'a/b/c'), true)
    assert.equal(within('a/+/c', 'a/+/c'), true)
    assert.equal(within('a/+/c', 'a/#'), false)
    assert.equal(within('a/#', 'a'), true, 'MQTT: # includes the parent level')
    assert.equal(within('a/#', 'a/b/c/#'), true)
  })
  it('a relayed sensor named after a paku-core device belongs to that device', () => {
    assert.equal(namedOwner('ESP32-AABBCCDD_wired'), 'ESP32-AABBCCDD')
    assert.equal(namedOwner('ESP8266-0011AAFF_wired'), 'ESP8266-0011AAFF')
    assert.equal(namedOwner('ruuvi_cabin'), undefined)
    assert.equal(namedOwner('ESP32-AABBCCDD'), undefined)
  })
  it('delivery is judged for the receiver at the moment of delivery', () => {
    const owns = (k: { sensor: string }) => k.sensor === 'van'
    assert.equal(canReceive(dev, 'paku/edge/ESP32-AABBCCDD/cmd/ota', owns), true)
    assert.equal(canReceive(dev, 'paku/sensors/ruuvi_cabin/data', owns), true, 'a shared feed')
    assert.equal(
      canReceive(dev, 'paku/edge/ESP32-11111111/cmd/ota', owns),
      false,
      "another device's command, queued under other rights",
    )
    assert.equal(canReceive(dev, 'paku/edge/ESP32-11111111/config/report', owns), false)
    assert.equal(canReceive(dev, 'paku/fridge/van/cmd', owns), true, 'the fridge it relays')
    assert.equal(canReceive(dev, 'paku/fridge/kitchen/cmd', owns), false)
    assert.equal(canReceive(bridge, 'paku/edge/ESP32-11111111/config/report', owns), true)
  })
})

describe('Home Assistant discovery payloads', () => {
  const id = 'ESP32-AABBCCDD'
  const config = (o: Record<string, unknown>) => Buffer.from(JSON.stringify(o))
  it("accepts the heater add-on's configs, which point at the device's own topics", () => {
    assert.equal(
      discoveryProblem(
        id,
        config({
          unique_id: `autoterm_${id}_power`,
          state_topic: `paku/heater/${id}/state`,
          command_topic: `paku/heater/${id}/cmd`,
          payload_on: '{"cmd":"start","power":5}',
          device: { identifiers: [`autoterm_${id}`] },
        }),
      ),
      undefined,
    )
    assert.equal(
      discoveryProblem(
        id,
        config({
          '~': `paku/heater/${id}`,
          stat_t: '~/state',
          cmd_t: '~/cmd',
          avty_t: `paku/edge/${id}/status`,
        }),
      ),
      undefined,
    )
    assert.equal(
      discoveryProblem(id, Buffer.alloc(0)),
      undefined,
      'an empty payload removes the entity',
    )
  })
  it("refuses configs that make Home Assistant read or command another device's topics", () => {
    const other = 'ESP32-11111111'
    assert.match(
      discoveryProblem(
        id,
        config({
          state_topic: `paku/heater/${id}/state`,
          command_topic: `paku/edge/${other}/cmd/ota`,
        }),
      ) ?? '',
      /ESP32-11111111\/cmd\/ota/,
    )
    assert.match(
      discoveryProblem(id, config({ '~': `paku/heater/${other}`, cmd_t: '~/cmd' })) ?? '',
      /not this device/,
    )
    assert.match(
      discoveryProblem(id, config({ availability: [{ topic: `paku/edge/${other}/status` }] })) ??
        '',
      /not this device/,
    )
    assert.match(
      discoveryProblem(id, config({ json_attributes_topic: 'paku/#' })) ?? '',
      /not this device/,
    )
    assert.match(discoveryProblem(id, Buffer.from('not json')) ?? '', /JSON object/)
    assert.match(discoveryProblem(id, Buffer.from('[1]')) ?? '', /JSON object/)
  })
})
