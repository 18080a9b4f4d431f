/**
 * What devices report about themselves, written into OTA's tables: the devices registry from status
 * messages, device_update_status and ota_events from ota/status, ota/progress and ota/result. OTA owns
 * these tables; ingest calls these functions inside its batch transaction (app.ts hands them over), so a
 * report is stored in the same commit as the message's other rows, in arrival order.
 */
import { sql, type Kysely } from 'kysely'
import type { DB } from '../db/index.js'
import { insertEvent } from './store.js'

type Tx = Kysely<DB>

/** A `{site}/edge/{device}/status` message as ingest read it. */
export type StatusReport = {
  siteId: string
  deviceId: string
  /** False only for an explicit `"online": false` (the LWT); any other status is a sign of life. */
  online: boolean
  model: string | null
  firmware: string | null
  receivedAt: Date
}

/** An `ota/status`, `ota/progress` or `ota/result` message as ingest read it. */
export type OtaReport = {
  sub: 'status' | 'progress' | 'result'
  deviceId: string
  payload: Record<string, unknown>
  receivedAt: Date
}

/** A reported `percent`, as a whole number within 0–100; undefined when there is none. */
export function reportedPercent(p: Record<string, unknown>): number | undefined {
  return typeof p.percent === 'number' && Number.isFinite(p.percent)
    ? Math.max(0, Math.min(100, Math.round(p.percent)))
    : undefined
}

type DeviceFold = {
  siteId: string
  model: string | null
  firmware: string | null
  lastSeen: Date | null
  online: boolean
}

/**
 * The devices registry from status messages, folded per device in arrival order so one statement touches
 * each device once. It fixes two of the old collector's bugs (docs/compatibility.md, "Old bugs and what paku
 * does instead"): a status without firmware_version keeps the known version, and the LWT
 * `{"online":false}` marks the device offline without refreshing last_seen.
 */
export async function writeStatusReports(tx: Tx, rows: readonly StatusReport[]): Promise<void> {
  const fold = new Map<string, DeviceFold>()
  for (const r of rows) {
    const prev = fold.get(r.deviceId)
    fold.set(r.deviceId, {
      siteId: r.siteId,
      model: r.model ?? prev?.model ?? null,
      firmware: r.firmware ?? prev?.firmware ?? null,
      lastSeen: r.online ? r.receivedAt : (prev?.lastSeen ?? null),
      online: r.online,
    })
  }
  const withModel = [...fold].filter(([, f]) => f.model !== null)
  const withoutModel = [...fold].filter(([, f]) => f.model === null)
  if (withModel.length > 0) {
    await sql`
      INSERT INTO devices (device_id, site_id, device_model, current_firmware_version, last_seen, online)
      SELECT * FROM unnest(${withModel.map(([id]) => id)}::text[], ${withModel.map(([, f]) => f.siteId)}::text[],
        ${withModel.map(([, f]) => f.model)}::text[], ${withModel.map(([, f]) => f.firmware)}::text[],
        ${withModel.map(([, f]) => f.lastSeen)}::timestamptz[], ${withModel.map(([, f]) => f.online)}::bool[])
      ON CONFLICT (device_id) DO UPDATE SET
        site_id = EXCLUDED.site_id,
        device_model = EXCLUDED.device_model,
        current_firmware_version = COALESCE(EXCLUDED.current_firmware_version, devices.current_firmware_version),
        last_seen = COALESCE(EXCLUDED.last_seen, devices.last_seen),
        online = EXCLUDED.online`.execute(tx)
  }
  if (withoutModel.length > 0) {
    // devices.device_model is NOT NULL: a device is registered only by a status that names its model.
    await sql`
      UPDATE devices d SET
        current_firmware_version = COALESCE(u.firmware, d.current_firmware_version),
        last_seen = COALESCE(u.last_seen, d.last_seen),
        online = u.online
      FROM unnest(${withoutModel.map(([id]) => id)}::text[], ${withoutModel.map(([, f]) => f.firmware)}::text[],
        ${withoutModel.map(([, f]) => f.lastSeen)}::timestamptz[], ${withoutModel.map(([, f]) => f.online)}::bool[])
        AS u(device_id, firmware, last_seen, online)
      WHERE d.device_id = u.device_id`.execute(tx)
  }
}

