import { sql } from 'kysely'
import { compareVersions, percentageMatch } from './versions.js'
import { UNPROVEN_DEVICE } from './pull-tokens.js'
import { insertEvent, type Db, type Release } from './store.js'

export const ROLLOUT_STATUSES = ['running', 'paused', 'completed', 'cancelled'] as const
export type RolloutStatus = (typeof ROLLOUT_STATUSES)[number]
export const TARGET_TYPES = ['all', 'group', 'canary', 'specific'] as const
export type TargetType = (typeof TARGET_TYPES)[number]

/**
 * A device's action inside a rollout. pending → notified (cmd/ota sent, or offered to a polling
 * device) → accepted → downloading → installing → installed (the device said success) → succeeded
 * (it reported the new version). failed, cancelled and skipped (would be a downgrade) end it.
 */
export const DEVICE_STATES = [
  'pending',
  'notified',
  'accepted',
  'downloading',
  'installing',
  'installed',
  'succeeded',
  'failed',
  'cancelled',
  'skipped',
] as const
export type DeviceState = (typeof DEVICE_STATES)[number]
const RANK: Record<DeviceState, number> = {
  pending: 0,
  notified: 1,
  accepted: 2,
  downloading: 3,
  installing: 4,
  installed: 5,
  succeeded: 6,
  failed: 6,
  cancelled: 6,
  skipped: 6,
}
export const TERMINAL: readonly DeviceState[] = ['succeeded', 'failed', 'cancelled', 'skipped']
// An installed device that never reports the new version also times out: it may have rolled back.
const IN_FLIGHT: readonly DeviceState[] = ['accepted', 'downloading', 'installing', 'installed']

/** `group` (one name) is the old OTA service's documented shape, kept in adopted rollouts; paku writes `groups`. */
export type TargetFilter = {
  device_ids?: string[]
  mac_addresses?: string[]
  groups?: string[]
  group?: string
  device_models?: string[]
}

export type Rollout = {
  id: string
  name: string
  firmware_version: string
  device_model: string
  target_type: TargetType
  target_filter: TargetFilter | null
  rollout_percentage: number | null
  is_active: boolean
  status: RolloutStatus
  status_reason: string | null
  stages: number[] | null
  stage_index: number
  auto_advance: boolean
  success_threshold_percent: number
  error_threshold_count: number | null
  error_threshold_percent: number | null
  error_threshold_min_executed: number
  allow_downgrade: boolean
  errors_since: Date | null
  created_at: Date
  updated_at: Date
  created_by: string | null
}

const ROLLOUT_COLUMNS = sql`id::text AS id, name, firmware_version, device_model, target_type, target_filter, rollout_percentage,
  COALESCE(is_active, false) AS is_active, status, status_reason, stages, stage_index, auto_advance, success_threshold_percent,
  error_threshold_count, error_threshold_percent, error_threshold_min_executed, allow_downgrade, errors_since, created_at, updated_at, created_by`

/** The percentages a rollout widens through; the old API's single rollout_percentage is a one-stage rollout. */
export function stagesOf(
  r: Pick<Rollout, 'stages' | 'rollout_percentage' | 'target_type'>,
): number[] {
  if (r.stages && r.stages.length > 0) return r.stages
  if (r.target_type === 'specific') return [100]
  return [r.rollout_percentage ?? 100]
}

export function currentPercentage(r: Rollout): number {
  const stages = stagesOf(r)
  return stages[Math.min(r.stage_index, stages.length - 1)] ?? 100
}

export type TargetDevice = {
  device_id: string
  device_model: string | null
  current_firmware_version: string | null
  mac_address: string | null
  protocol: string | null
  groups: string[]
}

/**
 * Whether a device belongs to the rollout's target at its current stage (docs/compatibility.md, "Rollout
 * targeting and the canary hash", plus groups and stages).
 */
export function isTarget(r: Rollout, d: TargetDevice): boolean {
  const f = r.target_filter ?? {}
  if (r.target_type === 'specific') {
    const named =
      (f.device_ids ?? []).includes(d.device_id) ||
      (d.mac_address !== null &&
        (f.mac_addresses ?? []).map(normalMac).includes(normalMac(d.mac_address)))
    return named && percentageMatch(d.device_id, currentPercentage(r))
  }
  if (d.device_model === null || !modelsOf(r).includes(d.device_model)) return false
  const groups = f.groups ?? (typeof f.group === 'string' ? [f.group] : [])
  if (r.target_type === 'group' && !groups.some((g) => d.groups.includes(g))) return false
  return percentageMatch(d.device_id, currentPercentage(r))
}

const normalMac = (mac: string) => mac.replace(/[^0-9a-f]/gi, '').toUpperCase()

