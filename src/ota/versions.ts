import { createHash } from 'node:crypto'
import semver from 'semver'

/**
 * Versions and models travel in URLs and file names: the old service's slug rule (docs/compatibility.md,
 * "The old routes"), plus `+` for semver build metadata.
 */
export const SLUG = /^[A-Za-z0-9._+-]{1,64}$/

/**
 * A firmware version as paku orders it: semver (`1.4.2`, `v1.4.2`, `1.5.0-rc.1`). Returns the
 * normalised form, or undefined when the string is not semver.
 */
export function parseVersion(version: string): string | undefined {
  if (!SLUG.test(version)) return undefined
  return semver.valid(version.replace(/^v/i, '')) ?? undefined
}

/** -1, 0 or 1; versions that are not semver compare as unknown (undefined). */
export function compareVersions(a: string, b: string): -1 | 0 | 1 | undefined {
  const x = parseVersion(a)
  const y = parseVersion(b)
  if (!x || !y) return undefined
  return semver.compare(x, y)
}

/**
 * The old service's consistent hash (docs/compatibility.md, "Rollout targeting and the canary hash"):
 * SHA-256 of the UTF-8 id read as one unsigned big-endian integer, mod 100, below the percentage. Monotone:
 * a device in at p% stays in at any higher p.
 */
export function percentageMatch(deviceId: string, percentage: number): boolean {
  if (percentage >= 100) return true
  if (percentage <= 0) return false
  return hashBucket(deviceId) < percentage
}

export function hashBucket(deviceId: string): number {
  const hex = createHash('sha256').update(deviceId, 'utf8').digest('hex')
  return Number(BigInt(`0x${hex}`) % 100n)
}
