/**
 * A fixed-window request counter per key (an address key from util/address.ts): at most `limit`
 * requests per `windowMs`; beyond that `hit` says how long until the key's window ends. Memory is
 * bounded: ended windows are swept once a window when the map is full, and when a flood of distinct
 * keys still fills it the oldest entries go first. No timers: everything happens on `hit`.
 */
export function createRateLimiter(opts: {
  limit: number
  windowMs?: number
  maxKeys?: number
  now?: () => number
}) {
  const windowMs = opts.windowMs ?? 60_000
  const maxKeys = opts.maxKeys ?? 10_000
  const now = opts.now ?? Date.now
  // Map keeps insertion order; a key is re-inserted when its window restarts, so the first entries are the oldest windows.
  const windows = new Map<string, { start: number; count: number }>()
  let sweptAt = 0

  const makeRoom = (t: number) => {
    if (windows.size < maxKeys) return
    if (t - sweptAt >= windowMs) {
      sweptAt = t
      for (const [k, w] of windows) if (w.start + windowMs <= t) windows.delete(k)
    }
    for (const k of windows.keys()) {
      if (windows.size < maxKeys) break
      windows.delete(k)
    }
  }

  return {
    /** Counts one request; returns 0 when it is allowed, else the milliseconds until the key may ask again. */
    hit(key: string): number {
      const t = now()
      let w = windows.get(key)
      if (!w || w.start + windowMs <= t) {
        windows.delete(key)
        makeRoom(t)
        w = { start: t, count: 0 }
        windows.set(key, w)
      }
      w.count++
      return w.count > opts.limit ? w.start + windowMs - t : 0
    },
    /** How many keys are held (tests). */
    size(): number {
      return windows.size
    },
  }
}

export type RateLimiter = ReturnType<typeof createRateLimiter>