/**
 * How two versions of a model compare: by semver where both are semver, else by upload time where
 * both were uploaded (opaque versions such as `test-20260115-140322` or `abc1234-20260115`, which the
 * old service ordered by upload), else unknown (undefined).
 */
export function compareReleases(
  a: string,
  b: string,
  uploaded?: ReadonlyMap<string, number>,
): -1 | 0 | 1 | undefined {
  const semverOrder = compareVersions(a, b)
  if (semverOrder !== undefined) return semverOrder
  const x = uploaded?.get(a)
  const y = uploaded?.get(b)
  if (x === undefined || y === undefined) return a === b ? 0 : undefined
  return x < y ? -1 : x > y ? 1 : 0
}

/** When each version of these models was uploaded (epoch ms), for compareReleases. */
export async function uploadTimes(db: Db, models: readonly string[]): Promise<Map<string, number>> {
  const r = await sql<{ version: string; at: Date }>`
    SELECT version, max(created_at) AS at FROM firmware_releases WHERE device_model = ANY(${[...models]}::text[]) GROUP BY version`.execute(
    db,
  )
  return new Map(r.rows.map((x) => [x.version, x.at.getTime()]))
}

/** The models a rollout delivers to: its target filter's, else its firmware's. */
export function modelsOf(r: Pick<Rollout, 'target_filter' | 'device_model'>): string[] {
  const f = r.target_filter ?? {}
  return f.device_models && f.device_models.length > 0 ? f.device_models : [r.device_model]
}

/** Where a newly targeted device starts: already there, a downgrade to skip, or waiting for the command. */
export function initialState(
  r: Pick<Rollout, 'firmware_version' | 'allow_downgrade'>,
  current: string | null,
  uploaded?: ReadonlyMap<string, number>,
): { state: DeviceState; detail: string | null } {
  if (current !== null && current === r.firmware_version)
    return { state: 'succeeded', detail: 'already runs this version' }
  const cmp = current === null ? undefined : compareReleases(current, r.firmware_version, uploaded)
  if (cmp === 0) return { state: 'succeeded', detail: 'already runs this version' }
  if (cmp === 1 && !r.allow_downgrade)
    return { state: 'skipped', detail: `runs newer ${current}; set allow_downgrade to go back` }
  return { state: 'pending', detail: null }
}

export type Counts = Record<DeviceState, number> & { total: number }

export async function getRollout(db: Db, id: string): Promise<Rollout | undefined> {
  if (!/^\d{1,18}$/.test(id)) return undefined
  const r =
    await sql<Rollout>`SELECT ${ROLLOUT_COLUMNS} FROM rollout_configurations WHERE id = ${id}::bigint`.execute(
      db,
    )
  return r.rows[0]
}

export async function listRollouts(
  db: Db,
  filter: { status?: string | undefined; model?: string | undefined; limit: number },
): Promise<Rollout[]> {
  const r = await sql<Rollout>`
    SELECT ${ROLLOUT_COLUMNS} FROM rollout_configurations
    WHERE (${filter.status ?? null}::text IS NULL OR status = ${filter.status ?? null}::text)
      AND (${filter.model ?? null}::text IS NULL OR device_model = ${filter.model ?? null}::text)
    ORDER BY created_at DESC, id DESC LIMIT ${filter.limit}`.execute(db)
  return r.rows
}

/**
 * Devices per state for each rollout. By default only verified rows: what judges a rollout (thresholds,
 * stages, completion). `{ verified: false }` counts the rows taken in through unauthenticated pull or
 * check requests instead, which the API shows beside them.
 */
export async function countsOf(
  db: Db,
  rolloutIds: string[],
  o: { verified: boolean } = { verified: true },
): Promise<Map<string, Counts>> {
  const out = new Map<string, Counts>()
  for (const id of rolloutIds) out.set(id, emptyCounts())
  if (rolloutIds.length === 0) return out
  const r = await sql<{ rollout_id: string; state: DeviceState; n: number }>`
    SELECT rollout_id::text AS rollout_id, state, count(*)::int AS n FROM rollout_devices
    WHERE rollout_id = ANY(${rolloutIds}::bigint[]) AND verified = ${o.verified} GROUP BY 1, 2`.execute(
    db,
  )
  for (const row of r.rows) {
    const c = out.get(row.rollout_id)
    if (!c) continue
    c[row.state] = row.n
    c.total += row.n
  }
  return out
}

function emptyCounts(): Counts {
  const c = { total: 0 } as Counts
  for (const s of DEVICE_STATES) c[s] = 0
  return c
}

export type RolloutDevice = {
  device_id: string
  state: DeviceState
  /** false: taken in through an unauthenticated pull or check; it does not count toward the rollout's thresholds. */
  verified: boolean
  stage: number
  from_version: string | null
  progress_percent: number | null
  detail: string | null
  attempts: number
  notified_at: Date | null
  created_at: Date
  updated_at: Date
  /** Each state the action entered and when (sql/0019_rollout_device_steps.sql). */
  steps: Array<{ state: DeviceState; at: string }>
}

