import { access, constants } from 'node:fs/promises'
import type { Config } from '../config/index.js'
import { counter, gauge, type Metric } from '../util/metric.js'
import { errorText, type Logger } from '../log/index.js'
import {
  advanceDevice,
  deviceTarget,
  initialState,
  isTarget,
  liveRolloutIds,
  liveRollouts,
  markNotified,
  modelsOf,
  openActions,
  rolloutFor,
  takeIn,
  tickRollout,
  TERMINAL,
  trackedDevices,
  unverifiedMark,
  type DeviceState,
  type OpenAction,
  type Rollout,
} from './rollouts.js'
import { createOtaRoutes } from './routes.js'
import { importFirmwareDir } from './import.js'
import {
  gauges,
  getRelease,
  insertEvent,
  recordUpdateStatus,
  type Db,
  type Release,
} from './store.js'
import { reportedPercent, type OtaReport, type StatusReport } from './reports.js'

export { importFirmwareDir }
export { createPullToken, deletePullToken, PULL_TOKEN_PREFIX } from './pull-tokens.js'
export { writeOtaReport, writeStatusReports, type OtaReport, type StatusReport } from './reports.js'

/** A pull (HTTPUpdate) check-in; `verified`: it carried the device's pull token. */
export type PullRequest = {
  deviceId: string
  model: string
  version: string | null
  sha256?: string | undefined
  md5?: string | undefined
  freeSpace?: number | undefined
  verified: boolean
}
/** An old-style /check; `verified`: it carried the device's pull token. */
export type CheckRequest = { deviceId: string; model: string; current: string; verified: boolean }

/** What ingest saw from a device, handed over by app.ts (subsystems never import each other). */
export type DeviceStatusEvent = Pick<StatusReport, 'deviceId' | 'model' | 'firmware' | 'online'>
export type DeviceReportEvent = Pick<OtaReport, 'deviceId' | 'sub' | 'payload'>

export type OtaOptions = {
  config: Config['ota']
  db: () => Db
  log: Logger
  /** The broker's publish: cmd/ota goes out with QoS 1. */
  publish: (topic: string, payload: string, opts: { qos: 0 | 1; retain: boolean }) => Promise<void>
  /** Base URL for download links when ota.publicUrl is empty (app.ts knows the HTTP port). */
  fallbackPublicUrl: () => string
  now?: () => number
  /** With several instances, whether this one runs rollout progression now (docs/scaling.md). Default: always. */
  leads?: () => boolean
}

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

/**
 * progress `state` → device action state (the states of docs/compatibility.md, "OTA reports from
 * devices"). Idle/Checking say nothing new; Failed waits for the ota/result that follows it (it carries
 * the reason; a lost one times out).
 */
const PROGRESS: Record<string, DeviceState> = {
  downloading: 'downloading',
  verifying: 'installing',
  installing: 'installing',
  complete: 'installed',
  'rolled back': 'failed',
  rolled_back: 'failed',
}
const TICK_SOON_MS = 1000
/** A status after the result that still names the old version this soon may predate the reboot. */
const REBOOT_GRACE_MS = 15_000

/**
 * OTA: firmware store, rollouts, and the three device dialects (MQTT push as paku-core does it,
 * Arduino HTTPUpdate pull, the old /check). Rollout work runs through one queue so ticks and device
 * reports never race each other inside this process.
 */
