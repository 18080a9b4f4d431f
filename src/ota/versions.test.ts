import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { compareVersions, hashBucket, parseVersion, percentageMatch } from './versions.js'

describe('percentageMatch (the old service\'s consistent hash, docs/compatibility.md, "Rollout targeting and the canary hash")', () => {
  const vectors: Array<[string, number]> = [
    ['device1', 60],
    ['device2', 80],
    ['device123', 16],
    ['device456', 8],
    ['test_device', 72],
    ['ESP32-20E955A0', 25],
    ['ESP8266-9608CF16', 35],
    ['esp32_001', 69],
    ['', 49],
  ]
  for (const [id, bucket] of vectors) {
    it(`${JSON.stringify(id)} → ${bucket}`, () => {
      assert.equal(hashBucket(id), bucket)
      assert.equal(percentageMatch(id, bucket), false, 'not in at exactly its bucket')
      assert.equal(percentageMatch(id, bucket + 1), true, 'in one percent above')
    })
  }
  it('ESP32-20E955A0 is in a 26 % canary but not in a 25 % one', () => {
    assert.equal(percentageMatch('ESP32-20E955A0', 26), true)
    assert.equal(percentageMatch('ESP32-20E955A0', 25), false)
  })
  it('470 of device0…device999 fall below 50', () => {
    let n = 0
    for (let i = 0; i < 1000; i++) if (percentageMatch(`device${i}`, 50)) n++
    assert.equal(n, 470)
  })
  it('0 % takes nobody, 100 % everybody, and widening never drops a device', () => {
    for (let i = 0; i < 200; i++) {
      const id = `dev-${i}`
      assert.equal(percentageMatch(id, 0), false)
      assert.equal(percentageMatch(id, 100), true)
      let inBefore = false
      for (const p of [10, 25, 50, 75, 100]) {
        const inNow = percentageMatch(id, p)
        assert.ok(!inBefore || inNow, `${id} left at ${p} %`)
        inBefore = inNow
      }
    }
  })
})

describe('versions', () => {
  it('accepts semver with an optional v', () => {
    assert.equal(parseVersion('1.4.2'), '1.4.2')
    assert.equal(parseVersion('v1.4.2'), '1.4.2')
    assert.equal(parseVersion('1.5.0-rc.1'), '1.5.0-rc.1')
    assert.equal(
      parseVersion('1.5.0+build.7'),
      '1.5.0',
      'build metadata does not take part in ordering',
    )
  })
  for (const bad of [
    '',
    '1.4',
    '1',
    'latest',
    'test-20260101-120000',
    '1.4.2/../../etc',
    '1.4.2 ',
    '01.2.3',
    'x'.repeat(100),
    '1.2.3\u0000',
  ]) {
    it(`refuses ${JSON.stringify(bad.slice(0, 30))}`, () =>
      assert.equal(parseVersion(bad), undefined))
  }
  it('orders by semver, not by text', () => {
    assert.equal(compareVersions('1.10.0', '1.9.3'), 1)
    assert.equal(compareVersions('1.5.0-rc.1', '1.5.0'), -1)
    assert.equal(compareVersions('v2.0.0', '2.0.0'), 0)
    assert.equal(compareVersions('abc', '1.0.0'), undefined)
  })
})
