import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { parseTopic } from '../ingest/topic.js'
import { toRow } from '../ingest/records.js'
import { brokerOptions, createHeaterEmulator, createRuuviEmulator } from './index.js'

/** Every message an emulator sends must pass the real ingest path, or it is not emulating a device. */
function ingestable(topic: string, payload: string) {
  const parsed = parseTopic(topic)
  if (parsed.kind !== 'route') return parsed.kind
  const row = toRow(parsed.route, Buffer.from(payload), new Date())
  return row.ok ? row.row.kind : `rejected: ${row.reason}`
}

describe('ruuvi emulator', () => {
  it('publishes canonical data per location, and the legacy flat payload with --legacy', () => {
    const emu = createRuuviEmulator({
      site: 'paku',
      locations: ['van_inside', 'cabin'],
      legacy: true,
    })
    const msgs = emu.tick(new Date('2026-11-27T10:00:00.123Z'))
    assert.deepEqual(
      msgs.map(([t]) => t),
      [
        'paku/sensors/ruuvi_van_inside/data',
        'paku/ruuvi/van_inside',
        'paku/sensors/ruuvi_cabin/data',
        'paku/ruuvi/cabin',
      ],
    )
    for (const [t, p] of msgs) assert.equal(ingestable(t, p), 'measurement', t)
    const data = JSON.parse(msgs[0]?.[1] as string)
    assert.equal(data.timestamp, '2026-11-27T10:00:00Z')
    assert.ok(data.metrics.temperature_c >= 18 && data.metrics.temperature_c <= 25)
    assert.ok(data.metrics.humidity_percent >= 35 && data.metrics.humidity_percent <= 55)
  })

  it('stays within the old emulator ranges over many ticks', () => {
    const emu = createRuuviEmulator({ site: 'paku', locations: ['x'], legacy: false })
    for (let i = 0; i < 2000; i++) {
      const m = JSON.parse(emu.tick()[0]?.[1] as string).metrics
      assert.ok(
        m.temperature_c >= 18 &&
          m.temperature_c <= 25 &&
          m.pressure_hpa >= 990 &&
          m.pressure_hpa <= 1020,
      )
    }
  })
})

describe('heater emulator', () => {
  it('publishes stored data and HA state that ingest ignores', () => {
    const emu = createHeaterEmulator({ site: 'paku', deviceId: 'emu01' })
    const [[dataTopic, data], [stateTopic, state]] = emu.tick(new Date()) as [
      [string, string],
      [string, string],
    ]
    assert.equal(dataTopic, 'paku/heater/emu01/data')
    assert.equal(ingestable(dataTopic, data), 'measurement')
    assert.equal(stateTopic, 'paku/heater/emu01/state')
    assert.equal(ingestable(stateTopic, state), 'ignore')
    assert.equal(JSON.parse(data).device_id, 'heater_emu01')
  })

  it('walks Off → Starting → Warming → Running on start, and heats up', () => {
    const emu = createHeaterEmulator({ site: 'paku', deviceId: 'e', random: () => 0.5 })
    let t = Date.UTC(2026, 0, 1)
    const at = (s: number) => new Date((t += s * 1000))
    emu.tick(at(0))
    assert.equal(emu.command('{"cmd":"start","power":7}'), 'starting at power 7')
    const seen: string[] = []
    let coolant = 0
    for (let i = 0; i < 120; i++) {
      const data = JSON.parse(emu.tick(at(1))[0]?.[1] as string)
      if (seen.at(-1) !== data.metrics.heater_state) seen.push(data.metrics.heater_state)
      coolant = data.metrics.coolant_temp_c
    }
    assert.deepEqual(seen, ['Starting', 'Warming', 'Running'])
    assert.ok(coolant > 50, `coolant ${coolant}`)
    assert.equal(emu.command('{"cmd":"stop"}'), 'shutting down')
    for (let i = 0; i < 20; i++) emu.tick(at(1))
    assert.equal(emu.state, 'Off')
  })

  it('ignores commands that make no sense in the current state, and garbage', () => {
    const emu = createHeaterEmulator({ site: 'paku', deviceId: 'e' })
    assert.equal(emu.command('{"cmd":"stop"}'), 'ignored: stop while Off')
    assert.equal(emu.command('not json'), 'ignored: not JSON')
    assert.equal(emu.command('{"cmd":"explode"}'), 'ignored: unknown command "explode"')
    assert.equal(emu.command('{"cmd":"vent","power":99}'), 'ventilating')
    assert.equal(emu.command('{"cmd":"start"}'), 'ignored: start while Ventilation')
  })
})

describe('brokerOptions (--url)', () => {
  it('maps a URL to mqtt.js options, credentials percent-decoded and IPv6 unbracketed', () => {
    assert.deepEqual(brokerOptions('mqtt://127.0.0.1:1883'), {
      protocol: 'mqtt',
      host: '127.0.0.1',
      port: 1883,
    })
    assert.deepEqual(brokerOptions('mqtts://dev%40site:p%3Ass@[::1]:8883/ignored'), {
      protocol: 'mqtts',
      host: '::1',
      port: 8883,
      username: 'dev@site',
      password: 'p:ss',
    })
    assert.deepEqual(brokerOptions('wss://broker.example/ws/mqtt?x=1'), {
      protocol: 'wss',
      host: 'broker.example',
      path: '/ws/mqtt?x=1',
    })
    assert.deepEqual(brokerOptions('ws://broker.example:9001'), {
      protocol: 'ws',
      host: 'broker.example',
      port: 9001,
      path: '/',
    })
  })

  it('refuses what is not a broker URL, saying why', () => {
    assert.throws(() => brokerOptions('127.0.0.1:1883'), /is not a URL \(example: mqtt:\/\//)
    assert.throws(() => brokerOptions('not a url'), /is not a URL/)
    assert.throws(
      () => brokerOptions('http://127.0.0.1:1883'),
      /must start with mqtt:\/\/.*not http:\/\//,
    )
    assert.throws(() => brokerOptions('mqtt://:1883'), /is not a URL|names no host/)
    assert.throws(() => brokerOptions('mqtt://%E0%A4%A@127.0.0.1'), /not valid percent-encoding/)
    assert.throws(
      () => brokerOptions('x'.repeat(100_000)),
      (err: Error) => err.message.length < 400,
    )
  })
})
