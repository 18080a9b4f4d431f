import assert from 'node:assert/strict'
import { hash } from 'node:crypto'
import { describe, it } from 'node:test'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import type { DedupKey } from './records.js'
import { createRedeliveries } from './redelivery.js'
import { REDELIVERY_SLOTS } from './store.js'

const RECENT = REDELIVERY_SLOTS
const MiB = 1024 * 1024

/** Writes failing: load() makes no lookup and needs no database (*.int.test.ts cover lookups). */
const offline = () =>
  createRedeliveries({
    db: () => {
      throw new Error('no database in this test')
    },
    failing: () => true,
    degraded: () => true,
  })

const key = (messageId: number, content = `content ${messageId}`, clientId = 'c1'): DedupKey => ({
  clientId,
  messageId,
  digest: hash('sha1', content, 'base64'),
})

/** Remembers ids from..to (inclusive) under `clientId`, each with its own content and promise. */
function rememberRange(r: ReturnType<typeof offline>, from: number, to: number, clientId = 'c1') {
  const done = new Map<number, Promise<void>>()
  for (let id = from; id <= to; id++) {
    const p = Promise.resolve()
    done.set(id, p)
    r.remember(key(id, undefined, clientId), p)
  }
  return done
}

/** The ids among from..to that are recognised with their own content. */
function recognised(r: ReturnType<typeof offline>, from: number, to: number, clientId = 'c1') {
  const ids: number[] = []
  for (let id = from; id <= to; id++) if (r.duplicateOf(key(id, undefined, clientId))) ids.push(id)
  return ids
}

const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i)

