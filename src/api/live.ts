/**
 * The live view of incoming messages: app.ts pushes every message the broker or HTTP ingest receives;
 * each listener (one SSE response) has a bounded queue. A slow client loses messages, counted and
 * reported to it, never paku's memory.
 */

export type LiveMessage = {
  topic: string
  payload: Buffer
  clientId?: string | null | undefined
  qos?: number | undefined
  retain?: boolean | undefined
  receivedAt?: Date | undefined
  via?: 'mqtt' | 'http'
}

/** Events a listener may hold before new ones are dropped for it. */
export const LIVE_QUEUE = 256
/** Payload bytes shown per message: enough to read, bounded for a flood of large ones. */
const PAYLOAD_PREVIEW = 2048

/** MQTT topic filter matching (`+` one level, `#` the rest), MQTT 3.1.1 §4.7. */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/')
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true
    if (i >= t.length) return false
    if (f[i] !== '+' && f[i] !== t[i]) return false
  }
  return f.length === t.length
}

export function validFilter(filter: string): boolean {
  if (filter.length === 0 || filter.length > 256 || filter.includes('\u0000')) return false
  const levels = filter.split('/')
  return levels.every((l, i) =>
    l.includes('#') ? l === '#' && i === levels.length - 1 : !l.includes('+') || l === '+',
  )
}

type Listener = {
  filter: string
  send: (event: string) => boolean
  dropped: number
  close: () => void
}

export function createLiveHub() {
  const listeners = new Set<Listener>()
  let published = 0
  return {
    /** Never throws and never blocks: called on the ingest path for every message. */
    push(m: LiveMessage): void {
      if (listeners.size === 0) return
      published++
      let event: string | undefined
      for (const l of listeners) {
        if (!topicMatches(l.filter, m.topic)) continue
        event ??= `event: message\ndata: ${JSON.stringify({
          topic: m.topic,
          payload: m.payload.subarray(0, PAYLOAD_PREVIEW).toString('utf8'),
          bytes: m.payload.length,
          clientId: m.clientId ?? null,
          qos: m.qos ?? 0,
          retain: m.retain ?? false,
          via: m.via ?? 'mqtt',
          receivedAt: (m.receivedAt ?? new Date()).toISOString(),
        })}\n\n`
        if (
          l.dropped > 0 &&
          l.send(`event: dropped\ndata: ${JSON.stringify({ dropped: l.dropped })}\n\n`)
        )
          l.dropped = 0
        if (l.dropped > 0 || !l.send(event)) l.dropped++
      }
    },
    /** Adds a listener; returns its removal. `send` returns false when the listener's queue is full. */
    listen(filter: string, send: (event: string) => boolean, close: () => void): () => void {
      const l: Listener = { filter, send, dropped: 0, close }
      listeners.add(l)
      return () => listeners.delete(l)
    },
    /** Ends every stream (before the HTTP server closes: open streams would hold its close() forever). */
    closeAll(): void {
      for (const l of listeners) l.close()
      listeners.clear()
    },
    stats: () => ({ listeners: listeners.size, published }),
  }
}

export type LiveHub = ReturnType<typeof createLiveHub>
