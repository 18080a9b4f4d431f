import type { Config } from '../config/index.js'
import type { Logger } from '../log/index.js'
import type { OtaCounters } from './metrics.js'
import type { Notify } from './push.js'
import type { Enqueue } from './queue.js'
import type { Db } from './store.js'

/** What createOta hands the parts it composes: its options, the counters, the queue and the pass. */
export type OtaContext = {
  config: Config['ota']
  db: () => Db
  log: Logger
  counters: OtaCounters
  now: () => number
  /** Whether this instance runs rollout progression now (docs/scaling.md). */
  leads: () => boolean
  /** Runs a job in the rollout queue. */
  enqueue: Enqueue
  /** One rollout pass over the given rollouts (all live ones without ids); call it from a queued job. */
  tick: (ids?: string[]) => Promise<void>
  notify: Notify
}