export function createOta(opts: OtaOptions) {
  const leads = opts.leads ?? (() => true)
  const { config, log } = opts
  const now = opts.now ?? Date.now
  const counters: OtaCounters = {
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
  let chain: Promise<void> = Promise.resolve()
  let timer: NodeJS.Timeout | undefined
  let soon: NodeJS.Timeout | undefined
  let running = false
  let tracked = { devices: new Set<string>(), models: new Set<string>() }
  let failing: string | null = null
  const publicUrl = () => (config.publicUrl || opts.fallbackPublicUrl()).replace(/\/+$/, '')

  /** Runs rollout work one job at a time; a failing job is logged on the state change only. */
  function enqueue(job: () => Promise<void>): Promise<void> {
    const next = chain.then(job).then(
      () => {
        if (failing) log.info('rollout work recovered')
        failing = null
      },
      (err: unknown) => {
        if (!failing) log.error('rollout work failing', { err: errorText(err) })
        failing = errorText(err)
      },
    )
    chain = next
    return next
  }

  function downloadUrl(model: string, version: string): string {
    return `${publicUrl()}/api/firmware/download/${encodeURIComponent(version)}?device_model=${encodeURIComponent(model)}`
  }

  /** The URL a polling device gives httpUpdate.update(): its model, id and pull token in the query. */
  function updateUrl(model: string, deviceId: string, token: string): string {
    const q = new URLSearchParams({ device_model: model, device_id: deviceId, token })
    return `${publicUrl()}/api/firmware/update?${q.toString()}`
  }

  /**
   * Sends the paku-core command (docs/compatibility.md, "The OTA command push"): the device acks on
   * ota/status, downloads the URL and checks the image against `checksum` (the release's SHA-256; an empty
   * one skips its check).
   */
  async function notify(
    r: Pick<Rollout, 'id' | 'device_model' | 'firmware_version'>,
    checksum: string | null | undefined,
    deviceId: string,
  ): Promise<void> {
    const payload = JSON.stringify({
      url: downloadUrl(r.device_model, r.firmware_version),
      version: r.firmware_version,
      checksum: checksum ?? '',
    })
    await opts.publish(`paku/edge/${deviceId}/cmd/ota`, payload, { qos: 1, retain: false })
    await markNotified(opts.db(), r.id, deviceId)
    counters.commandsSent++
  }

  async function tick(ids?: string[]): Promise<void> {
    const db = opts.db()
    for (const id of ids ?? (await liveRolloutIds(db))) {
      const result = await tickRollout(db, id, config.inProgressTimeoutMinutes)
      if (!result) continue
      for (const change of result.changes)
        log.info('rollout', { rollout: result.rollout.name, change })
      if (result.toNotify.length === 0) continue
      const release = await getRelease(
        db,
        result.rollout.device_model,
        result.rollout.firmware_version,
      )
      for (const d of result.toNotify)
        await notify(result.rollout, release?.checksum_sha256, d.deviceId)
    }
    tracked = await trackedDevices(db)
  }

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

  async function recordOutcome(
    a: Pick<OpenAction, 'rollout_id' | 'device_id' | 'state' | 'firmware_version'>,
    to: DeviceState,
    detail: string | null,
    percent?: number | null,
  ): Promise<boolean> {
    const changed = await advanceDevice(opts.db(), a, to, detail, percent)
    if (changed && (to === 'failed' || to === 'succeeded')) {
      if (!changed.verified) counters.updatesUnverified++
      else if (to === 'failed') counters.updatesFailed++
      else counters.updatesSucceeded++
    }
    return changed !== undefined
  }

  /** Ends a polling device's action (and its device_update_status row) through the queue, then re-judges the rollout. */
  function finishPolled(
    r: Rollout,
    row: { state: DeviceState },
    deviceId: string,
    to: 'succeeded' | 'failed',
    detail: string,
  ): Promise<void> {
    const action = {
      rollout_id: r.id,
      device_id: deviceId,
      state: row.state,
      firmware_version: r.firmware_version,
    }
    return enqueue(async () => {
      if (await recordOutcome(action, to, detail))
        await recordUpdateStatus(
          opts.db(),
          deviceId,
          r.firmware_version,
          to === 'succeeded' ? 'success' : 'failed',
          to === 'failed' ? detail : null,
        )
      await tick([r.id])
    })
  }

  /** A device's status message (every wake): success by version, rollback detection, re-sending a missed command. */
  function deviceStatus(e: DeviceStatusEvent): void {
    if (!running) return
    if (!tracked.devices.has(e.deviceId)) {
      // A device a running rollout would take in: let the next tick do it now rather than in ten seconds.
      if (e.model && tracked.models.has(e.model)) tickSoon()
      return
    }
    void enqueue(async () => {
      const db = opts.db()
      const touched = new Set<string>()
      for (const a of await openActions(db, e.deviceId)) {
        if (e.firmware !== null && e.firmware === a.firmware_version) {
          if (await recordOutcome(a, 'succeeded', 'reported the new version'))
            touched.add(a.rollout_id)
        } else if (
          a.state === 'installed' &&
          e.firmware !== null &&
          now() - a.updated_at.getTime() > REBOOT_GRACE_MS
        ) {
          if (
            await recordOutcome(
              a,
              'failed',
              `rolled back: runs ${e.firmware} after installing ${a.firmware_version}`,
            )
          ) {
            await recordUpdateStatus(
              db,
              e.deviceId,
              a.firmware_version,
              'rolled_back',
              `device runs ${e.firmware}`,
            )
            touched.add(a.rollout_id)
          }
        } else if (
          (a.state === 'pending' || a.state === 'notified') &&
          a.rollout_status === 'running' &&
          e.online &&
          (a.notified_at === null ||
            now() - a.notified_at.getTime() >= config.renotifySeconds * 1000)
        ) {
          // Devices subscribe with clean sessions: a command sent while they slept is gone; send it again now they are awake.
          await notify(
            {
              id: a.rollout_id,
              device_model: a.device_model,
              firmware_version: a.firmware_version,
            },
            a.checksum_sha256,
            e.deviceId,
          ).catch((err: unknown) => {
            log.warn('cmd/ota not sent', { deviceId: e.deviceId, err: errorText(err) })
          })
        }
      }
      if (touched.size > 0 && leads()) await tick([...touched])
    })
  }

  /** ota/status, ota/progress, ota/result from a device: moves its action (ingest mirrors them into the old stack's OTA tables). */
  function deviceReport(e: DeviceReportEvent): void {
    if (!running) return
    void enqueue(async () => {
      const p = e.payload
      const target =
        typeof p.target_version === 'string' && p.target_version !== ''
          ? p.target_version
          : typeof p.version === 'string' && p.version !== ''
            ? p.version
            : null
      const touched = new Set<string>()
      for (const a of await openActions(opts.db(), e.deviceId)) {
        if (target !== null && target !== a.firmware_version) continue
        let to: DeviceState | undefined
        let detail: string | null = null
        let percent: number | null | undefined
        if (e.sub === 'status') {
          const s = typeof p.status === 'string' ? p.status.toLowerCase() : 'accepted'
          if (s === 'rejected' || s === 'failed' || s === 'busy') {
            to = 'failed'
            detail = `device answered ${s}`
          } else to = 'accepted'
        } else if (e.sub === 'progress') {
          const state = typeof p.state === 'string' ? p.state.toLowerCase() : ''
          to =
            PROGRESS[state] ??
            (a.state === 'pending' || a.state === 'notified' ? 'accepted' : a.state)
          if (state === 'rolled back' || state === 'rolled_back') detail = 'device rolled back'
          percent = reportedPercent(p)
        } else {
          const ok = p.success === true
          // 10 "Update already running": a second cmd/ota (the old CI workflow still pushes its own) was
          // refused while the first update goes on; that update's own result is what counts.
          if (!ok && p.result_code === 10) continue
          to = ok ? 'installed' : 'failed'
          detail = ok
            ? 'device reported success; waiting for it to boot the new version'
            : `result ${String(p.result_code ?? '?')}: ${typeof p.message === 'string' ? p.message.slice(0, 300) : 'failed'}`
        }
        if (to && (await recordOutcome(a, to, detail, percent))) touched.add(a.rollout_id)
      }
      if (touched.size > 0 && leads()) await tick([...touched])
    })
  }

  /**
   * A polling (Arduino HTTPUpdate) device asks for an update: the rollout it belongs to decides.
   * Success is inferred from the next check-in reporting the new image; a device that was served the
   * image and still runs the old one has failed and is not offered it again (no update loops).
   * `verified` says the request carried the device's pull token: only then does its outcome count
   * toward the rollout's thresholds (an unauthenticated one moves an unverified row).
   */
  async function pullDecision(d: PullRequest): Promise<{ release: Release } | { reason: string }> {
    const db = opts.db()
    const r = await rolloutFor(db, d.deviceId, d.model)
    if (!r) return { reason: 'no running rollout targets this device' }
    const release = await getRelease(db, r.device_model, r.firmware_version)
    if (!release) return { reason: `release ${r.firmware_version} is gone` }
    const runsTarget =
      d.version === r.firmware_version ||
      (d.sha256 !== undefined && d.sha256 === release.checksum_sha256) ||
      (d.md5 !== undefined && d.md5 === release.checksum_md5)
    const row = await takeIn(
      db,
      r,
      d.deviceId,
      runsTarget ? r.firmware_version : d.version,
      d.verified,
    )
    if (!d.verified && row.verified)
      return { reason: `rollout ${r.name} counts this device's outcome: pull with its token` }
    const action = {
      rollout_id: r.id,
      device_id: d.deviceId,
      state: row.state,
      firmware_version: r.firmware_version,
    }
    if (runsTarget) {
      if (!TERMINAL.includes(row.state))
        await finishPolled(r, row, d.deviceId, 'succeeded', 'checked in with the new image')
      return { reason: `up to date (${r.firmware_version})` }
    }
    if (TERMINAL.includes(row.state))
      return { reason: `${row.state} in rollout ${r.name}${row.detail ? `: ${row.detail}` : ''}` }
    if (row.state === 'downloading') {
      const detail = `still runs ${d.version ?? 'the old image'} after the image was served`
      await finishPolled(r, row, d.deviceId, 'failed', detail)
      return { reason: `failed in rollout ${r.name}: ${detail}` }
    }
    if (d.freeSpace !== undefined && release.file_size > d.freeSpace) {
      const detail = `image is ${release.file_size} bytes, the device has ${d.freeSpace} free`
      await finishPolled(r, row, d.deviceId, 'failed', detail)
      return { reason: detail }
    }
    await advanceDevice(db, action, 'downloading', 'image served to the polling device')
    await markNotified(db, r.id, d.deviceId)
    await insertEvent(db, {
      type: 'update_started',
      deviceId: d.deviceId,
      version: r.firmware_version,
      rolloutId: r.id,
      data: { from_version: d.version, via: 'http-update', ...unverifiedMark(row.verified) },
    })
    await recordUpdateStatus(db, d.deviceId, r.firmware_version, 'downloading')
    return { release }
  }

  /**
   * The old GET /api/firmware/check (docs/compatibility.md, "The old routes"), answered from the same
   * rollouts. A check-in that reports the rollout's version ends the device's action as succeeded (counted
   * only when `verified`).
   */
  async function checkDecision(
    c: CheckRequest,
  ): Promise<{ rollout: Rollout; release: Release } | undefined> {
    const db = opts.db()
    const r = await rolloutFor(db, c.deviceId, c.model)
    if (!r) return undefined
    const row = await takeIn(db, r, c.deviceId, c.current, c.verified)
    if (!c.verified && row.verified) return undefined
    if (TERMINAL.includes(row.state)) return undefined
    if (initialState(r, c.current).state === 'succeeded') {
      await finishPolled(r, row, c.deviceId, 'succeeded', 'checked in with the new version')
      return undefined
    }
    const release = await getRelease(db, r.device_model, r.firmware_version)
    if (!release) return undefined
    if (row.state === 'pending') {
      // Once per device and rollout, not on every poll as the old service did.
      await advanceDevice(
        db,
        {
          rollout_id: r.id,
          device_id: c.deviceId,
          state: row.state,
          firmware_version: r.firmware_version,
        },
        'notified',
        'offered by /api/firmware/check',
      )
      await markNotified(db, r.id, c.deviceId)
      await insertEvent(db, {
        type: 'update_started',
        deviceId: c.deviceId,
        version: r.firmware_version,
        rolloutId: r.id,
        data: { from_version: c.current, via: 'check', ...unverifiedMark(row.verified) },
      })
    }
    return { rollout: r, release }
  }

  /**
   * A cmd/ota that a client published (the old CI workflow's mosquitto_pub, an operator): each device
   * gets one per version. For a version a live rollout delivers to the device's model, only a device the
   * rollout targets gets it, and only the first one (paku may have sent it already, or sends none now
   * that the client did); a version no rollout delivers there passes as it is. Decided in the rollout
   * queue, so a rollout pass and a client's command never both send.
   */
  async function vetCommand(
    deviceId: string,
    payload: Buffer,
  ): Promise<{ deliver: boolean; reason: string }> {
    const version = commandVersion(payload)
    if (version === undefined) return { deliver: true, reason: 'the command names no version' }
    let verdict: { deliver: boolean; reason: string } | undefined
    await enqueue(async () => {
      const db = opts.db()
      const target = await deviceTarget(db, deviceId, null)
      const live = (await liveRollouts(db)).filter(
        (r) =>
          r.firmware_version === version &&
          ((target.device_model !== null && modelsOf(r).includes(target.device_model)) ||
            isTarget(r, target)),
      )
      if (live.length === 0) {
        verdict = { deliver: true, reason: `no rollout delivers ${version} to ${deviceId}` }
        return
      }
      const r = live.find((x) => isTarget(x, target))
      if (!r) {
        verdict = {
          deliver: false,
          reason: `${deviceId} is not targeted by rollout ${(live[0] as Rollout).name}`,
        }
        return
      }
      if (r.status === 'paused') {
        verdict = { deliver: false, reason: `rollout ${r.name} is paused` }
        return
      }
      const row = await takeIn(db, r, deviceId, target.current_firmware_version)
      if (row.state !== 'pending') {
        verdict = {
          deliver: false,
          reason: `${deviceId} is ${row.state} in rollout ${r.name}: its cmd/ota for ${version} went out already`,
        }
        return
      }
      await markNotified(db, r.id, deviceId)
      verdict = { deliver: true, reason: `the first cmd/ota for ${version} in rollout ${r.name}` }
    })
    // Rollout work failing (the database away): the command goes as it would have without paku.
    return verdict ?? { deliver: true, reason: 'rollout state unavailable' }
  }

  /**
   * Reads the old service's firmware volume into the database for releases adopted without their
   * image, so they can be downloaded and rolled out at once. Already stored ones are not read again;
   * a directory that cannot be read stops the start (a typo would otherwise go unnoticed).
   */
  async function adoptFirmwareDir(dir: string): Promise<void> {
    try {
      await access(dir, constants.R_OK | constants.X_OK)
    } catch (err) {
      throw new Error(
        `ota.firmwareDir: cannot read ${dir} (${(err as NodeJS.ErrnoException).code ?? errorText(err)})`,
        { cause: err },
      )
    }
    const r = await importFirmwareDir(opts.db(), dir)
    if (r.imported.length > 0)
      log.info('firmware read from the old firmware volume', { dir, releases: r.imported })
    if (r.missing.length > 0)
      log.warn(
        'adopted releases without their file in ota.firmwareDir; they cannot be downloaded until uploaded again',
        { dir, releases: r.missing },
      )
    if (r.mismatched.length > 0)
      log.error(
        'files in ota.firmwareDir do not match the SHA-256 recorded for them; not imported',
        { dir, releases: r.mismatched },
      )
  }

  const routes = createOtaRoutes({
    config,
    db: opts.db,
    log,
    counters,
    downloadUrl,
    updateUrl,
    pullDecision,
    checkDecision,
    rolloutChanged: (id) => enqueue(() => tick(id === undefined ? undefined : [id])),
    now,
  })

  async function metrics(): Promise<Metric[]> {
    const g = await gauges(opts.db())
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

  return {
    name: 'ota',
    routes,
    vetCommand,
    counters,
    deviceStatus,
    deviceReport,
    metrics,
    /** Runs one rollout pass now and waits for it (tests, and the admin API after a change). */
    tick: (ids?: string[]) => enqueue(() => tick(ids)),
    async start(): Promise<void> {
      running = true
      if (!config.publicUrl)
        log.warn(
          'ota.publicUrl (PAKU_PUBLIC_URL) is not set; cmd/ota links use a local address devices may not reach',
          { url: publicUrl() },
        )
      if (config.firmwareDir) await adoptFirmwareDir(config.firmwareDir)
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
      await chain
    },
    health(): { ok: boolean; trackedDevices: number; lastError: string | null } {
      return { ok: failing === null, trackedDevices: tracked.devices.size, lastError: failing }
    },
  }
}

export type Ota = ReturnType<typeof createOta>

/** The version a paku-core cmd/ota names (`{"url","version","checksum"}`), if any. */
function commandVersion(payload: Buffer): string | undefined {
  try {
    const p = JSON.parse(payload.toString('utf8')) as unknown
    const v = typeof p === 'object' && p !== null ? (p as { version?: unknown }).version : undefined
    return typeof v === 'string' && v !== '' ? v : undefined
  } catch {
    return undefined
  }
}
