import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import mqttPacket from 'mqtt-packet'
import { once } from 'node:events'
import { socketPair } from '../../scripts/socket-pair.js'
import { guardStream, PacketSizeGuard, PacketTooLargeError, TurnBudget } from './packet-guard.js'

const publish = (bytes: number) =>
  mqttPacket.generate({
    cmd: 'publish',
    topic: 't/x',
    payload: Buffer.alloc(bytes, 0x61),
    qos: 0,
    retain: false,
    dup: false,
  })

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

  describe('input spread over turns of the event loop', () => {
    /** Counts turns of the event loop: an immediate that queues the next one runs once per turn. */
    function turns(count: number) {
      const t = { n: 0 }
      const tick = () => {
        if (++t.n < count) setImmediate(tick)
      }
      setImmediate(tick)
      return t
    }

    /** A guard whose output records the turn each chunk came out in, and the bytes. */
    function watched(budget: TurnBudget, turn: { n: number }) {
      const guard = new PacketSizeGuard(10_000, budget)
      const at: number[] = []
      const bytes: Buffer[] = []
      guard.on('data', (b: Buffer) => {
        at.push(turn.n)
        bytes.push(b)
      })
      return { guard, at, bytes }
    }

    const until = (cond: () => boolean) =>
      new Promise<void>((resolve) => {
        const check = () => (cond() ? resolve() : setImmediate(check))
        check()
      })

    it("passes a turn's allowance at once, then one allowance a turn, in order and unchanged", async () => {
      const turn = turns(20)
      const w = watched(new TurnBudget(1000), turn)
      const packets = [1, 2, 3, 4, 5].map(() => publish(580))
      assert.ok(packets.every((p) => p.length > 500 && p.length < 1000))
      for (const p of packets) w.guard.write(p)
      await until(() => w.bytes.length === 5)
      // 1,000 bytes a turn, the chunk that crosses it included: two chunks a turn.
      assert.deepEqual(w.at, [0, 0, 1, 1, 2])
      assert.deepEqual(Buffer.concat(w.bytes), Buffer.concat(packets))
    })

    it('shares one allowance between connections: a second one waits for the next turn', async () => {
      const turn = turns(20)
      const budget = new TurnBudget(1000)
      const a = watched(budget, turn)
      const b = watched(budget, turn)
      for (const g of [a, b]) for (let i = 0; i < 2; i++) g.guard.write(publish(580))
      await until(() => a.bytes.length === 2 && b.bytes.length === 2)
      assert.deepEqual(a.at, [0, 0])
      assert.deepEqual(b.at, [1, 1])
    })

    it('lets everything through in the same turn while under the allowance', async () => {
      const turn = turns(20)
      const w = watched(new TurnBudget(64 * 1024), turn)
      for (let i = 0; i < 5; i++) w.guard.write(publish(580))
      await until(() => w.bytes.length === 5)
      assert.deepEqual(w.at, [0, 0, 0, 0, 0])
    })

    it('gives a turn at least half the allowance however much earlier turns took', async () => {
      const turn = turns(20)
      const w = watched(new TurnBudget(1000), turn)
      // ~450 bytes leave ~550, more than half: no refill. A later turn passes those 550 and the chunk
      // crossing them; the chunk after waits for the refill at the end of that turn.
      w.guard.write(publish(430))
      await until(() => w.bytes.length === 1)
      for (let i = 0; i < 3; i++) w.guard.write(publish(430))
      await until(() => w.bytes.length === 4)
      const [, a, b, c] = w.at as [number, number, number, number]
      assert.deepEqual([b - a, c - a], [0, 1], 'two chunks in one turn, the third in the next')
    })

    it('drops a deferred chunk quietly when the connection is destroyed meanwhile', async () => {
      const turn = turns(20)
      const w = watched(new TurnBudget(100), turn)
      const errors: Error[] = []
      w.guard.on('error', (e) => errors.push(e))
      w.guard.write(publish(580))
      w.guard.write(publish(580))
      w.guard.destroy()
      await until(() => turn.n >= 5)
      assert.equal(w.bytes.length, 1)
      assert.deepEqual(errors, [])
    })
  })
})

describe('guardStream writes', () => {
  it('go to the socket in order, report its backpressure, pass on its drain, and end after the last one', async (t) => {
    const { server, client } = await socketPair(t)
    const duplex = guardStream(server, 1024)
    // As aedes does: the teardown's close of the socket ends the duplex early, which it reports as an error.
    duplex.on('error', () => undefined)
    const received: Buffer[] = []
    client.pause()
    const piece = Buffer.alloc(64 * 1024, 0x62)
    let writes = 0
    while (duplex.write(Buffer.concat([Buffer.from([writes % 256]), piece]))) writes++
    writes++
    assert.ok(server.writableNeedDrain, 'the socket itself is full')
    assert.equal(
      duplex.writableLength,
      0,
      "nothing waits in the duplex's own buffer: every write went to the socket",
    )
    const drained = once(duplex, 'drain')
    client.on('data', (b: Buffer) => received.push(b))
    client.resume()
    await drained
    duplex.write(Buffer.from('last'))
    duplex.end()
    await once(client, 'end')
    const all = Buffer.concat(received)
    assert.equal(all.length, writes * (piece.length + 1) + 4)
    for (let i = 0; i < writes; i++)
      assert.equal(all[i * (piece.length + 1)], i % 256, `write ${i} in its place`)
    assert.equal(all.subarray(-4).toString(), 'last')
  })
})
