/**
 * What devices say over MQTT, as it moves their rollout actions: status messages (every wake) and the
 * ota/status, ota/progress and ota/result reports (docs/compatibility.md, "OTA reports from devices").
 */
import { errorText } from '../log/index.js'
import type { OtaContext } from './context.js'
import { recordOutcome } from './outcomes.js'
import { reportedPercent, type OtaReport, type StatusReport } from './reports.js'
import { openActions, type DeviceAdvance, type DeviceState, type OpenAction } from './rollouts.js'
import { recordUpdateStatus, type Db } from './store.js'

/** What ingest saw from a device, handed over by app.ts (subsystems never import each other). */
export type DeviceStatusEvent = Pick<StatusReport, 'deviceId' | 'model' | 'firmware' | 'online'>
export type DeviceReportEvent = Pick<OtaReport, 'deviceId' | 'sub' | 'payload'>

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
/** A status after the result that still names the old version this soon may predate the reboot. */
const REBOOT_GRACE_MS = 15_000

/** The device reports' handlers; each queues its work in the rollout queue and returns at once. */
export function createDeviceReports(
  o: OtaContext & {
    /** False before start and after stop: reports are ignored then. */
    running: () => boolean
    /** Devices with an open action and the models live rollouts take in, as of the last pass. */
    tracked: () => { devices: Set<string>; models: Set<string> }
    /** Asks for a rollout pass shortly (bursts coalesce). */
    tickSoon: () => void
  },
) {
  /** A device's status message (every wake): success by version, rollback detection, re-sending a missed command. */
  function deviceStatus(e: DeviceStatusEvent): void {
    if (!o.running()) return
    const tracked = o.tracked()
    if (!tracked.devices.has(e.deviceId)) {
      // A device a running rollout would take in: let the next tick do it now rather than in ten seconds.
      if (e.model && tracked.models.has(e.model)) o.tickSoon()
      return
    }
    void o.enqueue(async () => {
      const db = o.db()
      const touched = new Set<string>()
      for (const a of await openActions(db, e.deviceId))
        if (await onStatus(db, e, a)) touched.add(a.rollout_id)
      if (touched.size > 0 && o.leads()) await o.tick([...touched])
    })
  }

  /** What one status means for one open action; true when the action ended (its rollout is judged again). */
  async function onStatus(db: Db, e: DeviceStatusEvent, a: OpenAction): Promise<boolean> {
    if (e.firmware !== null && e.firmware === a.firmware_version)
      return recordOutcome(db, o.counters, {
        action: a,
        to: 'succeeded',
        detail: 'reported the new version',
      })
    if (
      a.state === 'installed' &&
      e.firmware !== null &&
      o.now() - a.updated_at.getTime() > REBOOT_GRACE_MS
    ) {
      const detail = `rolled back: runs ${e.firmware} after installing ${a.firmware_version}`
      if (!(await recordOutcome(db, o.counters, { action: a, to: 'failed', detail }))) return false
      await recordUpdateStatus(db, {
        deviceId: e.deviceId,
        version: a.firmware_version,
        status: 'rolled_back',
        message: `device runs ${e.firmware}`,
      })
      return true
    }
    if (
      (a.state === 'pending' || a.state === 'notified') &&
      a.rollout_status === 'running' &&
      e.online &&
      (a.notified_at === null ||
        o.now() - a.notified_at.getTime() >= o.config.renotifySeconds * 1000)
    ) {
      // Devices subscribe with clean sessions: a command sent while they slept is gone; send it again now they are awake.
      await o
        .notify(
          { id: a.rollout_id, device_model: a.device_model, firmware_version: a.firmware_version },
          a.checksum_sha256,
          e.deviceId,
        )
        .catch((err: unknown) => {
          o.log.warn('cmd/ota not sent', { deviceId: e.deviceId, err: errorText(err) })
        })
    }
    return false
  }

  /** ota/status, ota/progress, ota/result from a device: moves its action (ingest mirrors them into the old stack's OTA tables). */
  function deviceReport(e: DeviceReportEvent): void {
    if (!o.running()) return
    void o.enqueue(async () => {
      const target = reportedTarget(e.payload)
      const touched = new Set<string>()
      for (const a of await openActions(o.db(), e.deviceId)) {
        if (target !== null && target !== a.firmware_version) continue
        const change = reportedChange(e, a)
        if (change && (await recordOutcome(o.db(), o.counters, { action: a, ...change })))
          touched.add(a.rollout_id)
      }
      if (touched.size > 0 && o.leads()) await o.tick([...touched])
    })
  }

  return { deviceStatus, deviceReport }
}

/** The version a report is about (`target_version`, else `version`); null when it names none. */
function reportedTarget(p: Record<string, unknown>): string | null {
  if (typeof p.target_version === 'string' && p.target_version !== '') return p.target_version
  if (typeof p.version === 'string' && p.version !== '') return p.version
  return null
}

/** Where a report moves an open action in `state`; undefined when it moves nothing. */
function reportedChange(
  e: DeviceReportEvent,
  a: Pick<OpenAction, 'state'>,
): Omit<DeviceAdvance, 'action'> | undefined {
  const p = e.payload
  if (e.sub === 'status') {
    const s = typeof p.status === 'string' ? p.status.toLowerCase() : 'accepted'
    if (s === 'rejected' || s === 'failed' || s === 'busy')
      return { to: 'failed', detail: `device answered ${s}` }
    return { to: 'accepted', detail: null }
  }
  if (e.sub === 'progress') {
    const state = typeof p.state === 'string' ? p.state.toLowerCase() : ''
    return {
      to:
        PROGRESS[state] ?? (a.state === 'pending' || a.state === 'notified' ? 'accepted' : a.state),
      detail: state === 'rolled back' || state === 'rolled_back' ? 'device rolled back' : null,
      percent: reportedPercent(p),
    }
  }
  const ok = p.success === true
  // 10 "Update already running": a second cmd/ota (the old CI workflow still pushes its own) was
  // refused while the first update goes on; that update's own result is what counts.
  if (!ok && p.result_code === 10) return undefined
  return {
    to: ok ? 'installed' : 'failed',
    detail: ok
      ? 'device reported success; waiting for it to boot the new version'
      : `result ${String(p.result_code ?? '?')}: ${typeof p.message === 'string' ? p.message.slice(0, 300) : 'failed'}`,
  }
}
