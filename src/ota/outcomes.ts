import type { OtaCounters } from './metrics.js'
import { advanceDevice, type DeviceAdvance } from './rollouts.js'
import type { Db } from './store.js'

/**
 * Moves a device's action (advanceDevice) and counts a final outcome: succeeded or failed for a verified
 * row, unverified for one only unauthenticated requests vouch for. True when the row changed.
 */
export async function recordOutcome(
  db: Db,
  counters: OtaCounters,
  change: DeviceAdvance,
): Promise<boolean> {
  const changed = await advanceDevice(db, change)
  const { to } = change
  if (changed && (to === 'failed' || to === 'succeeded')) {
    if (!changed.verified) counters.updatesUnverified++
    else if (to === 'failed') counters.updatesFailed++
    else counters.updatesSucceeded++
  }
  return changed !== undefined
}