export async function rolloutDevices(
  db: Db,
  id: string,
  state: string | undefined,
): Promise<RolloutDevice[]> {
  return db
    .selectFrom('rollout_devices')
    .select([
      'device_id',
      'state',
      'verified',
      'stage',
      'from_version',
      'progress_percent',
      'detail',
      'attempts',
      'notified_at',
      'created_at',
      'updated_at',
      'steps',
    ])
    .where('rollout_id', '=', id)
    .$if(state !== undefined, (q) => q.where('state', '=', state as string))
    .orderBy('device_id')
    .$narrowType<Pick<RolloutDevice, 'state' | 'steps'>>()
    .execute()
}

export type DeviceAction = RolloutDevice & {
  rollout_id: number
  rollout_name: string
  firmware_version: string
  device_model: string
  rollout_status: RolloutStatus
}

/** A device's actions in every rollout that took it in, newest first: its OTA history with the time of each step. */
export async function deviceActions(
  db: Db,
  deviceId: string,
  limit: number,
): Promise<DeviceAction[]> {
  const r = await sql<DeviceAction>`
    SELECT rd.device_id, rd.state, rd.verified, rd.stage, rd.from_version, rd.progress_percent, rd.detail, rd.attempts, rd.notified_at,
      rd.created_at, rd.updated_at, rd.steps, r.id::int AS rollout_id, r.name AS rollout_name, r.firmware_version, r.device_model, r.status AS rollout_status
    FROM rollout_devices rd JOIN rollout_configurations r ON r.id = rd.rollout_id
    WHERE rd.device_id = ${deviceId} ORDER BY rd.created_at DESC LIMIT ${limit}`.execute(db)
  return r.rows
}

export type NewRollout = {
  name: string
  release: Release
  targetType: TargetType
  targetFilter: TargetFilter | null
  percentage: number
  stages: number[] | null
  autoAdvance: boolean
  successThresholdPercent: number
  errorThresholdCount: number | null
  errorThresholdPercent: number | null
  errorThresholdMinExecuted: number
  allowDowngrade: boolean
  active: boolean
  createdBy: string
}

/**
 * Creates a rollout. Running or paused rollouts of the same model are superseded (cancelled, their
 * open device actions too), as a new assignment replaces the old one in hawkBit: a device follows one
 * rollout at a time. Returns undefined when the name is taken.
 */
export async function createRollout(
  db: Db,
  n: NewRollout,
): Promise<{ rollout: Rollout; superseded: string[] } | undefined> {
  return db.transaction().execute(async (tx) => {
    const inserted = await sql<Rollout>`
      INSERT INTO rollout_configurations (name, firmware_version, device_model, target_type, target_filter, rollout_percentage, is_active,
        created_by, status, status_reason, stages, auto_advance, success_threshold_percent, error_threshold_count, error_threshold_percent,
        error_threshold_min_executed, allow_downgrade)
      VALUES (${n.name}, ${n.release.version}, ${n.release.device_model}, ${n.targetType},
        ${n.targetFilter === null ? null : JSON.stringify(n.targetFilter)}::jsonb, ${n.percentage}, ${n.active}, ${n.createdBy},
        ${n.active ? 'running' : 'paused'}, ${n.active ? null : 'created inactive'}, ${n.stages}::int[], ${n.autoAdvance},
        ${n.successThresholdPercent}, ${n.errorThresholdCount}, ${n.errorThresholdPercent}, ${n.errorThresholdMinExecuted}, ${n.allowDowngrade})
      ON CONFLICT (name) DO NOTHING
      RETURNING ${ROLLOUT_COLUMNS}`.execute(tx)
    const rollout = inserted.rows[0]
    if (!rollout) return undefined
    const old = await sql<{ id: string; name: string }>`
      UPDATE rollout_configurations SET status = 'cancelled', is_active = false, updated_at = NOW(),
        status_reason = ${`superseded by rollout ${rollout.id} (${n.name})`}
      WHERE device_model = ${n.release.device_model} AND status IN ('running', 'paused') AND id <> ${rollout.id}::bigint
      RETURNING id::text AS id, name`.execute(tx)
    // A completed rollout keeps taking in devices that appear later until a newer one replaces it.
    await sql`
      UPDATE rollout_configurations SET is_active = false, updated_at = NOW(), status_reason = ${`completed; superseded by rollout ${rollout.id} (${n.name})`}
      WHERE device_model = ${n.release.device_model} AND status = 'completed' AND is_active AND id <> ${rollout.id}::bigint`.execute(
      tx,
    )
    for (const o of old.rows) {
      await cancelOpenDevices(tx, o.id, `superseded by rollout ${rollout.id}`)
      await insertEvent(tx, {
        type: 'rollout_updated',
        rolloutId: o.id,
        data: { action: 'cancelled', reason: `superseded by ${n.name}` },
      })
    }
    await insertEvent(tx, {
      type: 'rollout_created',
      version: n.release.version,
      rolloutId: rollout.id,
      data: {
        name: n.name,
        device_model: n.release.device_model,
        target_type: n.targetType,
        target_filter: n.targetFilter,
        rollout_percentage: n.percentage,
        stages: n.stages,
      },
    })
    return { rollout, superseded: old.rows.map((o) => o.name) }
  })
}

