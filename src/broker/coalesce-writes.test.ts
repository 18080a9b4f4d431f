import assert from 'node:assert/strict'
import { once } from 'node:events'
import { test } from 'node:test'
import { socketPair } from '../../scripts/socket-pair.js'
import { eventually } from '../../scripts/test-helpers.js'
import { coalesceWrites } from './coalesce-writes.js'

test('writes of one tick reach the socket as one writev, in order', async (t) => {
  const { server, client } = await socketPair(t)
  coalesceWrites(server)
  const writev: number[] = []
  const writes: number[] = []
  const s = server as unknown as {
    _writev: (chunks: unknown[], cb: () => void) => void
    _write: (c: unknown, e: string, cb: () => void) => void
  }
  const origV = s._writev.bind(server)
  const orig = s._write.bind(server)
  s._writev = (chunks, cb) => (writev.push(chunks.length), origV(chunks, cb))
  s._write = (c, e, cb) => (writes.push(1), orig(c, e, cb))
  const got: Buffer[] = []
  client.on('data', (b: Buffer) => got.push(b))
  // A PUBACK as mqtt-packet writes it: header byte, remaining length, message id.
  for (let id = 1; id <= 3; id++) {
    server.write(Buffer.from([0x40]))
    server.write(Buffer.from([0x02]))
    server.write(Buffer.from([0, id]))
  }
  assert.equal(writev.length + writes.length, 0, 'nothing leaves before the tick ends')
  const sent = Buffer.from([0x40, 2, 0, 1, 0x40, 2, 0, 2, 0x40, 2, 0, 3])
  await eventually(async () => Buffer.concat(got).length >= sent.length, {
    timeoutMs: 2000,
    what: () => `${sent.length} bytes at the other end, got ${Buffer.concat(got).length}`,
  })
  assert.deepEqual(writev, [9])
  assert.equal(writes.length, 0)
  assert.deepEqual(Buffer.concat(got), sent)
})

test('a later tick starts a new batch, and write callbacks and backpressure still work', async (t) => {
  const { server, client } = await socketPair(t)
  coalesceWrites(server)
  client.pause()
  const first = await new Promise<boolean>((resolve) => resolve(server.write(Buffer.alloc(10))))
  assert.equal(first, true)
  await new Promise((r) => setImmediate(r))
  assert.equal(server.writableCorked, 0, 'uncorked after the tick')
  const done = new Promise<void>((resolve, reject) =>
    server.write(Buffer.alloc(10), (err) => (err ? reject(err) : resolve())),
  )
  await done
  // Fill the kernel buffers: write() must eventually report backpressure (false), as without corking.
  let ok = true
  for (let i = 0; i < 2000 && ok; i++) ok = server.write(Buffer.alloc(64 * 1024))
  assert.equal(ok, false)
  client.resume()
  await once(server, 'drain')
})
