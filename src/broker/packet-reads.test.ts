import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createRequire } from 'node:module'
import { Writable } from 'node:stream'
import { describe, it } from 'node:test'
import BufferListStream from 'bl'
import fc from 'fast-check'
import mqttPacket from 'mqtt-packet'
import { readPacketsWithoutSlicing, writeIdsWithoutCache } from './packet-reads.js'

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

describe("message ids written without mqtt-packet's number cache", () => {
  /** The bytes mqtt-packet's stream writer (the one aedes uses) writes for a packet. */
  const written = async (packet: mqttPacket.Packet) => {
    const chunks: Buffer[] = []
    const stream = new Writable({
      write(chunk: Buffer, _enc, done) {
        chunks.push(Buffer.from(chunk))
        done()
      },
    })
    mqttPacket.writeToStream(packet, stream)
    // writeToStream corks the stream until the next tick; end() writes what it holds.
    stream.end()
    await once(stream, 'finish')
    return Buffer.concat(chunks)
  }
  // The module holding the cache, as mqtt-packet's writer requires it.
  const numbers = createRequire(import.meta.url)('mqtt-packet/numbers.js') as {
    cache: Record<number, Buffer>
  }
  const cached = () => Object.keys(numbers.cache).length

  it('writes every message id right and builds no cache; with the cache on it would (control)', async () => {
    // The tests above wrote packets with the default: start from an empty cache, as a new process does.
    for (const n of Object.keys(numbers.cache)) delete numbers.cache[Number(n)]
    writeIdsWithoutCache()
    for (const messageId of [1, 258, 0x1234, 65535])
      assert.deepEqual(
        await written({ cmd: 'puback', messageId }),
        Buffer.from([0x40, 2, messageId >> 8, messageId & 0xff]),
      )
    assert.equal(cached(), 0, 'no Buffer per number kept')
    // Control: the default builds all 65,536 on the first write, which is what the setting avoids.
    mqttPacket.writeToStream.cacheNumbers = true
    await written({ cmd: 'puback', messageId: 7 })
    assert.equal(cached(), 65536)
    writeIdsWithoutCache()
  })
})