async function cancelOpenDevices(db: Db, rolloutId: string, detail: string): Promise<void> {
  await sql`
    UPDATE rollout_devices SET state = 'cancelled', detail = ${detail}, updated_at = NOW()
    WHERE rollout_id = ${rolloutId}::bigint AND state NOT IN ('succeeded', 'failed', 'cancelled', 'skipped')`.execute(
    db,
  )
}

export type Action = 'pause' | 'resume' | 'cancel' | 'advance' | 'retry'

/** Applies an admin action; returns an error sentence when the rollout's state does not allow it. */
export async function applyAction(
  db: Db,
  { id, action, percentage }: { id: string; action: Action; percentage?: number | undefined },
): Promise<{ error: string } | { rollout: Rollout }> {
  return db.transaction().execute(async (tx) => {
    const r = (
      await sql<Rollout>`SELECT ${ROLLOUT_COLUMNS} FROM rollout_configurations WHERE id = ${id}::bigint FOR UPDATE`.execute(
        tx,
      )
    ).rows[0]
    if (!r) return { error: 'not found' }
    const set = async (status: RolloutStatus, reason: string | null, extra = sql``) => {
      await sql`UPDATE rollout_configurations SET status = ${status}, status_reason = ${reason},
        is_active = ${status !== 'cancelled'}, updated_at = NOW() ${extra} WHERE id = ${id}::bigint`.execute(
        tx,
      )
    }
    switch (action) {
      case 'pause':
        if (r.status !== 'running')
          return { error: `rollout is ${r.status}; only a running rollout can be paused` }
        await set('paused', 'paused by an admin')
        break
      case 'resume':
        if (r.status !== 'paused' && r.status !== 'completed')
          return {
            error: `rollout is ${r.status}; only a paused or completed rollout can be resumed`,
          }
        await set('running', null, sql`, errors_since = NOW()`)
        break
      case 'cancel':
        if (r.status === 'cancelled') return { error: 'rollout is already cancelled' }
        await set('cancelled', 'cancelled by an admin')
        await cancelOpenDevices(tx, id, 'rollout cancelled')
        break
      case 'advance': {
        if (r.status === 'cancelled') return { error: 'rollout is cancelled' }
        if (!r.is_active) return { error: 'rollout was superseded by a newer one' }
        const stages = stagesOf(r)
        const now = currentPercentage(r)
        let next: number[]
        let index: number
        if (percentage !== undefined) {
          if (percentage <= now)
            return { error: `the rollout is at ${now} %; advance to a higher percentage` }
          next = [
            ...stages.filter((p) => p < percentage!),
            percentage,
            ...stages.filter((p) => p > percentage!),
          ]
          index = next.indexOf(percentage)
        } else {
          if (r.stage_index >= stages.length - 1)
            return {
              error: `the rollout is at its last stage (${now} %); pass {"percentage": N} to widen it`,
            }
          next = stages
          index = r.stage_index + 1
        }
        await set(
          r.status === 'paused' ? 'paused' : 'running',
          r.status === 'paused' ? r.status_reason : null,
          sql`, stages = ${next}::int[], stage_index = ${index}`,
        )
        break
      }
      case 'retry': {
        await sql`
          UPDATE rollout_devices SET state = 'pending', detail = 'retry requested', progress_percent = NULL, notified_at = NULL, updated_at = NOW()
          WHERE rollout_id = ${id}::bigint AND state = 'failed'`.execute(tx)
        if (r.status === 'completed') await set('running', null)
        break
      }
    }
    await insertEvent(tx, {
      type: 'rollout_updated',
      version: r.firmware_version,
      rolloutId: id,
      data: { action, percentage: percentage ?? null },
    })
    const updated = (
      await sql<Rollout>`SELECT ${ROLLOUT_COLUMNS} FROM rollout_configurations WHERE id = ${id}::bigint`.execute(
        tx,
      )
    ).rows[0]
    return { rollout: updated as Rollout }
  })
}

