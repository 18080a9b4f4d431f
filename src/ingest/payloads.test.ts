import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { decodePayload, parseTimestamp } from './payloads.js'
import { toRow } from './records.js'

const enc = (x: unknown) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x))
const at = new Date('2026-11-27T10:00:00Z')

describe('decodePayload: accepts what devices send', () => {
  const ok: Array<{ name: string; type: Parameters<typeof decodePayload>[0]; payload: unknown }> = [
    {
      name: 'ruuvi data with local-offset timestamp',
      type: 'data',
      payload: {
        device_id: 'ruuvi_cabin',
        location: 'cabin',
        timestamp: '2026-01-15T14:03:22+02:00',
        metrics: { temperature_c: 21.5, humidity_percent: 40 },
      },
    },
    {
      name: 'data with nested, string and bool metrics',
      type: 'data',
      payload: { device_id: 'x', metrics: { a: { b: 1 }, s: 'Running', ok: true } },
    },
    {
      name: 'data with device_id null (only the key is required)',
      type: 'data',
      payload: { device_id: null, metrics: { t: 1 } },
    },
    {
      name: 'status of current firmware',
      type: 'status',
      payload: {
        online: true,
        device_id: 'ESP32-1',
        firmware_version: '1.4.2',
        device_model: 'lilygo-t-display-s3',
        signal_strength_dbm: -60,
        uptime_seconds: 5,
      },
    },
    { name: 'the LWT', type: 'status', payload: { online: false } },
    {
      name: 'any config object',
      type: 'config',
      payload: { version: '1.4.2', timing: { wake_interval_s: 60 } },
    },
    {
      name: 'ota/status accepted',
      type: 'ota_status',
      payload: {
        timestamp: '',
        status: 'accepted',
        current_version: '1.4.1',
        target_version: '1.4.2',
      },
    },
    {
      name: 'ota/progress',
      type: 'ota_progress',
      payload: {
        state: 'Downloading',
        percent: 40,
        downloaded: 1000,
        total: 2500,
        elapsed_ms: 1200,
      },
    },
    {
      name: 'ota/result with null target',
      type: 'ota_result',
      payload: { success: false, result_code: 2, message: 'Download failed', target_version: null },
    },
    {
      name: 'legacy flat ruuvi',
      type: 'legacy_ruuvi',
      payload: {
        sensor_id: 'van_inside',
        temperature_c: 20.1,
        battery_mv: 2900,
        mac: 'AA:BB:CC:DD:EE:FF',
        timestamp: '2026-11-27T10:00:00Z',
      },
    },
    {
      name: 'text with a paired surrogate escape (an emoji)',
      type: 'data',
      payload: '{"device_id":"x","metrics":{"s":"\\ud83d\\udd25"}}',
    },
  ]
  for (const c of ok) {
    it(c.name, () => {
      const got = decodePayload(c.type, enc(c.payload))
      assert.equal(got.ok, true, JSON.stringify(got))
    })
  }
})

