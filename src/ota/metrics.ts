import { counter, gauge, type Metric } from '../util/metric.js'
import { gauges, type Db } from './store.js'

export type OtaCounters = {
  uploads: number
  uploadsRejected: number
  downloads: number
  downloadsPartial: number
  downloadBytes: number
  pullChecks: number
  pullServed: number
  commandsSent: number
  updatesSucceeded: number
  updatesFailed: number
  /** Outcomes of unverified rollout rows (unauthenticated pull or check requests): recorded, never judged. */
  updatesUnverified: number
}

/** Every OTA counter at zero: one set per process, so /metrics restarts from zero with it. */
export function newCounters(): OtaCounters {
  return {
    uploads: 0,
    uploadsRejected: 0,
    downloads: 0,
    downloadsPartial: 0,
    downloadBytes: 0,
    pullChecks: 0,
    pullServed: 0,
    commandsSent: 0,
    updatesSucceeded: 0,
    updatesFailed: 0,
    updatesUnverified: 0,
  }
}

/** The OTA part of /metrics: this process's counters, and gauges read from the database. */
export async function otaMetrics(db: () => Db, counters: OtaCounters): Promise<Metric[]> {
  const g = await gauges(db())
  return [
    counter('paku_ota_uploads_total', 'Firmware images stored.', counters.uploads),
    counter(
      'paku_ota_uploads_rejected_total',
      'Firmware uploads refused (bad image, duplicate, unknown model).',
      counters.uploadsRejected,
    ),
    counter(
      'paku_ota_downloads_total',
      'Firmware downloads completed (whole image or range).',
      counters.downloads,
    ),
    counter(
      'paku_ota_downloads_partial_total',
      'Range (206) downloads completed.',
      counters.downloadsPartial,
    ),
    counter('paku_ota_download_bytes_total', 'Firmware bytes sent.', counters.downloadBytes),
    counter('paku_ota_pull_checks_total', 'HTTPUpdate check-ins.', counters.pullChecks),
    counter(
      'paku_ota_pull_served_total',
      'HTTPUpdate check-ins answered with an image.',
      counters.pullServed,
    ),
    counter('paku_ota_commands_sent_total', 'cmd/ota messages published.', counters.commandsSent),
    counter(
      'paku_ota_updates_succeeded_total',
      'Device updates confirmed by the device reporting the new version.',
      counters.updatesSucceeded,
    ),
    counter(
      'paku_ota_updates_failed_total',
      'Device updates failed, timed out or rolled back.',
      counters.updatesFailed,
    ),
    counter(
      'paku_ota_updates_unverified_total',
      'Outcomes reported by unauthenticated pull or check requests (never counted toward rollout thresholds).',
      counters.updatesUnverified,
    ),
    {
      name: 'paku_devices',
      help: 'Registered devices by model.',
      type: 'gauge',
      samples: g.devicesByModel.map((d) => ({ labels: { model: d.model }, value: d.n })),
    },
    {
      name: 'paku_ota_rollouts',
      help: 'Rollouts by status.',
      type: 'gauge',
      samples: g.rolloutsByStatus.map((r) => ({ labels: { status: r.status }, value: r.n })),
    },
    gauge('paku_ota_releases', 'Firmware releases stored.', g.releases),
  ]
}