/**
 * Devices a rollout could reach: registered devices of its models (or named ones), with their groups.
 * `trusted` is false for devices only unauthenticated pull requests know: their rows are unverified.
 */
async function candidates(db: Db, r: Rollout): Promise<Array<TargetDevice & { trusted: boolean }>> {
  const f = r.target_filter ?? {}
  const models = modelsOf(r)
  const rows = await sql<TargetDevice & { trusted: boolean }>`
    SELECT d.device_id, d.device_model, d.current_firmware_version, d.mac_address, d.metadata->>'protocol' AS protocol,
      COALESCE((SELECT array_agg(m.group_name) FROM device_group_members m WHERE m.device_id = d.device_id), '{}') AS groups,
      NOT ${UNPROVEN_DEVICE} AS trusted
    FROM devices d
    WHERE ${
      r.target_type === 'specific'
        ? sql`d.device_id = ANY(${f.device_ids ?? []}::text[]) OR upper(regexp_replace(COALESCE(d.mac_address, ''), '[^0-9A-Fa-f]', '', 'g')) = ANY(${(f.mac_addresses ?? []).map(normalMac)}::text[])`
        : sql`d.device_model = ANY(${models}::text[])`
    }`.execute(db)
  const found = rows.rows
  if (r.target_type === 'specific') {
    // Named devices that never registered still get the command: it waits in their persistent session.
    const known = new Set(found.map((d) => d.device_id))
    for (const id of f.device_ids ?? [])
      if (!known.has(id))
        found.push({
          device_id: id,
          device_model: null,
          current_firmware_version: null,
          mac_address: null,
          protocol: null,
          groups: [],
          trusted: true,
        })
  }
  return found.filter((d) => isTarget(r, d))
}

export type TickResult = {
  rollout: Rollout
  toNotify: Array<{ deviceId: string }>
  changes: string[]
}

/**
 * One pass over a rollout: takes in the devices its current stage reaches, times out silent ones,
 * then applies the error threshold (pause), the success threshold (next stage) and completion.
 * Returns the push devices that still need their cmd/ota.
 */
export async function tickRollout(
  db: Db,
  id: string,
  timeoutMinutes: number,
): Promise<TickResult | undefined> {
  return db.transaction().execute(async (tx) => {
    const r = (
      await sql<Rollout>`SELECT ${ROLLOUT_COLUMNS} FROM rollout_configurations WHERE id = ${id}::bigint FOR UPDATE`.execute(
        tx,
      )
    ).rows[0]
    if (!r || !isLive(r)) return undefined
    const changes: string[] = []
    const timedOut = await sql<{ device_id: string; verified: boolean }>`
      UPDATE rollout_devices SET state = 'failed', detail = ${`no report for ${timeoutMinutes} min while updating (timed out)`}, updated_at = NOW()
      WHERE rollout_id = ${id}::bigint AND state = ANY(${[...IN_FLIGHT]}::text[]) AND updated_at < NOW() - make_interval(mins => ${timeoutMinutes})
      RETURNING device_id, verified`.execute(tx)
    for (const d of timedOut.rows) {
      await insertEvent(tx, {
        type: 'update_failed',
        deviceId: d.device_id,
        version: r.firmware_version,
        rolloutId: id,
        data: { reason: 'timed out', ...unverifiedMark(d.verified) },
      })
      changes.push(`${d.device_id} timed out`)
    }
    if (r.status === 'running' || r.status === 'completed') {
      const existing = new Set(
        (
          await sql<{
            device_id: string
          }>`SELECT device_id FROM rollout_devices WHERE rollout_id = ${id}::bigint`.execute(tx)
        ).rows.map((d) => d.device_id),
      )
      const fresh = (await candidates(tx, r)).filter((d) => !existing.has(d.device_id))
      if (fresh.length > 0) {
        const uploaded = await uploadTimes(tx, modelsOf(r))
        const init = fresh.map((d) => initialState(r, d.current_firmware_version, uploaded))
        await sql`
          INSERT INTO rollout_devices (rollout_id, device_id, state, stage, from_version, detail, verified)
          SELECT ${id}::bigint, * FROM unnest(${fresh.map((d) => d.device_id)}::text[], ${init.map((s) => s.state)}::text[],
            ${fresh.map(() => r.stage_index)}::int[], ${fresh.map((d) => d.current_firmware_version)}::text[], ${init.map((s) => s.detail)}::text[],
            ${fresh.map((d) => d.trusted)}::bool[])
          ON CONFLICT DO NOTHING`.execute(tx)
        changes.push(`${fresh.length} devices taken in at ${currentPercentage(r)} %`)
      }
    }
    const counts = (await countsOf(tx, [id])).get(id) as Counts
    const recent = (
      await sql<Recent>`
      SELECT count(*) FILTER (WHERE state = 'failed')::int AS failed,
        count(*) FILTER (WHERE state IN ('failed', 'installed', 'succeeded') AND detail IS DISTINCT FROM 'already runs this version')::int AS executed
      FROM rollout_devices WHERE rollout_id = ${id}::bigint AND verified
        AND (${r.errors_since}::timestamptz IS NULL OR updated_at >= ${r.errors_since}::timestamptz)`.execute(
        tx,
      )
    ).rows[0] as Recent
    const decision = judge(r, counts, recent)
    if (decision) {
      await sql`UPDATE rollout_configurations SET status = ${decision.status}, status_reason = ${decision.reason}, stage_index = ${decision.stageIndex},
        updated_at = NOW() WHERE id = ${id}::bigint`.execute(tx)
      await insertEvent(tx, {
        type: 'rollout_updated',
        version: r.firmware_version,
        rolloutId: id,
        data: { action: decision.action, reason: decision.reason, counts },
      })
      changes.push(decision.reason)
    }
    const after = (
      await sql<Rollout>`SELECT ${ROLLOUT_COLUMNS} FROM rollout_configurations WHERE id = ${id}::bigint`.execute(
        tx,
      )
    ).rows[0] as Rollout
    const toNotify =
      after.status === 'running'
        ? (
            await sql<{ device_id: string }>`
              SELECT rd.device_id FROM rollout_devices rd LEFT JOIN devices d ON d.device_id = rd.device_id
              WHERE rd.rollout_id = ${id}::bigint AND rd.state = 'pending'
                -- A device heard over MQTT (its status set site_id) gets the push, whatever a pull request once wrote into its protocol.
                AND (COALESCE(d.metadata->>'protocol', 'mqtt') <> 'http' OR d.site_id IS NOT NULL)`.execute(
              tx,
            )
          ).rows.map((d) => ({ deviceId: d.device_id }))
        : []
    return { rollout: after, toNotify, changes }
  })
}

