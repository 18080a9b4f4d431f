import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { describe, it } from 'node:test'
import { inspectImage } from './image.js'
import { espImage } from '../../scripts/test-support/esp-image.js'

describe('inspectImage', () => {
  it('reads an ESP32-S3 image: hashes, chip and app description', () => {
    const data = espImage({ size: 4096, chipId: 9, version: '1.4.2', project: 'paku-core' })
    const info = inspectImage(data, 1 << 20)
    assert.ok(!('error' in info))
    assert.equal(info.size, 4096)
    assert.equal(info.sha256, createHash('sha256').update(data).digest('hex'))
    assert.equal(info.md5, createHash('md5').update(data).digest('hex'))
    assert.equal(info.chip, 'esp32s3')
    assert.equal(info.app?.version, '1.4.2')
    assert.equal(info.app?.projectName, 'paku-core')
  })
  it('takes an ESP8266 image (no app description)', () => {
    const info = inspectImage(espImage({ size: 2000, esp8266: true }), 1 << 20)
    assert.ok(!('error' in info))
    assert.equal(info.chip, 'esp8266-or-unknown')
    assert.equal(info.app, undefined)
  })
  it('drops control characters a crafted header carries', () => {
    const info = inspectImage(
      espImage({ size: 1024, chipId: 0, version: '1.0\u001b[31m', project: 'x' }),
      1 << 20,
    )
    assert.ok(!('error' in info))
    assert.equal(info.app?.version, '1.0[31m')
  })
  const hostile: Array<[string, Uint8Array, RegExp]> = [
    ['empty', new Uint8Array(0), /empty/],
    [
      'wrong magic (an ELF file)',
      Buffer.concat([Buffer.from('\u007fELF'), Buffer.alloc(100)]),
      /first byte is 0x7f.*0xe9/,
    ],
    ['wrong magic (zeros)', new Uint8Array(4096), /first byte is 0x00/],
    ['too short for a header', Uint8Array.from([0xe9, 1, 2, 3]), /too short/],
    ['zero segments', Uint8Array.from([0xe9, 0, ...new Array(40).fill(0)]), /0 segments/],
    ['too many segments', Uint8Array.from([0xe9, 200, ...new Array(40).fill(0)]), /200 segments/],
    ['over the size limit', espImage({ size: 5000 }), /5000 bytes, more than the limit of 4096/],
  ]
  for (const [name, data, want] of hostile) {
    it(`refuses ${name}`, () => {
      const r = inspectImage(data, 4096)
      assert.ok('error' in r, 'expected an error')
      assert.match(r.error, want)
    })
  }
})
