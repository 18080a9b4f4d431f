import BufferListStream from 'bl'
import mqttPacket from 'mqtt-packet'

type Reads = {
  _bufs: Buffer[]
  readUInt8(offset?: number): number
  readUInt16BE(offset?: number): number
  readUInt32BE(offset?: number): number
}

/**
 * mqtt-packet's parser reads each header byte, length byte and message id through `bl`, whose read
 * methods slice a new Buffer for every value read (`this.slice(o, o + 1).readUInt8(0)`): 5–8 Buffers a
 * PUBLISH, 9 % of everything paku allocated under a QoS 1 burst (docs/performance.md, "Allocations per
 * message, and the debug() shim").
 * These read the byte where it lies instead. An offset they do not handle (past the end, not a
 * non-negative integer) goes to bl's own method, so errors stay exactly bl's. Idempotent.
 */
export function readPacketsWithoutSlicing(): void {
  // mqtt-packet's parser makes a BufferListStream (`bl()`), which copied BufferList's methods onto its
  // own prototype: that is the one to change; BufferList's too, for any other user.
  for (const proto of [
    BufferListStream.prototype,
    BufferListStream.BufferList.prototype,
  ] as unknown as Reads[]) {
    if (READERS.has(proto.readUInt8)) continue
    const original = { u8: proto.readUInt8, u16: proto.readUInt16BE, u32: proto.readUInt32BE }
    const readUInt8 = function (this: Reads, offset = 0): number {
      const b = byteAt(this._bufs, offset)
      return b >= 0 ? b : original.u8.call(this, offset)
    }
    const readUInt16BE = function (this: Reads, offset = 0): number {
      const hi = byteAt(this._bufs, offset)
      const lo = hi >= 0 ? byteAt(this._bufs, offset + 1) : -1
      return lo >= 0 ? (hi << 8) | lo : original.u16.call(this, offset)
    }
    const readUInt32BE = function (this: Reads, offset = 0): number {
      const b0 = byteAt(this._bufs, offset)
      const b3 = b0 >= 0 ? byteAt(this._bufs, offset + 3) : -1
      if (b3 < 0) return original.u32.call(this, offset)
      return (
        b0 * 0x1000000 +
        (byteAt(this._bufs, offset + 1) << 16) +
        (byteAt(this._bufs, offset + 2) << 8) +
        b3
      )
    }
    READERS.add(readUInt8)
    Object.assign(proto, { readUInt8, readUInt16BE, readUInt32BE })
  }
}

const READERS = new WeakSet<object>()

/**
 * mqtt-packet writes each message id from a cache of 65,536 two-byte Buffers that it builds on its first
 * write and keeps for the life of the process: 7 MiB of heap (a Buffer object per number), a tenth of
 * an idle paku's, to save one 2-byte slice per PUBACK. Off, it writes the id from a fresh slice of
 * Node's buffer pool. Must run before the first packet is written, or the cache is built already.
 */
export function writeIdsWithoutCache(): void {
  mqttPacket.writeToStream.cacheNumbers = false
}

/** The byte at offset across the list's buffers, or -1 when there is none (or the offset is not a non-negative integer). */
function byteAt(bufs: readonly Buffer[], offset: number): number {
  if (!Number.isInteger(offset) || offset < 0) return -1
  for (let i = 0; i < bufs.length; i++) {
    const b = bufs[i] as Buffer
    if (offset < b.length) return b[offset] as number
    offset -= b.length
  }
  return -1
}