/** Updates of verified rows finished since the error threshold last started counting (creation or the last resume). */
export type Recent = { failed: number; executed: number }

/**
 * The rollout-level decision from its devices' counts (hawkBit's error/success conditions), if any.
 * The error threshold looks at `recent`: devices that already ran the version do not count as executed.
 */
export function judge(
  r: Rollout,
  c: Counts,
  recent: Recent,
): { status: RolloutStatus; stageIndex: number; action: string; reason: string } | undefined {
  const open = c.pending + c.notified + c.accepted + c.downloading + c.installing + c.installed
  if (r.status === 'completed')
    return open > 0
      ? {
          status: 'running',
          stageIndex: r.stage_index,
          action: 'reopened',
          reason: `${open} devices joined after completion`,
        }
      : undefined
  if (r.status !== 'running') return undefined
  const { failed, executed } = recent
  if (r.error_threshold_count !== null && failed >= r.error_threshold_count) {
    return {
      status: 'paused',
      stageIndex: r.stage_index,
      action: 'paused',
      reason: `error threshold: ${failed} devices failed (limit ${r.error_threshold_count})`,
    }
  }
  if (
    r.error_threshold_percent !== null &&
    executed >= r.error_threshold_min_executed &&
    executed > 0 &&
    (failed * 100) / executed >= r.error_threshold_percent
  ) {
    return {
      status: 'paused',
      stageIndex: r.stage_index,
      action: 'paused',
      reason: `error threshold: ${failed} of ${executed} updates failed (${Math.round((failed * 100) / executed)} %, limit ${r.error_threshold_percent} %)`,
    }
  }
  const considered = c.total - c.skipped - c.cancelled
  const ok = c.installed + c.succeeded
  const stages = stagesOf(r)
  const last = r.stage_index >= stages.length - 1
  const stageMet =
    considered === 0 ? open === 0 : (ok * 100) / considered >= r.success_threshold_percent
  if (!last && r.auto_advance && stageMet) {
    return {
      status: 'running',
      stageIndex: r.stage_index + 1,
      action: 'advanced',
      reason: `success threshold met (${ok} of ${considered}); widening to ${stages[r.stage_index + 1]} %`,
    }
  }
  if (last && c.total > 0 && open === 0) {
    return {
      status: 'completed',
      stageIndex: r.stage_index,
      action: 'completed',
      reason: `completed: ${c.succeeded + c.installed} updated, ${c.failed} failed, ${c.skipped} skipped`,
    }
  }
  return undefined
}

export async function markNotified(db: Db, rolloutId: string, deviceId: string): Promise<void> {
  await sql`
    UPDATE rollout_devices SET state = CASE WHEN state = 'pending' THEN 'notified' ELSE state END,
      notified_at = NOW(), attempts = attempts + 1, updated_at = CASE WHEN state = 'pending' THEN NOW() ELSE updated_at END
    WHERE rollout_id = ${rolloutId}::bigint AND device_id = ${deviceId}`.execute(db)
}

