import { Duplex, Transform, type TransformCallback } from 'node:stream'

/**
 * Watches the MQTT byte stream (fixed header + remaining length, MQTT 3.1.1 §2.2.3) and fails the
 * connection as soon as a packet announces more than maxBytes, before the parser buffers it.
 * Aedes has no packet size limit of its own, and MQTT 3.1.1 has no way to refuse one packet.
 */
export class PacketSizeGuard extends Transform {
  #max: number
  #state: 'header' | 'length' | 'body' = 'header'
  #length = 0
  #multiplier = 1
  #lengthBytes = 0
  #remaining = 0

  constructor(maxBytes: number) {
    super()
    this.#max = maxBytes
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
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

/** A duplex that reads through the guard and writes straight to the socket; destroying it destroys both. */
export function guardStream(socket: Duplex, maxBytes: number): Duplex {
  const guard = new PacketSizeGuard(maxBytes)
  socket.pipe(guard)
  const duplex = Duplex.from({ readable: guard, writable: socket })
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
    if (!socket.readableEnded) destroyAll()
  })
  duplex.on('close', () => socket.destroy())
  return duplex
}
