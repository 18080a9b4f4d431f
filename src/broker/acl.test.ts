import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { canPublish, canSubscribe, within, type Identity } from './acl.js'

const dev: Identity = { username: 'ESP32-AABBCCDD', role: 'device' }
const bridge: Identity = { username: 'ha-bridge', role: 'bridge' }

describe('topic permissions', () => {
  const pub: Array<[string, boolean]> = [
    ['paku/edge/ESP32-AABBCCDD/status', true],
    ['paku/edge/ESP32-AABBCCDD/ota/progress', true],
    ['paku/edge/ESP32-AABBCCDD/config/report', true],
    ['paku/heater/ESP32-AABBCCDD/data', true],
    ['paku/sensors/ruuvi_cabin/data', true],
    ['paku/sensors/ESP32-AABBCCDD_wired/data', true],
    ['paku/edge/ESP32-11111111/status', false],
    ['paku/edge/ESP32-11111111/cmd/ota', false],
    ['paku/edge/ESP32-AABBCCDD-x/status', false],
    ['paku/sensors/ruuvi_cabin/config', false],
    ['paku/ecoflow/SN1/power', false],
    ['$SYS/broker/x', false],
  ]
  for (const [topic, want] of pub) it(`device ${want ? 'may' : 'may not'} publish ${topic}`, () => assert.equal(canPublish(dev, topic), want))

  const sub: Array<[string, boolean]> = [
    ['paku/edge/ESP32-AABBCCDD/cmd/ota', true],
    ['paku/edge/ESP32-AABBCCDD/cmd/#', true],
    ['paku/edge/ESP32-AABBCCDD/config/set', true],
    ['paku/edge/ESP32-AABBCCDD/control', true],
    ['paku/control', true],
    ['paku/ecoflow/+/power', true],
    ['paku/heater/ESP32-AABBCCDD/cmd', true],
    ['paku/edge/ESP32-11111111/cmd/ota', false],
    ['paku/edge/+/cmd/ota', false],
    ['paku/#', false],
    ['#', false],
    ['paku/sensors/+/data', false],
  ]
  for (const [topic, want] of sub) it(`device ${want ? 'may' : 'may not'} subscribe ${topic}`, () => assert.equal(canSubscribe(dev, topic), want))

  it('bridges and services may do anything', () => {
    assert.equal(canPublish(bridge, 'paku/edge/ESP32-1/cmd/ota'), true)
    assert.equal(canSubscribe(bridge, '#'), true)
  })
  it("no one may publish to $SYS or subscribe where the cluster's broker state travels", () => {
    for (const who of [bridge, { username: null, role: 'anonymous' as const }, { username: 'svc', role: 'service' as const }]) {
      assert.equal(canPublish(who, '$SYS/paku-cluster/state'), false)
      assert.equal(canPublish(who, '$SYS/x/new/clients'), false)
      for (const f of ['$SYS/paku-cluster/state', '$SYS/paku-cluster/#', '$SYS/#', '$SYS/+/state', '$SYS']) assert.equal(canSubscribe(who, f), false, f)
      assert.equal(canSubscribe(who, '$SYS/broker-1/heartbeat'), true, 'other $SYS topics stay readable')
      assert.equal(canSubscribe(who, '#'), true, 'MQTT: # does not match $ topics [MQTT-4.7.2-1]')
    }
  })
  it('a device id with wildcard characters matches nothing', () => {
    assert.equal(canPublish({ username: '+', role: 'device' }, 'paku/edge/x/status'), false)
    assert.equal(canSubscribe({ username: '#', role: 'device' }, 'paku/edge/x/cmd/ota'), false)
  })
  it('within() treats filter wildcards strictly', () => {
    assert.equal(within('a/+/c', 'a/b/c'), true)
    assert.equal(within('a/+/c', 'a/+/c'), true)
    assert.equal(within('a/+/c', 'a/#'), false)
    assert.equal(within('a/#', 'a'), true, 'MQTT: # includes the parent level')
    assert.equal(within('a/#', 'a/b/c/#'), true)
  })
})