/** A device's open action in a live (running or paused) rollout, with what the rollout delivers. */
export type OpenAction = {
  rollout_id: string
  rollout_status: RolloutStatus
  device_id: string
  state: DeviceState
  firmware_version: string
  device_model: string
  notified_at: Date | null
  updated_at: Date
  checksum_sha256: string | null
  checksum_md5: string | null
  file_size: number | null
}

export async function openActions(db: Db, deviceId: string): Promise<OpenAction[]> {
  const r = await sql<OpenAction>`
    SELECT rd.rollout_id::text AS rollout_id, r.status AS rollout_status, rd.device_id, rd.state, r.firmware_version, r.device_model,
      rd.notified_at, rd.updated_at, f.checksum_sha256, f.checksum_md5, f.file_size::float8 AS file_size
    FROM rollout_devices rd JOIN rollout_configurations r ON r.id = rd.rollout_id
    LEFT JOIN firmware_releases f ON f.device_model = r.device_model AND f.version = r.firmware_version
    WHERE rd.device_id = ${deviceId} AND (r.status IN ('running', 'paused') OR (r.status = 'completed' AND r.is_active)) AND rd.state NOT IN ('succeeded', 'failed', 'cancelled', 'skipped')
    ORDER BY rd.rollout_id DESC`.execute(db)
  return r.rows
}

/** A move of one device's action: to `to`, with `detail` (null keeps the old one) and a progress `percent`. */
export type DeviceAdvance = {
  action: Pick<OpenAction, 'rollout_id' | 'device_id' | 'state' | 'firmware_version'>
  to: DeviceState
  detail: string | null
  /** A reported progress; undefined: none reported (a move to the same state then changes nothing). */
  percent?: number | null | undefined
}

/**
 * Moves a device's action forward (never back); failed ends it from any open state. Returns undefined
 * when nothing changed, else whether the row is verified (an unverified outcome is recorded, and its
 * event says so, but it does not count toward the rollout's thresholds).
 */
export async function advanceDevice(
  db: Db,
  { action: a, to, detail, percent }: DeviceAdvance,
): Promise<{ verified: boolean } | undefined> {
  if (TERMINAL.includes(a.state)) return undefined
  if (to !== 'failed' && to !== 'cancelled' && RANK[to] < RANK[a.state]) return undefined
  if (to === a.state && percent === undefined) return undefined
  const r = await sql<{ verified: boolean }>`
    UPDATE rollout_devices SET state = ${to}, detail = COALESCE(${detail}, detail),
      progress_percent = COALESCE(${percent ?? null}::int, CASE WHEN ${to} IN ('installed', 'succeeded') THEN 100 ELSE progress_percent END),
      updated_at = NOW()
    WHERE rollout_id = ${a.rollout_id}::bigint AND device_id = ${a.device_id} AND state = ${a.state}
    RETURNING verified`.execute(db)
  const row = r.rows[0]
  if (!row) return undefined
  if (to === 'failed' || to === 'succeeded') {
    await insertEvent(db, {
      type: to === 'failed' ? 'update_failed' : 'update_completed',
      deviceId: a.device_id,
      version: a.firmware_version,
      rolloutId: a.rollout_id,
      data: { reason: detail, ...unverifiedMark(row.verified) },
    })
  }
  return { verified: row.verified }
}

/** What ota_events add for an outcome that does not count: `verified: false`; nothing for a verified one. */
export function unverifiedMark(verified: boolean): { verified?: false } {
  return verified ? {} : { verified: false }
}

/**
 * Live: running, paused, or completed and not yet superseded (a completed rollout still takes in a
 * device that appears later, and reopens). Paused ones take in nobody.
 */
export function isLive(r: Pick<Rollout, 'status' | 'is_active'>): boolean {
  return (
    r.status === 'running' || r.status === 'paused' || (r.status === 'completed' && r.is_active)
  )
}
const LIVE = sql`(status IN ('running', 'paused') OR (status = 'completed' AND is_active))`
const DELIVERING = sql`(status = 'running' OR (status = 'completed' AND is_active))`

/** Rollouts that deliver now (running, or completed and current), newest first: what a polling device may be offered. */
export async function runningRollouts(db: Db): Promise<Rollout[]> {
  const r =
    await sql<Rollout>`SELECT ${ROLLOUT_COLUMNS} FROM rollout_configurations WHERE ${DELIVERING} ORDER BY created_at DESC, id DESC`.execute(
      db,
    )
  return r.rows
}

