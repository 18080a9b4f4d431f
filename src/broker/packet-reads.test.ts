import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import BufferListStream from 'bl'
import fc from 'fast-check'
import mqttPacket from 'mqtt-packet'
import { readPacketsWithoutSlicing } from './packet-reads.js'

type Reader = (this: unknown, offset?: number) => number
const METHODS = ['readUInt8', 'readUInt16BE', 'readUInt32BE'] as const
const proto = BufferListStream.prototype as unknown as Record<(typeof METHODS)[number], Reader>
// bl's own methods, taken before the change, to compare against.
const original = Object.fromEntries(METHODS.map((m) => [m, proto[m]])) as Record<
  (typeof METHODS)[number],
  Reader
>

/** The value, or the error's class and code: out-of-range reads must fail exactly as bl's do. */
function outcome(read: Reader, list: unknown, offset: number | undefined): unknown {
  try {
    return read.call(list, offset)
  } catch (err) {
    return { error: (err as Error).name, code: (err as { code?: string }).code }
  }
}

describe('packet reads without a Buffer per value (bl)', () => {
  readPacketsWithoutSlicing()

  it('replaces the read methods of the list mqtt-packet parses from, once however often it is called', () => {
    const first = METHODS.map((m) => proto[m])
    readPacketsWithoutSlicing()
    const parser = mqttPacket.parser() as unknown as { _list: Record<string, unknown> }
    for (const [i, m] of METHODS.entries()) {
      assert.notEqual(proto[m], original[m], m)
      assert.equal(proto[m], first[i], `${m}: a second call wraps nothing again`)
      assert.equal(parser._list[m], proto[m], m)
    }
  })

  // Fractional and NaN offsets go to bl's own methods too, but what those return is read from
  // uninitialised memory (bl slices into Buffer.allocUnsafe), so there is nothing stable to compare.
  it('reads what bl reads at every offset of any split into buffers, negative and past the end included', () => {
    const chunks = fc.array(fc.uint8Array({ maxLength: 9 }), { maxLength: 6 })
    const offset = fc.oneof(fc.integer({ min: -3, max: 40 }), fc.constant(undefined))
    fc.assert(
      fc.property(chunks, fc.array(offset, { minLength: 1, maxLength: 8 }), (parts, offsets) => {
        const list = BufferListStream(parts.map((p) => Buffer.from(p)))
        for (const o of offsets)
          for (const m of METHODS)
            assert.deepEqual(
              outcome(proto[m], list, o),
              outcome(original[m], list, o),
              `${m}(${o})`,
            )
      }),
      { numRuns: 500 },
    )
  })

  it('parses the same packets when their bytes arrive one at a time as when they arrive whole', () => {
    const packets = [
      {
        cmd: 'publish',
        topic: 'paku/heater/ESP32-AABBCCDD/data',
        payload: Buffer.from('{"metrics":{"t":21.5}}'),
        qos: 1,
        messageId: 65535,
        retain: false,
        dup: true,
      },
      { cmd: 'puback', messageId: 258 },
      { cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: 'paku/#', qos: 1 }] },
      { cmd: 'pingreq' },
    ] as const
    const bytes = Buffer.concat(packets.map((p) => mqttPacket.generate(p as mqttPacket.Packet)))
    const parse = (pieces: Buffer[]) => {
      const parser = mqttPacket.parser()
      const out: unknown[] = []
      parser.on('packet', (p) => out.push({ ...p }))
      parser.on('error', (err) => out.push({ error: err.message }))
      for (const piece of pieces) parser.parse(piece)
      return out
    }
    const whole = parse([bytes])
    assert.equal(whole.length, packets.length)
    assert.deepEqual(parse([...bytes].map((b) => Buffer.from([b]))), whole)
  })
})
