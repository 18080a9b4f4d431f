import { Duplex, Transform, type TransformCallback } from 'node:stream'

/**
 * How much MQTT input all connections together may pass to aedes in one turn of the event loop; what
 * arrives beyond it waits for the next turn. Without a bound, a burst from many connections at once
 * (or reading resumed after backpressure) was parsed and ingested in a single turn — each readable
 * socket handing over its 64 KiB read, 100 of them 28,000 messages and 250–350 ms of work — while the
 * answers to the batches already sent sat unread in the database's socket, so PostgreSQL waited idle
 * for that long (docs/performance.md, "Input spread over event-loop turns"). 256 KiB is ~20 ms of
 * paku's work per turn.
 */
const TURN_INPUT_BYTES = 256 * 1024

/**
 * A byte allowance per turn of the event loop, shared by the guards given it. Once less than half of it
 * is left, it refills at the end of the turn: a turn may pass between half and all of it (and the chunk
 * that crosses it). A steady trickle, a few hundred bytes a turn, never queues the refill (an immediate
 * is one more pass of the event loop for every message).
 */
export class TurnBudget {
  readonly bytes: number
  #left: number
  #refillQueued = false

  constructor(bytes: number) {
    this.bytes = bytes
    this.#left = bytes
  }

  /** Whether this turn has room left; if so, takes `n` bytes of it (the last chunk of a turn may overdraw). */
  take(n: number): boolean {
    if (this.#left <= 0) return false
    this.#left -= n
    if (!this.#refillQueued && this.#left < this.bytes / 2) {
      this.#refillQueued = true
      // An immediate runs after the turn's I/O callbacks, so it refills once per turn; it is queued
      // before any chunk deferred in this turn, so those find the new allowance when they run.
      setImmediate(() => {
        this.#left = this.bytes
        this.#refillQueued = false
      })
    }
    return true
  }
}

/** The process's one budget: every connection's input draws on the same event loop. */
const sharedBudget = new TurnBudget(TURN_INPUT_BYTES)

/**
 * Watches the MQTT byte stream (fixed header + remaining length, MQTT 3.1.1 §2.2.3) and fails the
 * connection as soon as a packet announces more than maxBytes, before the parser buffers it.
 * Aedes has no packet size limit of its own, and MQTT 3.1.1 has no way to refuse one packet.
 *
 * It is also where reading a connection is held back (hold()): bytes stop passing through, its
 * buffer fills, the pipe pauses the socket and TCP slows the client down. Aedes keeps handling what
 * already passed, at most a buffer's worth. And where input is spread over turns of the event loop
 * (TurnBudget): a chunk over this turn's allowance waits for the next turn, in arrival order.
 */
export class PacketSizeGuard extends Transform {
  #max: number
  #state: 'header' | 'length' | 'body' = 'header'
  #length = 0
  #multiplier = 1
  #lengthBytes = 0
  #remaining = 0
  #held: Promise<void> | undefined
  #budget: TurnBudget

  constructor(maxBytes: number, budget: TurnBudget = sharedBudget) {
    super()
    this.#max = maxBytes
    this.#budget = budget
  }

  /** Lets no more bytes through until `until` settles (the first hold wins while one is active). */
  hold(until: Promise<void>): void {
    if (this.#held) return
    const release = () => {
      this.#held = undefined
    }
    this.#held = until.then(release, release)
  }

  override _transform(chunk: Buffer, enc: BufferEncoding, done: TransformCallback): void {
    if (this.#held) {
      void this.#held.then(() => this._transform(chunk, enc, done))
      return
    }
    if (!this.#budget.take(chunk.length)) {
      setImmediate(() => {
        if (!this.destroyed) this._transform(chunk, enc, done)
      })
      return
    }
    this.#check(chunk, done)
  }

  #check(chunk: Buffer, done: TransformCallback): void {
    let i = 0
    while (i < chunk.length) {
      if (this.#state === 'body') {
        const take = Math.min(this.#remaining, chunk.length - i)
        this.#remaining -= take
        i += take
        if (this.#remaining === 0) this.#state = 'header'
        continue
      }
      const byte = chunk[i++] as number
      if (this.#state === 'header') {
        this.#state = 'length'
        this.#length = 0
        this.#multiplier = 1
        this.#lengthBytes = 0
        continue
      }
      this.#length += (byte & 0x7f) * this.#multiplier
      this.#multiplier *= 128
      this.#lengthBytes++
      if ((byte & 0x80) !== 0) {
        // More than 4 length bytes is malformed; let the MQTT parser report it.
        if (this.#lengthBytes >= 4) break
        continue
      }
      const total = 1 + this.#lengthBytes + this.#length
      if (total > this.#max) {
        done(new PacketTooLargeError(total, this.#max))
        return
      }
      this.#remaining = this.#length
      this.#state = this.#remaining > 0 ? 'body' : 'header'
    }
    done(null, chunk)
  }
}

export class PacketTooLargeError extends Error {
  readonly bytes: number
  readonly limit: number
  constructor(bytes: number, limit: number) {
    super(`MQTT packet of ${bytes} bytes exceeds the limit of ${limit} (mqtt.maxPacketBytes)`)
    this.bytes = bytes
    this.limit = limit
  }
}

const guards = new WeakMap<Duplex, PacketSizeGuard>()

/** Holds back reading from a stream made by guardStream until `until` settles; others are left alone. */
export function holdReading(stream: Duplex, until: Promise<void>): void {
  guards.get(stream)?.hold(until)
}

/** A duplex that reads through the guard and writes straight to the socket; destroying it destroys both. */
export function guardStream(socket: Duplex, maxBytes: number): Duplex {
  const guard = new PacketSizeGuard(maxBytes)
  socket.pipe(guard)
  const duplex = Duplex.from({ readable: guard, writable: socket })
  // Writes go straight to the socket. aedes writes each outgoing packet in pieces (a PUBACK is three),
  // and through Duplex.from's writable side each piece would pass a second stream's bookkeeping and a
  // nextTick first (docs/performance.md, "Writes straight to the socket"). The socket's answer is the
  // duplex's, and so is its 'drain', which aedes waits for when a write says the buffer is full. end()
  // and destroy() still go through the duplex; nothing waits in its own buffer, so they follow every write.
  duplex.write = ((...args: Parameters<Duplex['write']>) =>
    socket.write(...args)) as Duplex['write']
  socket.on('drain', () => duplex.emit('drain'))
  guards.set(duplex, guard)
  const destroyAll = (err?: Error) => {
    socket.destroy()
    if (!duplex.destroyed) duplex.destroy(err)
  }
  guard.on('error', destroyAll)
  socket.on('error', (err) => destroyAll(err))
  // A peer that hangs up (FIN) right after a burst may close the socket while packets still wait in
  // the guard because the broker is holding back reading (QoS 0 backpressure): the pipe ends the guard
  // and aedes reads those packets before it sees the end. Only an abrupt close drops them.
  socket.on('close', () => {
    if (!socket.readableEnded || guard.readableEnded) destroyAll()
    else guard.once('end', () => destroyAll())
  })
  duplex.on('close', () => socket.destroy())
  return duplex
}