// ota/progress `state` → device_update_status.status. The old collector mapped everything but
// installing/verifying to 'downloading' (docs/compatibility.md, "Old bugs and what paku does instead");
// unknown states leave the status as it is.
const PROGRESS_STATUS: Record<string, string> = {
  idle: 'pending',
  checking: 'pending',
  downloading: 'downloading',
  verifying: 'downloaded',
  installing: 'installing',
  complete: 'success',
  failed: 'failed',
  'rolled back': 'rolled_back',
  rolled_back: 'rolled_back',
}

const str = (x: unknown): string | null => (typeof x === 'string' && x !== '' ? x : null)

/**
 * Mirrors a device's OTA report into device_update_status and ota_events as the old collector did, with
 * its bugs fixed (docs/compatibility.md, "OTA reports from devices"). Events a device reported carry no
 * `created_by`, as the old collector wrote them.
 */
export async function writeOtaReport(tx: Tx, row: OtaReport): Promise<void> {
  const p = row.payload
  const fw = str(p.target_version) ?? str(p.version)
  const at = row.receivedAt
  const event = (type: 'update_started' | 'update_completed' | 'update_failed') =>
    insertEvent(tx, {
      type,
      deviceId: row.deviceId,
      version: fw ?? 'unknown',
      data: p,
      createdBy: null,
    })
  if (row.sub === 'status') {
    await sql`
      INSERT INTO device_update_status (device_id, firmware_version, status, started_at, reported_at, metadata)
      VALUES (${row.deviceId}, ${fw ?? 'unknown'}, 'pending', ${at}, ${at},
        ${JSON.stringify({ reported_status: p.status ?? null, current_version: p.current_version ?? null })}::jsonb)`.execute(
      tx,
    )
    await event('update_started')
    return
  }
  if (row.sub === 'progress') {
    const state = str(p.state)?.toLowerCase()
    const status = state ? (PROGRESS_STATUS[state] ?? null) : null
    const percent = reportedPercent(p) ?? null
    await sql`
      UPDATE device_update_status SET
        status = COALESCE(${status}, status),
        progress_percent = COALESCE(${percent}::int, progress_percent),
        completed_at = CASE WHEN ${status}::text IN ('success', 'failed', 'rolled_back') THEN ${at}::timestamptz ELSE completed_at END,
        reported_at = ${at}
      WHERE id = (${latestAttempt(row.deviceId, fw)})`.execute(tx)
    return
  }
  const success = p.success === true
  const message = str(p.message)
  const updated = await sql`
    UPDATE device_update_status SET
      status = ${success ? 'success' : 'failed'},
      progress_percent = CASE WHEN ${success} THEN 100 ELSE progress_percent END,
      error_message = ${success ? null : message},
      completed_at = ${at}, reported_at = ${at}
    WHERE id = (${latestAttempt(row.deviceId, fw)})`.execute(tx)
  if (Number(updated.numAffectedRows ?? 0) === 0) {
    // A result without a preceding ota/status (missed while offline) still records the outcome.
    await sql`
      INSERT INTO device_update_status (device_id, firmware_version, status, progress_percent, error_message, completed_at, reported_at)
      VALUES (${row.deviceId}, ${fw ?? 'unknown'}, ${success ? 'success' : 'failed'}, ${success ? 100 : null},
        ${success ? null : message}, ${at}, ${at})`.execute(tx)
  }
  await event(success ? 'update_completed' : 'update_failed')
}

/** The device's newest attempt, for the reported version when the message names one. */
function latestAttempt(deviceId: string, fw: string | null) {
  return sql`
    SELECT id FROM device_update_status
    WHERE device_id = ${deviceId} AND (${fw}::text IS NULL OR firmware_version = ${fw}::text)
    ORDER BY reported_at DESC, id DESC LIMIT 1`
}
