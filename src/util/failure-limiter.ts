/**
 * Per-address failed-login limiter: after `maxFailures` failures within a minute an address is
 * refused for `blockMs`, without its credentials even being checked (scrypt costs ~50 ms of CPU; a
 * guessing loop must not get to spend ours). Memory is bounded: old entries are pruned.
 */
export function createFailureLimiter(opts: {
  maxFailures: number
  windowMs?: number
  blockMs?: number
  now?: () => number
}) {
  const windowMs = opts.windowMs ?? 60_000
  const blockMs = opts.blockMs ?? 60_000
  const now = opts.now ?? Date.now
  const entries = new Map<string, { failures: number[]; blockedUntil: number }>()

  const prune = (t: number) => {
    if (entries.size < 10_000) return
    for (const [k, e] of entries)
      if (e.blockedUntil < t && (e.failures.at(-1) ?? 0) < t - windowMs) entries.delete(k)
  }

  return {
    /** Milliseconds until the address may try again, or 0. */
    blockedFor(key: string): number {
      const e = entries.get(key)
      return e ? Math.max(0, e.blockedUntil - now()) : 0
    },
    fail(key: string): void {
      const t = now()
      prune(t)
      const e = entries.get(key) ?? { failures: [], blockedUntil: 0 }
      e.failures = [...e.failures.filter((x) => x > t - windowMs), t]
      if (e.failures.length >= opts.maxFailures) {
        e.blockedUntil = t + blockMs
        e.failures = []
      }
      entries.set(key, e)
    },
    succeed(key: string): void {
      entries.delete(key)
    },
  }
}

export type FailureLimiter = ReturnType<typeof createFailureLimiter>
