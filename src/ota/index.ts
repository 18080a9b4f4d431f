import type { Config } from '../config/index.js'
import type { Logger } from '../log/index.js'
import type { Metric } from '../util/metric.js'
import type { OtaContext } from './context.js'
import { createDeviceReports } from './device-reports.js'
import { adoptFirmwareDir, importFirmwareDir } from './import.js'
import { newCounters, otaMetrics } from './metrics.js'
import { createPullDecisions } from './pull-decisions.js'
import { createLinks, createNotifier, type Publish } from './push.js'
import { createWorkQueue } from './queue.js'
import { createRolloutPass } from './rollout-pass.js'
import { createOtaRoutes } from './routes.js'
import type { Db } from './store.js'
import { createCommandVetting } from './vet-command.js'

export { importFirmwareDir }
export { createPullToken, deletePullToken, PULL_TOKEN_PREFIX } from './pull-tokens.js'
export { writeOtaReport, writeStatusReports, type OtaReport, type StatusReport } from './reports.js'
export type { DeviceReportEvent, DeviceStatusEvent } from './device-reports.js'
export type { OtaCounters } from './metrics.js'
export type { CheckRequest, PullRequest } from './pull-decisions.js'

export type OtaOptions = {
  config: Config['ota']
  db: () => Db
  log: Logger
  /** The broker's publish: cmd/ota goes out with QoS 1. */
  publish: Publish
  /** Base URL for download links when ota.publicUrl is empty (app.ts knows the HTTP port). */
  fallbackPublicUrl: () => string
  now?: () => number
  /** With several instances, whether this one runs rollout progression now (docs/scaling.md). Default: always. */
  leads?: () => boolean
}

const TICK_SOON_MS = 1000

/**
 * OTA: firmware store, rollouts, and the three device dialects (MQTT push as paku-core does it,
 * Arduino HTTPUpdate pull, the old /check). Rollout work runs through one queue so ticks and device
 * reports never race each other inside this process.
 */
export function createOta(opts: OtaOptions) {
  const leads = opts.leads ?? (() => true)
  const { config, log } = opts
  const now = opts.now ?? Date.now
  const counters = newCounters()
  const queue = createWorkQueue(log)
  const { enqueue } = queue
  let timer: NodeJS.Timeout | undefined
  let soon: NodeJS.Timeout | undefined
  let running = false
  const publicUrl = () => (config.publicUrl || opts.fallbackPublicUrl()).replace(/\/+$/, '')
  const links = createLinks(publicUrl)
  const notify = createNotifier({
    db: opts.db,
    publish: opts.publish,
    counters,
    downloadUrl: links.downloadUrl,
  })
  const pass = createRolloutPass({ config, db: opts.db, log, notify })
  const tick = pass.tick
  const ctx: OtaContext = { config, db: opts.db, log, counters, now, leads, enqueue, tick, notify }

  /**
   * A tick shortly, coalescing bursts (many devices reporting at once). The delay lets ingest's batch
   * register a new device in `devices` first (ingest.flushIntervalMs is 200 ms by default).
   */
  function tickSoon(): void {
    if (soon || !running || !leads()) return
    soon = setTimeout(() => {
      soon = undefined
      void enqueue(() => tick())
    }, TICK_SOON_MS)
    soon.unref()
  }

  const reports = createDeviceReports({
    ...ctx,
    running: () => running,
    tracked: pass.tracked,
    tickSoon,
  })
  const decisions = createPullDecisions(ctx)

  const routes = createOtaRoutes({
    config,
    db: opts.db,
    log,
    counters,
    downloadUrl: links.downloadUrl,
    updateUrl: links.updateUrl,
    pullDecision: decisions.pullDecision,
    checkDecision: decisions.checkDecision,
    rolloutChanged: (id) => enqueue(() => tick(id === undefined ? undefined : [id])),
    now,
  })

  return {
    name: 'ota',
    routes,
    vetCommand: createCommandVetting({ db: opts.db, enqueue }),
    counters,
    deviceStatus: reports.deviceStatus,
    deviceReport: reports.deviceReport,
    metrics: (): Promise<Metric[]> => otaMetrics(opts.db, counters),
    /** Runs one rollout pass now and waits for it (tests, and the admin API after a change). */
    tick: (ids?: string[]) => enqueue(() => tick(ids)),
    async start(): Promise<void> {
      running = true
      if (!config.publicUrl)
        log.warn(
          'ota.publicUrl (PAKU_PUBLIC_URL) is not set; cmd/ota links use a local address devices may not reach',
          { url: publicUrl() },
        )
      if (config.firmwareDir) await adoptFirmwareDir({ db: opts.db, dir: config.firmwareDir, log })
      if (leads()) await enqueue(() => tick())
      // Device reports act at once on the instance that receives them; taking devices in, thresholds
      // and time-outs run on the leader only, so two instances never notify the same device twice.
      timer = setInterval(
        () => void (leads() ? enqueue(() => tick()) : undefined),
        config.rolloutTickSeconds * 1000,
      )
      timer.unref()
    },
    async stop(): Promise<void> {
      running = false
      clearInterval(timer)
      clearTimeout(soon)
      timer = soon = undefined
      await queue.idle()
    },
    health(): { ok: boolean; trackedDevices: number; lastError: string | null } {
      const lastError = queue.lastError()
      return { ok: lastError === null, trackedDevices: pass.tracked().devices.size, lastError }
    },
  }
}

export type Ota = ReturnType<typeof createOta>