describe('decodePayload: rejects hostile or broken input with a reason', () => {
  const bad: Array<{
    name: string
    type: Parameters<typeof decodePayload>[0]
    payload: unknown
    reason: RegExp
  }> = [
    {
      name: 'malformed JSON',
      type: 'data',
      payload: '{"device_id": "x", "metrics": {',
      reason: /malformed JSON/,
    },
    { name: 'empty payload', type: 'data', payload: '', reason: /malformed JSON/ },
    {
      name: 'a JSON array',
      type: 'data',
      payload: [1, 2],
      reason: /must be a JSON object, got an array/,
    },
    { name: 'a JSON string', type: 'status', payload: '"online"', reason: /got string/ },
    {
      name: 'invalid UTF-8',
      type: 'data',
      payload: Buffer.from([0x7b, 0xff, 0xfe, 0x7d]),
      reason: /not valid UTF-8/,
    },
    {
      name: 'missing device_id',
      type: 'data',
      payload: { metrics: { t: 1 } },
      reason: /device_id is required/,
    },
    { name: 'missing metrics', type: 'data', payload: { device_id: 'x' }, reason: /metrics/ },
    {
      name: 'metrics as an array',
      type: 'data',
      payload: { device_id: 'x', metrics: [1] },
      reason: /metrics must be a JSON object/,
    },
    {
      name: 'metrics as a string',
      type: 'data',
      payload: { device_id: 'x', metrics: 'hot' },
      reason: /metrics must be a JSON object/,
    },
    {
      name: 'empty metrics',
      type: 'data',
      payload: { device_id: 'x', metrics: {} },
      reason: /metrics must not be empty/,
    },
    {
      name: 'timestamp as a number',
      type: 'data',
      payload: { device_id: 'x', metrics: { t: 1 }, timestamp: 1700000000 },
      reason: /timestamp must be a string/,
    },
    {
      name: 'location as a number',
      type: 'data',
      payload: { device_id: 'x', metrics: { t: 1 }, location: 5 },
      reason: /location must be a string/,
    },
    {
      name: 'U+0000 escaped in a metric',
      type: 'data',
      payload: '{"device_id":"x","metrics":{"s":"a\\u0000b"}}',
      reason: /U\+0000/,
    },
    {
      name: 'U+0000 escaped in a key',
      type: 'config',
      payload: '{"a\\u0000":1}',
      reason: /U\+0000/,
    },
    {
      name: 'a lone surrogate',
      type: 'data',
      payload: '{"device_id":"x","metrics":{"s":"\\ud800"}}',
      reason: /unpaired UTF-16 surrogate/,
    },
    {
      name: 'status online as a string',
      type: 'status',
      payload: { online: 'yes' },
      reason: /online must be true or false/,
    },
    {
      name: 'status firmware_version as a number',
      type: 'status',
      payload: { firmware_version: 142 },
      reason: /firmware_version must be a string/,
    },
    {
      name: 'progress percent as a string',
      type: 'ota_progress',
      payload: { state: 'Downloading', percent: '40' },
      reason: /percent must be a number/,
    },
    {
      name: 'result success as a string',
      type: 'ota_result',
      payload: { success: 'true' },
      reason: /success must be true or false/,
    },
    {
      name: 'legacy ruuvi without any metric',
      type: 'legacy_ruuvi',
      payload: { sensor_id: 'van_inside' },
      reason: /has none of/,
    },
    {
      name: 'legacy ruuvi with a string temperature',
      type: 'legacy_ruuvi',
      payload: { sensor_id: 'v', temperature_c: 'warm' },
      reason: /temperature_c must be a number/,
    },
  ]
  for (const c of bad) {
    it(c.name, () => {
      const got = decodePayload(c.type, Buffer.isBuffer(c.payload) ? c.payload : enc(c.payload))
      assert.equal(got.ok, false)
      assert.match((got as { reason: string }).reason, c.reason)
    })
  }
})

describe('parseTimestamp', () => {
  const cases: Array<{ name: string; raw: string | null | undefined; want: string | RegExp }> = [
    { name: 'missing falls back to the receive time', raw: undefined, want: at.toISOString() },
    { name: 'null falls back to the receive time', raw: null, want: at.toISOString() },
    {
      name: 'empty string (before NTP sync) falls back to the receive time',
      raw: '',
      want: at.toISOString(),
    },
    { name: 'UTC with Z', raw: '2026-01-15T12:03:22Z', want: '2026-01-15T12:03:22.000Z' },
    {
      name: 'local time with +02:00 offset',
      raw: '2026-01-15T14:03:22+02:00',
      want: '2026-01-15T12:03:22.000Z',
    },
    {
      name: 'offset without colon',
      raw: '2026-01-15T14:03:22+0200',
      want: '2026-01-15T12:03:22.000Z',
    },
    {
      name: 'no offset reads as UTC, like the old database session',
      raw: '2026-01-15T14:03:22',
      want: '2026-01-15T14:03:22.000Z',
    },
    {
      name: 'fractional seconds',
      raw: '2026-01-15T14:03:22.123456Z',
      want: '2026-01-15T14:03:22.123Z',
    },
    { name: 'space instead of T', raw: '2026-01-15 14:03:22Z', want: '2026-01-15T14:03:22.000Z' },
    { name: 'rejects free text', raw: 'yesterday', want: /not ISO-8601/ },
    {
      name: 'rejects a time-only string (old firmware HH:MM:SS)',
      raw: '14:03:22',
      want: /not ISO-8601/,
    },
    { name: 'rejects February 30th', raw: '2026-02-30T00:00:00Z', want: /not a valid date/ },
    { name: 'rejects hour 25', raw: '2026-02-03T25:00:00Z', want: /not a valid time/ },
    // The 24-character form JavaScript prints takes a fast path; it must refuse the same things.
    {
      name: 'millisecond UTC form',
      raw: '2026-01-15T12:03:22.123Z',
      want: '2026-01-15T12:03:22.123Z',
    },
    {
      name: 'millisecond UTC form: rejects February 30th',
      raw: '2026-02-30T00:00:00.000Z',
      want: /not a valid date/,
    },
    {
      name: 'millisecond UTC form: rejects hour 24',
      raw: '2026-02-03T24:00:00.000Z',
      want: /not a valid (time|date)/,
    },
    {
      name: 'millisecond UTC form: rejects second 60',
      raw: '2026-02-03T23:59:60.000Z',
      want: /not a valid time/,
    },
    {
      name: 'millisecond UTC form: lower-case z',
      raw: '2026-01-15T12:03:22.123z',
      want: '2026-01-15T12:03:22.123Z',
    },
    {
      name: 'millisecond UTC form: rejects April 31st',
      raw: '2026-04-31T10:00:00.000Z',
      want: /not a valid date/,
    },
    {
      name: 'millisecond UTC form: rejects February 29th of a common year',
      raw: '2025-02-29T10:00:00.000Z',
      want: /not a valid date/,
    },
    {
      name: 'millisecond UTC form: February 29th of a leap year',
      raw: '2028-02-29T23:59:59.999Z',
      want: '2028-02-29T23:59:59.999Z',
    },
    {
      name: 'millisecond UTC form: rejects day 0',
      raw: '2026-01-00T10:00:00.000Z',
      want: /not a valid date/,
    },
    {
      name: 'millisecond UTC form: rejects month 13',
      raw: '2026-13-01T10:00:00.000Z',
      want: /not a valid date/,
    },
    {
      name: 'millisecond UTC form: rejects minute 60',
      raw: '2026-01-01T10:60:00.000Z',
      want: /not a valid time/,
    },
    {
      name: 'a 24-character form with an offset is not mistaken for UTC',
      raw: '2026-01-15T14:03:22+0200',
      want: '2026-01-15T12:03:22.000Z',
    },
  ]
  for (const c of cases) {
    it(c.name, () => {
      const got = parseTimestamp(c.raw, at)
      if (typeof c.want === 'string') {
        assert.equal(got.ok, true, JSON.stringify(got))
        assert.equal((got as { ts: Date }).ts.toISOString(), c.want)
      } else {
        assert.equal(got.ok, false)
        assert.match((got as { reason: string }).reason, c.want)
      }
    })
  }
})

