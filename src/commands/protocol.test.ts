import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as v from 'valibot'
import { contains, NewCommand, toWire, verdict, type Pending } from './protocol.js'

const cmd = (o: Partial<Pending>): Pending => ({
  id: 'cmd_1',
  siteId: 'paku',
  deviceId: 'ESP32-01',
  type: 'control',
  payload: { scenario: 'heater_active', command_id: 'cmd_1' },
  expiresAt: 0,
  ...o,
})
const levels = (t: string) => t.split('/')

describe('command wire format', () => {
  it('sends control unretained, config/set retained, heater cmd unretained, each with its id', () => {
    assert.deepEqual(
      toWire(
        v.parse(NewCommand, { type: 'control', device_id: 'ESP32-01', scenario: 'power_save' }),
        'cmd_x',
      ),
      {
        siteId: 'paku',
        topic: 'paku/edge/ESP32-01/control',
        payload: { scenario: 'power_save', command_id: 'cmd_x' },
        qos: 1,
        retain: false,
      },
    )
    assert.deepEqual(
      toWire(
        v.parse(NewCommand, {
          type: 'config',
          device_id: 'ESP32-01',
          config: { timing: { wake_interval_s: 30 } },
        }),
        'cmd_x',
      ),
      {
        siteId: 'paku',
        topic: 'paku/edge/ESP32-01/config/set',
        payload: { timing: { wake_interval_s: 30 }, command_id: 'cmd_x' },
        qos: 1,
        retain: true,
      },
    )
    assert.deepEqual(
      toWire(v.parse(NewCommand, { type: 'heater', device_id: 'emu01', cmd: 'start' }), 'cmd_x'),
      {
        siteId: 'paku',
        topic: 'paku/heater/emu01/cmd',
        payload: { cmd: 'start', power: 5, command_id: 'cmd_x' },
        qos: 1,
        retain: false,
      },
    )
    assert.deepEqual(
      toWire(v.parse(NewCommand, { type: 'heater', device_id: 'emu01', cmd: 'stop' }), 'cmd_x')
        .payload,
      { cmd: 'stop', command_id: 'cmd_x' },
    )
  })
})

describe('what closes a command', () => {
  const cases: Array<{
    name: string
    cmd: Pending
    topic: string
    body: unknown
    want: string | undefined
  }> = [
    {
      name: 'explicit ack with its id',
      cmd: cmd({}),
      topic: 'paku/edge/ESP32-01/ack',
      body: { command_id: 'cmd_1' },
      want: 'acknowledged',
    },
    {
      name: 'explicit ack with an error',
      cmd: cmd({}),
      topic: 'paku/edge/ESP32-01/ack',
      body: { command_id: 'cmd_1', error: 'busy' },
      want: 'failed',
    },
    {
      name: 'explicit ack with ok false',
      cmd: cmd({}),
      topic: 'paku/edge/ESP32-01/ack',
      body: { command_id: 'cmd_1', ok: false },
      want: 'failed',
    },
    {
      name: 'ack for another command',
      cmd: cmd({}),
      topic: 'paku/edge/ESP32-01/ack',
      body: { command_id: 'cmd_2' },
      want: undefined,
    },
    {
      name: 'ack from another device',
      cmd: cmd({}),
      topic: 'paku/edge/ESP32-02/ack',
      body: { command_id: 'cmd_1' },
      want: undefined,
    },
    {
      name: 'ack on another site',
      cmd: cmd({}),
      topic: 'cabin/edge/ESP32-01/ack',
      body: { command_id: 'cmd_1' },
      want: undefined,
    },
    {
      name: 'status with the requested scenario',
      cmd: cmd({}),
      topic: 'paku/edge/ESP32-01/status',
      body: { online: true, active_scenario: 'heater_active' },
      want: 'acknowledged',
    },
    {
      name: 'status with another scenario',
      cmd: cmd({}),
      topic: 'paku/edge/ESP32-01/status',
      body: { online: true, active_scenario: 'default' },
      want: undefined,
    },
    {
      name: 'the LWT is no ack',
      cmd: cmd({}),
      topic: 'paku/edge/ESP32-01/status',
      body: { online: false },
      want: undefined,
    },
    {
      name: 'config report holding the values',
      cmd: cmd({
        type: 'config',
        payload: { timing: { wake_interval_s: 30 }, command_id: 'cmd_1' },
      }),
      topic: 'paku/edge/ESP32-01/config/report',
      body: { version: '1.4.2', timing: { wake_interval_s: 30, timezone: 'UTC' } },
      want: 'acknowledged',
    },
    {
      name: 'legacy config topic too',
      cmd: cmd({ type: 'config', payload: { ha: { enabled: false }, command_id: 'cmd_1' } }),
      topic: 'paku/edge/ESP32-01/config',
      body: { ha: { enabled: false } },
      want: 'acknowledged',
    },
    {
      name: 'config report with old values',
      cmd: cmd({
        type: 'config',
        payload: { timing: { wake_interval_s: 30 }, command_id: 'cmd_1' },
      }),
      topic: 'paku/edge/ESP32-01/config/report',
      body: { timing: { wake_interval_s: 60 } },
      want: undefined,
    },
    {
      name: 'heater start seen as Starting',
      cmd: cmd({ type: 'heater', deviceId: 'emu01', payload: { cmd: 'start', power: 5 } }),
      topic: 'paku/heater/emu01/state',
      body: { state: 'Starting' },
      want: 'acknowledged',
    },
    {
      name: 'heater start while still Off',
      cmd: cmd({ type: 'heater', deviceId: 'emu01', payload: { cmd: 'start', power: 5 } }),
      topic: 'paku/heater/emu01/state',
      body: { state: 'Off' },
      want: undefined,
    },
    {
      name: 'heater stop seen as ShuttingDown',
      cmd: cmd({ type: 'heater', deviceId: 'emu01', payload: { cmd: 'stop' } }),
      topic: 'paku/heater/emu01/state',
      body: { state: 'ShuttingDown' },
      want: 'acknowledged',
    },
    {
      name: 'heater reset seen as safety ok',
      cmd: cmd({ type: 'heater', deviceId: 'emu01', payload: { cmd: 'reset' } }),
      topic: 'paku/heater/emu01/state',
      body: { state: 'Off', safety_ok: true },
      want: 'acknowledged',
    },
    {
      name: 'a control is not closed by heater state',
      cmd: cmd({}),
      topic: 'paku/heater/ESP32-01/state',
      body: { state: 'Running' },
      want: undefined,
    },
    {
      name: 'non-object payload',
      cmd: cmd({}),
      topic: 'paku/edge/ESP32-01/ack',
      body: 'cmd_1',
      want: undefined,
    },
  ]
  for (const c of cases)
    it(c.name, () => assert.equal(verdict(c.cmd, levels(c.topic), c.body)?.status, c.want))

  it('compares nested values and arrays exactly', () => {
    assert.equal(contains({ a: { b: 1, c: 2 } }, { a: { b: 1 } }), true)
    assert.equal(contains({ a: [1, 2] }, { a: [1, 2] }), true)
    assert.equal(contains({ a: [1, 2, 3] }, { a: [1, 2] }), false)
    assert.equal(contains({ a: '1' }, { a: 1 }), false)
  })
})
