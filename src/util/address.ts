import { isIPv4, isIPv6 } from 'node:net'

/**
 * The key a per-address limiter counts a peer under. IPv4 addresses are themselves; an IPv4-mapped IPv6
 * address (`::ffff:192.0.2.7`, what a dual-stack socket reports for an IPv4 peer) is the IPv4 address;
 * any other IPv6 address is its /64 (`2001:db8:1:2::/64`), because one host or subscriber is usually
 * handed a whole /64 (RFC 6177) and can pick any address inside it. Anything else (no address, as in
 * in-process tests) is returned as it is.
 */
export function addressKey(ip: string): string {
  const raw = ip.trim()
  if (isIPv4(raw)) return raw
  // A zone index (fe80::1%eth0) names the interface, not the peer.
  const addr = raw.replace(/%.*$/, '')
  if (!isIPv6(addr)) return raw
  const groups = ipv6Groups(addr)
  // ::ffff:0:0/96 (RFC 4291 §2.5.5.2): the last 32 bits are the IPv4 address.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    const hi = groups[6] ?? 0
    const lo = groups[7] ?? 0
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`
  }
  return `${groups
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(':')}::/64`
}

/** The eight 16-bit groups of a valid IPv6 address (with `::` expanded and a dotted IPv4 tail converted). */
function ipv6Groups(addr: string): number[] {
  let text = addr.toLowerCase()
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text)
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number]
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const [head = '', tail] = text.split('::')
  const parse = (s: string) => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)))
  const left = parse(head)
  if (tail === undefined) return left
  const right = parse(tail)
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right]
}

/** The peer address from @hono/node-server's bindings (`c.env`); 'unknown' where there is no socket (app.request() tests). */
export function remoteAddress(env: unknown): string {
  const incoming = (env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)
    ?.incoming
  return incoming?.socket?.remoteAddress ?? 'unknown'
}
