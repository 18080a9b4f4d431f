import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import mqttPacket from 'mqtt-packet'
import { PacketSizeGuard, PacketTooLargeError } from './packet-guard.js'

const publish = (bytes: number) =>
  mqttPacket.generate({ cmd: 'publish', topic: 't/x', payload: Buffer.alloc(bytes, 0x61), qos: 0, retain: false, dup: false })

/** Feeds chunks through a guard and returns the bytes that came out, or the error. */
async function feed(max: number, chunks: Buffer[]): Promise<{ out: Buffer; err?: Error }> {
  const guard = new PacketSizeGuard(max)
  const out: Buffer[] = []
  guard.on('data', (b: Buffer) => out.push(b))
  const done = new Promise<Error | undefined>((resolve) => {
    guard.on('error', resolve)
    guard.on('end', () => resolve(undefined))
  })
  for (const c of chunks) guard.write(c)
  guard.end()
  const err = await done
  return { out: Buffer.concat(out), err }
}

describe('PacketSizeGuard', () => {
  it('passes packets at the limit through unchanged', async () => {
    const p = publish(100)
    const r = await feed(p.length, [p])
    assert.equal(r.err, undefined)
    assert.deepEqual(r.out, p)
  })

  it('fails on the first packet over the limit, before its body arrives', async () => {
    const p = publish(1000)
    const r = await feed(500, [p.subarray(0, 4)])
    assert.ok(r.err instanceof PacketTooLargeError)
    assert.equal(r.err.limit, 500)
    assert.equal(r.err.bytes, p.length)
  })

  it('tracks packet boundaries across arbitrary chunking (one byte at a time)', async () => {
    const stream = Buffer.concat([publish(10), publish(300), publish(20)])
    const bytes = [...stream].map((b) => Buffer.from([b]))
    const ok = await feed(400, bytes)
    assert.equal(ok.err, undefined)
    assert.deepEqual(ok.out, stream)
    const tooBig = await feed(200, bytes)
    assert.ok(tooBig.err instanceof PacketTooLargeError)
  })

  it('handles zero-length packets (PINGREQ) between publishes', async () => {
    const ping = mqttPacket.generate({ cmd: 'pingreq' })
    const stream = Buffer.concat([ping, publish(5), ping, ping])
    const r = await feed(100, [stream])
    assert.equal(r.err, undefined)
    assert.deepEqual(r.out, stream)
  })

  it('handles four-byte remaining lengths', async () => {
    const p = publish(2_100_000)
    const r = await feed(3_000_000, [p])
    assert.equal(r.err, undefined)
    assert.equal(r.out.length, p.length)
  })
})