describe('redeliveries', () => {
  it('recognises a remembered message only with the same client, id and content', () => {
    const r = offline()
    const done = Promise.resolve()
    r.remember(key(7, 'a'), done)
    assert.equal(r.duplicateOf(key(7, 'a'))?.done, done)
    assert.equal(r.duplicateOf(key(7, 'b')), undefined)
    assert.equal(r.duplicateOf(key(8, 'a')), undefined)
    assert.equal(r.duplicateOf(key(7, 'a', 'c2')), undefined)
  })

  it('answers with the very promise remembered, or undefined when none was', () => {
    const r = offline()
    const first = Promise.resolve()
    const later = Promise.resolve()
    r.remember(key(1), first)
    r.remember(key(2), undefined)
    assert.equal(r.duplicateOf(key(1))?.done, first)
    const without = r.duplicateOf(key(2))
    assert.ok(without)
    assert.equal(without.done, undefined)
    r.remember(key(1), later)
    assert.equal(r.duplicateOf(key(1))?.done, later)
  })

  it('replaces the content of an id remembered again', () => {
    const r = offline()
    r.remember(key(5, 'old'), undefined)
    r.remember(key(5, 'new'), undefined)
    assert.equal(r.duplicateOf(key(5, 'old')), undefined)
    assert.ok(r.duplicateOf(key(5, 'new')))
  })

  it(`forgets the oldest id after ${RECENT} newer ones and recognises those ${RECENT}`, () => {
    const r = offline()
    rememberRange(r, 1, RECENT)
    assert.deepEqual(recognised(r, 1, RECENT), range(1, RECENT))
    rememberRange(r, RECENT + 1, RECENT + 1)
    assert.deepEqual(recognised(r, 1, RECENT + 1), range(2, RECENT + 1))
    // Far past the first lap of the ring.
    rememberRange(r, RECENT + 2, 3 * RECENT + 100)
    assert.deepEqual(recognised(r, 1, 3 * RECENT + 100), range(2 * RECENT + 101, 3 * RECENT + 100))
  })

  it(`keeps an id remembered again through ${RECENT - 1} newer ones, as the newest`, () => {
    const r = offline()
    rememberRange(r, 1, RECENT)
    r.remember(key(1, 'again'), undefined)
    rememberRange(r, RECENT + 1, 2 * RECENT - 1)
    assert.ok(r.duplicateOf(key(1, 'again')))
    assert.deepEqual(recognised(r, 2, 2 * RECENT - 1), range(RECENT + 1, 2 * RECENT - 1))
    rememberRange(r, 2 * RECENT, 2 * RECENT)
    assert.equal(r.duplicateOf(key(1, 'again')), undefined)
  })

  it('keeps the order when an id in the middle of a wrapped ring is remembered again', () => {
    const r = offline()
    // 1..1500: the oldest id sits in the middle of the slots, the newest wrap round to the start.
    const done = rememberRange(r, 1, 1500)
    const moved = Promise.resolve()
    r.remember(key(1000, 'again'), moved)
    assert.deepEqual(
      recognised(r, 1, 1500),
      range(1500 - RECENT + 1, 1500).filter((id) => id !== 1000),
    )
    assert.equal(r.duplicateOf(key(1000, 'again'))?.done, moved)
    for (const id of [477, 999, 1001, 1500])
      assert.equal(r.duplicateOf(key(id))?.done, done.get(id))
    // Still RECENT ids: the next one forgets the oldest, 477.
    rememberRange(r, 1501, 1501)
    assert.deepEqual(
      recognised(r, 1, 1501),
      range(478, 1501).filter((id) => id !== 1000),
    )
    // 1000 is the second newest: RECENT - 2 more leave it and 1501 of the old ones; one more, 1501.
    rememberRange(r, 1502, 1501 + RECENT - 2)
    assert.ok(r.duplicateOf(key(1000, 'again')))
    assert.deepEqual(recognised(r, 1, 1501), [1501])
    rememberRange(r, 1501 + RECENT - 1, 1501 + RECENT - 1)
    assert.equal(r.duplicateOf(key(1000, 'again')), undefined)
    assert.deepEqual(recognised(r, 1, 1501), [1501])
  })

  it('keeps every id and its promise across the doublings of its slots', () => {
    // Either side of every power of two up to RECENT, whatever size the ring starts with.
    const sizes = new Set(
      range(0, Math.log2(RECENT)).flatMap((k) => [2 ** k - 1, 2 ** k, 2 ** k + 1]),
    )
    sizes.delete(0)
    for (const n of sizes) {
      const r = offline()
      const done = rememberRange(r, 1, n)
      const kept = range(Math.max(1, n - RECENT + 1), n)
      assert.deepEqual(recognised(r, 1, n), kept, `${n} ids`)
      for (const id of kept) assert.equal(r.duplicateOf(key(id))?.done, done.get(id), `${n} ids`)
    }
  })

  it('moves ids in a ring that is still growing', () => {
    const r = offline()
    rememberRange(r, 1, 40)
    r.remember(key(3, 'again'), undefined)
    r.remember(key(40, 'again'), undefined)
    rememberRange(r, 41, 50)
    assert.deepEqual(
      recognised(r, 1, 50),
      range(1, 50).filter((id) => id !== 3 && id !== 40),
    )
    rememberRange(r, 51, RECENT + 12)
    // The oldest 12 go: 1, 2 and 4..13 (3 was remembered again after 39).
    assert.deepEqual(
      recognised(r, 1, 50),
      range(14, 50).filter((id) => id !== 40),
    )
    assert.ok(r.duplicateOf(key(3, 'again')))
    assert.ok(r.duplicateOf(key(40, 'again')))
  })

  it('tells message id 0, which clients should not send, from a free slot', () => {
    const r = offline()
    // A free slot holds id 0 and a digest of zeros: this key would match one if looked up there.
    const zero = { clientId: 'c1', messageId: 0, digest: Buffer.alloc(20).toString('base64') }
    r.remember(key(5), undefined)
    assert.equal(r.duplicateOf(zero), undefined)
    r.remember(zero, undefined)
    assert.ok(r.duplicateOf(zero))
    // Ordered like any id: 5, 0 and RECENT - 2 more fill the ring; two more push out 5, then 0.
    const from = 1001
    rememberRange(r, from, from + RECENT - 3)
    assert.ok(r.duplicateOf(key(5)))
    assert.ok(r.duplicateOf(zero))
    rememberRange(r, from + RECENT - 2, from + RECENT - 2)
    assert.equal(r.duplicateOf(key(5)), undefined)
    assert.ok(r.duplicateOf(zero))
    rememberRange(r, from + RECENT - 1, from + RECENT - 1)
    assert.equal(r.duplicateOf(zero), undefined)
    assert.deepEqual(recognised(r, from, from + RECENT - 1), range(from, from + RECENT - 1))
  })

  it('never matches a digest that is not a base64 SHA-1, and does not throw on one', () => {
    const r = offline()
    const sha256 = hash('sha256', 'x', 'base64')
    const unpadded = key(1).digest.slice(0, -1)
    for (const [id, digest] of [
      [1, 'not base64!'],
      [2, ''],
      [3, sha256],
      [4, unpadded],
    ] as const) {
      r.remember({ clientId: 'c1', messageId: id, digest }, undefined)
      assert.equal(r.duplicateOf({ clientId: 'c1', messageId: id, digest }), undefined, digest)
    }
    // It replaces what its id had, as any other content would.
    r.remember(key(9), undefined)
    r.remember({ clientId: 'c1', messageId: 9, digest: 'zz' }, undefined)
    assert.equal(r.duplicateOf(key(9)), undefined)
    r.remember(key(10), undefined)
    assert.ok(r.duplicateOf(key(10)))
  })

  it('makes no lookup while writes fail, and keeps what a known client sent', () => {
    const r = offline()
    assert.equal(r.load('c1'), undefined)
    r.remember(key(1), undefined)
    assert.equal(r.load('c1'), undefined)
    assert.ok(r.duplicateOf(key(1)))
  })

  it(`holds 100 clients × ${RECENT} ids in under 5 MiB`, async (t) => {
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    /** The heap and the array buffers (the digests) in use, once V8 has freed what it can. */
    const inUse = async () => {
      // Array buffers left behind (a ring's smaller arrays) are freed after the collection, off
      // the main thread: collect until two readings agree.
      let last = Infinity
      for (let i = 0; i < 100; i++) {
        gc()
        await new Promise(setImmediate)
        const m = process.memoryUsage()
        const now = m.heapUsed + m.arrayBuffers
        if (Math.abs(now - last) < 64 * 1024) return now
        last = now
      }
      throw new Error('memory in use did not settle')
    }
    // Each message's promise, as ingest makes one: durable at once here, so the record lets it go.
    const r = offline()
    const before = await inUse()
    for (let c = 0; c < 100; c++)
      for (let id = 1; id <= RECENT; id++)
        r.remember(key(id, `${c}/${id}`, `client-${c}`), Promise.resolve())
    const grown = (await inUse()) - before
    t.diagnostic(`100 clients × ${RECENT} ids: ${(grown / MiB).toFixed(2)} MiB`)
    assert.ok(grown < 5 * MiB, `${(grown / MiB).toFixed(2)} MiB`)
    assert.ok(r.duplicateOf(key(RECENT, `99/${RECENT}`, 'client-99')))
  })

  it('lets a promise go once it resolved, and not a later one under the same id', async () => {
    const r = offline()
    let resolve = () => {}
    const pending = new Promise<void>((res) => (resolve = res))
    r.remember(key(1), pending)
    r.remember(key(2), pending)
    // Until the message is durable a duplicate waits for it.
    assert.equal(r.duplicateOf(key(1))?.done, pending)
    // Id 2 is used again by a later message before the first is durable: its promise stays.
    const later = new Promise<void>(() => {})
    r.remember(key(2, 'again'), later)
    resolve()
    await pending
    await Promise.resolve()
    const settled = r.duplicateOf(key(1))
    assert.ok(settled, 'still recognised')
    assert.equal(settled.done, undefined)
    assert.equal(r.duplicateOf(key(2, 'again'))?.done, later)
  })

  it('lets a disconnected client’s ids go once all are in the database, and reads them back after', async () => {
    let degraded = false
    let lookups = 0
    const r = createRedeliveries({
      db: () => {
        lookups++
        throw new Error('no database in this test')
      },
      failing: () => false,
      degraded: () => degraded,
    })
    let resolve = () => {}
    const pending = new Promise<void>((res) => (resolve = res))
    r.remember(key(1), Promise.resolve())
    r.remember(key(2), pending)
    await Promise.resolve()
    r.release('c1')
    assert.ok(r.duplicateOf(key(2)), 'kept while a message is still being written')
    resolve()
    await pending
    await Promise.resolve()
    degraded = true
    r.release('c1')
    assert.ok(r.duplicateOf(key(1)), 'kept while the database lacks what the spool holds')
    degraded = false
    r.release('c1')
    assert.equal(r.duplicateOf(key(1)), undefined, 'let go')
    assert.equal(r.clients, 0)
    // Its next message looks its ids up again.
    assert.ok(r.load('c1') instanceof Promise)
    await r.load('c1')
    assert.equal(lookups, 1)
  })

  it('reads a client’s ids again when they were let go between its lookup and its message', async () => {
    const r = createRedeliveries({
      db: () => {
        throw new Error('no database in this test')
      },
      failing: () => false,
      degraded: () => false,
    })
    await r.load('c1')
    assert.equal(r.load('c1'), undefined, 'looked up once')
    r.release('c1')
    // What accept() does with a message whose lookup had finished before the release.
    r.remember(key(1), undefined)
    assert.ok(r.duplicateOf(key(1)))
    assert.ok(r.load('c1') instanceof Promise, 'the history is read again')
  })
})
