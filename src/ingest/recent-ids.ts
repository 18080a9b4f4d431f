/** Bytes of a SHA-1 digest: what the base64 digest of a DedupKey decodes to. */
const DIGEST_BYTES = 20
/** Base64 characters of a SHA-1 digest, with its one padding character. */
const DIGEST_CHARS = 28
/** Slots at a client's first id; doubled when full, up to the ring's maximum. */
const FIRST_CAPACITY = 4

/**
 * Where the digest being remembered or compared is decoded: one for every ring, since nothing runs
 * between decoding and using it. The spare byte tells a longer digest from a SHA-1.
 */
const scratch = Buffer.alloc(DIGEST_BYTES + 1)

/** Decodes a base64 SHA-1 into scratch; false for anything else (a row in another format). */
function decode(digest: string): boolean {
  return (
    digest.length === DIGEST_CHARS &&
    scratch.write(digest, 0, DIGEST_BYTES + 1, 'base64') === DIGEST_BYTES
  )
}

// Shared by every ring that has no id yet: nothing is ever written to an array of length 0.
const NO_IDS = new Uint16Array(0)
const NO_DIGESTS = Buffer.alloc(0)

/**
 * One client's newest QoS 1/2 message ids (up to `max`) in the order they were remembered, each
 * with the raw SHA-1 of its topic and payload and the promise that resolves once it is durable.
 * Typed arrays in a ring rather than a Map of objects: an id takes 2 + 20 bytes and an array slot,
 * ~31 bytes with the arrays' own, where a Map entry, an object and a base64 string take ~115
 * (measured, 100 clients × 1,024 ids, heap and array buffers, the promises not counted: 2.9–3.3 MiB
 * against 11.3–11.6 MiB). The ring starts empty and doubles from FIRST_CAPACITY slots, so the many
 * clients that send few QoS 1 messages stay small: ~0.8 KiB with one id, promise included.
 */
export class RecentIds {
  readonly #max: number
  /** Message ids by slot. Free slots hold 0: indexOf() of any other id finds only slots in use. */
  #ids: Uint16Array = NO_IDS
  /** DIGEST_BYTES per slot. */
  #digests: Buffer = NO_DIGESTS
  #done: Array<Promise<void> | undefined> = []
  /**
   * The slot of the oldest id (0 until the ring is full at `max`); the `#count` slots from there,
   * wrapping round, are in use.
   */
  #head = 0
  #count = 0
  /**
   * The last id looked for and its slot (-1: absent), until the ring changes. A message's
   * remember() follows its match() for the same id: the second scan of up to 1,024 ids (~0.35 µs)
   * is saved.
   */
  #lastId = -1
  #lastSlot = -1

  constructor(max: number) {
    this.#max = max
  }

  /** Whether the id is remembered, whatever its digest. */
  has(id: number): boolean {
    return this.#find(id) !== -1
  }

  /**
   * The id becomes the newest, with this digest and promise, replacing what it had; once more
   * than `max` ids are remembered, the oldest is forgotten. A digest that is not a base64 SHA-1 can
   * never match a message's, so the id is forgotten instead.
   */
  remember(id: number, digest: string, done: Promise<void> | undefined): void {
    const slot = this.#find(id)
    if (slot !== -1) this.#remove(slot)
    if (decode(digest)) this.#append(id, done)
  }

  /** The promise of the id when it is remembered with this very digest. */
  match(id: number, digest: string): { done: Promise<void> | undefined } | undefined {
    const slot = this.#find(id)
    if (slot === -1 || !decode(digest)) return undefined
    const at = slot * DIGEST_BYTES
    const same = this.#digests.compare(scratch, 0, DIGEST_BYTES, at, at + DIGEST_BYTES) === 0
    return same ? { done: this.#done[slot] } : undefined
  }

  /**
   * The message under this id is durable: its promise is let go, and a duplicate is acknowledged at
   * once. Only if the id still holds that very promise (not a later message's under the same id).
   */
  settled(id: number, done: Promise<void>): void {
    const slot = this.#find(id)
    if (slot !== -1 && this.#done[slot] === done) this.#done[slot] = undefined
  }

  /** Whether a remembered message is still being written (its promise not yet let go). */
  hasPending(): boolean {
    return this.#done.some((d) => d !== undefined)
  }

  #find(id: number): number {
    if (id !== this.#lastId) {
      this.#lastSlot = this.#scan(id)
      this.#lastId = id
    }
    return this.#lastSlot
  }

  #scan(id: number): number {
    if (id !== 0) return this.#ids.indexOf(id)
    // 0 is no valid MQTT message id, but nothing stops a client from sending it: look among the
    // slots in use.
    const capacity = this.#ids.length
    for (let k = 0; k < this.#count; k++) {
      const slot = (this.#head + k) % capacity
      if (this.#ids[slot] === 0) return slot
    }
    return -1
  }

  /** Writes the id (its digest in scratch) after the newest; over the oldest once at `max`. */
  #append(id: number, done: Promise<void> | undefined): void {
    this.#lastId = -1
    if (this.#count === this.#ids.length && this.#count < this.#max) this.#grow()
    const capacity = this.#ids.length
    let slot: number
    if (this.#count === capacity) {
      slot = this.#head
      this.#head = (this.#head + 1) % capacity
    } else {
      slot = (this.#head + this.#count) % capacity
      this.#count++
    }
    this.#ids[slot] = id
    scratch.copy(this.#digests, slot * DIGEST_BYTES, 0, DIGEST_BYTES)
    this.#done[slot] = done
  }

  /**
   * Takes a slot out, moving the newer ids one slot back so the order stays whole. A client reuses
   * an id within its window only when it restarted its numbering, so this is rare, and its ≤ 1,023
   * moves are mostly copyWithin.
   */
  #remove(slot: number): void {
    this.#lastId = -1
    const capacity = this.#ids.length
    const newest = (this.#head + this.#count - 1) % capacity
    let left = (newest - slot + capacity) % capacity
    let at = slot
    while (left > 0) {
      // The slots after `at` up to the end of the arrays, or slot 0 where the ring wraps.
      const from = at + 1 === capacity ? 0 : at + 1
      const n = from === 0 ? 1 : Math.min(left, capacity - from)
      this.#ids.copyWithin(at, from, from + n)
      this.#digests.copyWithin(at * DIGEST_BYTES, from * DIGEST_BYTES, (from + n) * DIGEST_BYTES)
      for (let i = 0; i < n; i++) this.#done[at + i] = this.#done[from + i]
      at = from + n - 1
      left -= n
    }
    this.#ids[at] = 0
    this.#done[at] = undefined
    this.#count--
  }

  /**
   * Doubles the slots, up to `max`. The oldest id is in slot 0 until then: the head moves only once
   * the ring is full at `max`.
   */
  #grow(): void {
    const next = Math.min(Math.max(this.#ids.length * 2, FIRST_CAPACITY), this.#max)
    const ids = new Uint16Array(next)
    ids.set(this.#ids)
    const digests = Buffer.alloc(next * DIGEST_BYTES)
    this.#digests.copy(digests)
    const done = this.#done.concat(new Array<undefined>(next - this.#done.length).fill(undefined))
    this.#ids = ids
    this.#digests = digests
    this.#done = done
  }
}