describe('toRow', () => {
  it('takes identity from the topic, not the payload, and keeps metrics verbatim', () => {
    const got = toRow(
      { type: 'data', siteId: 'paku', system: 'heater', deviceId: 'emu01' },
      enc({
        device_id: 'heater_emu01',
        location: 'van',
        metrics: { heater_state: 'Off', safety_ok: 1 },
      }),
      at,
    )
    assert.deepEqual(got, {
      ok: true,
      row: {
        kind: 'measurement',
        siteId: 'paku',
        system: 'heater',
        deviceId: 'emu01',
        location: 'van',
        mac: null,
        ts: at,
        metrics: '{"heater_state":"Off","safety_ok":1}',
      },
    })
  })
  it('maps the legacy flat ruuvi payload like the old one-off migration (nulls stripped, mac into metrics)', () => {
    const got = toRow(
      { type: 'legacy_ruuvi', siteId: 'paku', sensorId: 'van_inside' },
      enc({
        sensor_id: 'van_inside',
        temperature_c: 20.5,
        humidity_percent: null,
        battery_mv: 2900,
        mac: 'AA:BB',
        timestamp: '2026-11-27T09:00:00Z',
      }),
      at,
    )
    assert.equal(got.ok, true)
    const row = (
      got as {
        row: {
          kind: string
          system: string
          deviceId: string
          location: null
          metrics: string
          ts: Date
        }
      }
    ).row
    assert.equal(row.system, 'sensors')
    assert.equal(row.deviceId, 'van_inside')
    assert.equal(row.location, null)
    assert.deepEqual(JSON.parse(row.metrics), {
      temperature_c: 20.5,
      battery_mv: 2900,
      mac: 'AA:BB',
    })
    assert.equal(row.ts.toISOString(), '2026-11-27T09:00:00.000Z')
  })
  it('treats a status without "online" as a sign of life and the LWT as offline', () => {
    const live = toRow(
      { type: 'status', siteId: 'paku', deviceId: 'E' },
      enc({ uptime_seconds: 1, device_model: 'm' }),
      at,
    )
    const lwt = toRow({ type: 'status', siteId: 'paku', deviceId: 'E' }, enc({ online: false }), at)
    assert.equal(live.ok && live.row.kind === 'status' && live.row.online, true)
    assert.equal(lwt.ok && lwt.row.kind === 'status' && lwt.row.online, false)
  })
  it('rejects a data message whose timestamp is not a date', () => {
    const got = toRow(
      { type: 'data', siteId: 'p', system: 's', deviceId: 'd' },
      enc({ device_id: 'd', metrics: { t: 1 }, timestamp: 'soon' }),
      at,
    )
    assert.deepEqual(got, { ok: false, reason: 'timestamp "soon" is not ISO-8601' })
  })
})
