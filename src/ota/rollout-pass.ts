import type { Config } from '../config/index.js'
import type { Logger } from '../log/index.js'
import type { Notify } from './push.js'
import { liveRolloutIds, tickRollout, trackedDevices } from './rollouts.js'
import { getRelease, type Db } from './store.js'

/**
 * The rollout pass: judges each live rollout (take-in, stages, thresholds, time-outs), sends the commands
 * it decides on, and refreshes which devices and models the live rollouts care about. Run it inside the
 * rollout queue.
 */
export function createRolloutPass(o: {
  config: Config['ota']
  db: () => Db
  log: Logger
  notify: Notify
}) {
  let tracked = { devices: new Set<string>(), models: new Set<string>() }

  async function tick(ids?: string[]): Promise<void> {
    const db = o.db()
    for (const id of ids ?? (await liveRolloutIds(db))) {
      const result = await tickRollout(db, id, o.config.inProgressTimeoutMinutes)
      if (!result) continue
      for (const change of result.changes)
        o.log.info('rollout', { rollout: result.rollout.name, change })
      if (result.toNotify.length === 0) continue
      const release = await getRelease(
        db,
        result.rollout.device_model,
        result.rollout.firmware_version,
      )
      for (const d of result.toNotify)
        await o.notify(result.rollout, release?.checksum_sha256, d.deviceId)
    }
    tracked = await trackedDevices(db)
  }

  return {
    tick,
    /** Device ids with an open action, and the models live rollouts take devices from, as of the last pass. */
    tracked: () => tracked,
  }
}
