import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { deviceIdFromMac, parseUpdateHeaders } from './pull.js'

const h = (headers: Record<string, string>) => (name: string) => headers[name.toLowerCase()]

describe('HTTPUpdate headers', () => {
  it('reads what Arduino-ESP32 sends (sha256 upper-case)', () => {
    const r = parseUpdateHeaders(
      h({
        'x-esp32-sta-mac': '24:a1:60:c0:ff:ee',
        'x-esp32-ap-mac': '24:A1:60:C0:FF:EF',
        'x-esp32-free-space': '1966080',
        'x-esp32-sketch-size': '912345',
        'x-esp32-sketch-md5': 'ABCDEF0123456789ABCDEF0123456789',
        'x-esp32-sketch-sha256': 'A'.repeat(64),
        'x-esp32-chip-size': '4194304',
        'x-esp32-sdk-version': 'v4.4.7-dirty',
        'x-esp32-mode': 'sketch',
        'x-esp32-version': '1.4.2',
      }),
    )
    assert.deepEqual(r, {
      family: 'ESP32',
      staMac: '24:A1:60:C0:FF:EE',
      freeSpace: 1966080,
      sketchSize: 912345,
      sketchMd5: 'abcdef0123456789abcdef0123456789',
      sketchSha256: 'a'.repeat(64),
      chipSize: 4194304,
      sdkVersion: 'v4.4.7-dirty',
      mode: 'sketch',
      version: '1.4.2',
    })
  })
  it('reads ESP8266httpUpdate headers', () => {
    const r = parseUpdateHeaders(
      h({
        'x-esp8266-sta-mac': '5C:CF:7F:00:11:22',
        'x-esp8266-mode': 'sketch',
        'x-esp8266-free-space': '2000000',
      }),
    )
    assert.ok(!('error' in r))
    assert.equal(r.family, 'ESP8266')
    assert.equal(r.version, undefined)
  })
  const hostile: Array<[string, Record<string, string>, RegExp]> = [
    ['a browser', { 'user-agent': 'Mozilla/5.0' }, /not an HTTPUpdate request/],
    ['no MAC', { 'x-esp32-mode': 'sketch' }, /sta-mac is missing/],
    [
      'a bad MAC',
      { 'x-esp32-sta-mac': '24:A1:60:C0:FF', 'x-esp32-mode': 'sketch' },
      /sta-mac is malformed/,
    ],
    [
      'a negative free space',
      { 'x-esp32-sta-mac': '24:A1:60:C0:FF:EE', 'x-esp32-free-space': '-1' },
      /free-space is malformed/,
    ],
    [
      'a huge number',
      { 'x-esp32-sta-mac': '24:A1:60:C0:FF:EE', 'x-esp32-free-space': '1'.repeat(40) },
      /free-space is malformed/,
    ],
    [
      'a bad md5',
      { 'x-esp32-sta-mac': '24:A1:60:C0:FF:EE', 'x-esp32-sketch-md5': 'zz' },
      /sketch-md5 is malformed/,
    ],
    [
      'control characters in the version',
      { 'x-esp32-sta-mac': '24:A1:60:C0:FF:EE', 'x-esp32-version': '1.0\u0007' },
      /version is malformed/,
    ],
    [
      'an unknown mode',
      { 'x-esp32-sta-mac': '24:A1:60:C0:FF:EE', 'x-esp32-mode': 'bootloader' },
      /mode is malformed/,
    ],
  ]
  for (const [name, headers, want] of hostile) {
    it(`refuses ${name}`, () => {
      const r = parseUpdateHeaders(h(headers))
      assert.ok('error' in r)
      assert.match(r.error, want)
    })
  }
  it('derives an id from family and MAC', () =>
    assert.equal(deviceIdFromMac('ESP32', '24:a1:60:c0:ff:ee'), 'ESP32-24A160C0FFEE'))
})