/** Live rollouts (running, paused, or completed and current), newest first. */
export async function liveRollouts(db: Db): Promise<Rollout[]> {
  const r =
    await sql<Rollout>`SELECT ${ROLLOUT_COLUMNS} FROM rollout_configurations WHERE ${LIVE} ORDER BY created_at DESC, id DESC`.execute(
      db,
    )
  return r.rows
}

export async function liveRolloutIds(db: Db): Promise<string[]> {
  const r = await sql<{
    id: string
  }>`SELECT id::text AS id FROM rollout_configurations WHERE ${LIVE} ORDER BY id`.execute(db)
  return r.rows.map((x) => x.id)
}

/** Device ids with an open action in a live rollout, and the models live rollouts take devices from. */
export async function trackedDevices(
  db: Db,
): Promise<{ devices: Set<string>; models: Set<string> }> {
  const d = await sql<{ device_id: string }>`
    SELECT DISTINCT rd.device_id FROM rollout_devices rd JOIN rollout_configurations r ON r.id = rd.rollout_id
    WHERE (r.status IN ('running', 'paused') OR (r.status = 'completed' AND r.is_active)) AND rd.state NOT IN ('succeeded', 'failed', 'cancelled', 'skipped')`.execute(
    db,
  )
  const m = await sql<{ model: string }>`
    SELECT DISTINCT unnest(CASE WHEN jsonb_typeof(target_filter->'device_models') = 'array'
      AND jsonb_array_length(target_filter->'device_models') > 0
      THEN ARRAY(SELECT jsonb_array_elements_text(target_filter->'device_models')) ELSE ARRAY[device_model] END) AS model
    FROM rollout_configurations WHERE ${DELIVERING}`.execute(db)
  return {
    devices: new Set(d.rows.map((x) => x.device_id)),
    models: new Set(m.rows.map((x) => x.model)),
  }
}

export type TakenIn = {
  state: DeviceState
  notified_at: Date | null
  detail: string | null
  verified: boolean
}

/**
 * Inserts a device's first row in a rollout (a polling device reaching it) and returns its row. A
 * `verified` request (the device's pull token) makes an unverified row verified: the device proved
 * itself. An outcome unauthenticated requests reported for it (succeeded, failed, skipped) does not
 * stand then: the row starts again from what the authenticated request says. Never the other way.
 */
export async function takeIn(
  db: Db,
  {
    rollout: r,
    deviceId,
    current,
    verified = true,
  }: { rollout: Rollout; deviceId: string; current: string | null; verified?: boolean },
): Promise<TakenIn> {
  const init = initialState(r, current, await uploadTimes(db, modelsOf(r)))
  if (verified) {
    await db
      .deleteFrom('rollout_devices')
      .where('rollout_id', '=', r.id)
      .where('device_id', '=', deviceId)
      .where('verified', '=', false)
      .where('state', 'in', ['succeeded', 'failed', 'skipped'])
      .execute()
    await db
      .updateTable('rollout_devices')
      .set({ verified: true })
      .where('rollout_id', '=', r.id)
      .where('device_id', '=', deviceId)
      .where('verified', '=', false)
      .execute()
  }
  await db
    .insertInto('rollout_devices')
    .values({
      rollout_id: r.id,
      device_id: deviceId,
      state: init.state,
      stage: r.stage_index,
      from_version: current,
      detail: init.detail,
      verified,
    })
    .onConflict((oc) => oc.doNothing())
    .execute()
  const row = await db
    .selectFrom('rollout_devices')
    .select(['state', 'notified_at', 'detail', 'verified'])
    .where('rollout_id', '=', r.id)
    .where('device_id', '=', deviceId)
    .$narrowType<{ state: DeviceState }>()
    .executeTakeFirst()
  return row ?? { state: init.state, notified_at: null, detail: init.detail, verified }
}

/** The rollout that delivers to this device now (the newest delivering one that targets it), if any. */
export async function rolloutFor(
  db: Db,
  deviceId: string,
  model: string,
): Promise<Rollout | undefined> {
  const target = await deviceTarget(db, deviceId, model)
  return (await runningRollouts(db)).find((r) => isTarget(r, target))
}

export async function deviceTarget(
  db: Db,
  deviceId: string,
  fallbackModel: string | null,
): Promise<TargetDevice> {
  const r = await sql<TargetDevice>`
    SELECT d.device_id, d.device_model, d.current_firmware_version, d.mac_address, d.metadata->>'protocol' AS protocol,
      COALESCE((SELECT array_agg(m.group_name) FROM device_group_members m WHERE m.device_id = d.device_id), '{}') AS groups
    FROM devices d WHERE d.device_id = ${deviceId}`.execute(db)
  return (
    r.rows[0] ?? {
      device_id: deviceId,
      device_model: fallbackModel,
      current_firmware_version: null,
      mac_address: null,
      protocol: null,
      groups: [],
    }
  )
}
