import type { Socket } from 'node:net'

/**
 * Makes every write issued in one tick leave the socket in one writev. mqtt-packet writes a packet in
 * pieces (a PUBACK is three writes), and a group commit acknowledges hundreds of messages in the same
 * tick; without this each piece was its own send() — 12 % of paku's CPU under QoS 1 load
 * (docs/performance.md, "Writes straight to the socket"). mqtt.js corks its client sockets the same way.
 */
export function coalesceWrites(socket: Socket): void {
  const write = socket.write
  const uncork = () => socket.uncork()
  socket.write = function (this: Socket, ...args: Parameters<Socket['write']>) {
    if (this.writableCorked === 0) {
      this.cork()
      process.nextTick(uncork)
    }
    return write.apply(this, args)
  } as Socket['write']
}
