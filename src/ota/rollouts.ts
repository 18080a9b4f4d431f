import { sql, type Selectable } from 'kysely'
import type { DB, Row } from '../db/index.js'
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

/** The columns of rollout_configurations a rollout carries as they are; is_active is selected apart (ROLLOUT_SELECTION). */
const ROLLOUT_FIELDS = [
  'id',
  'name',
  'firmware_version',
  'device_model',
  'target_type',
  'target_filter',
  'rollout_percentage',
  'status',
  'status_reason',
  'stages',
  'stage_index',
  'auto_advance',
  'success_threshold_percent',
  'error_threshold_count',
  'error_threshold_percent',
  'error_threshold_min_executed',
  'allow_downgrade',
  'errors_since',
  'created_at',
  'updated_at',
  'created_by',
] as const satisfies ReadonlyArray<keyof Selectable<DB['rollout_configurations']>>

/** A rollout as ROLLOUT_SELECTION and ROLLOUT_COLUMNS return it. */
type RolloutRow = Row<'rollout_configurations', (typeof ROLLOUT_FIELDS)[number]> & {
  is_active: boolean
}

export type Rollout = Omit<RolloutRow, 'target_type' | 'target_filter' | 'status'> & {
  target_type: TargetType
  target_filter: TargetFilter | null
  status: RolloutStatus
}

/**
 * The columns Rollout types more narrowly than the table does: status and target_type hold what their
 * CHECK constraints allow (sql/0002_ota.sql, sql/0011_ota_rollouts.sql); target_filter is the
 * TargetFilter createRollout writes, or the old service's documented shape in adopted rollouts.
 */
type RolloutNarrowing = Pick<Rollout, 'target_type' | 'target_filter' | 'status'>
const asRollout = (row: RolloutRow): Rollout => row as RolloutRow & RolloutNarrowing

const ROLLOUT_SELECTION = [
  ...ROLLOUT_FIELDS,
  sql<boolean>`COALESCE(is_active, false)`.as('is_active'),
] as const
/** ROLLOUT_SELECTION for raw statements. */
const ROLLOUT_COLUMNS = sql`${sql.join(ROLLOUT_FIELDS.map((c) => sql.ref(c)))}, COALESCE(is_active, false) AS is_active`

/** A SELECT of rollout_configurations with the columns of Rollout; the caller adds WHERE and ORDER BY. */
function selectRollouts(db: Db) {
  return db
    .selectFrom('rollout_configurations')
    .select(ROLLOUT_SELECTION)
    .$narrowType<RolloutNarrowing>()
}

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

type TargetDeviceColumn = 'device_id' | 'device_model' | 'current_firmware_version' | 'mac_address'
/** A device as deviceTarget selects it: protocol from its metadata, groups from device_group_members. */
type TargetDeviceRow = Row<'devices', TargetDeviceColumn> & {
  protocol: string | null
  groups: string[]
}
/** A device as candidates selects it: TargetDeviceRow, and whether it proved itself. */
type CandidateRow = Row<'devices', TargetDeviceColumn> & {
  protocol: string | null
  groups: string[]
  trusted: boolean
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
  const rows = await db
    .selectFrom('firmware_releases')
    .select((eb) => ['version', eb.fn.max('created_at').as('at')])
    .where((eb) => eb('device_model', '=', eb.fn.any(sql<string[]>`${[...models]}::text[]`)))
    .groupBy('version')
    .execute()
  return new Map(rows.map((x) => [x.version, x.at.getTime()]))
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
  return selectRollouts(db).where('id', '=', id).executeTakeFirst()
}

export async function listRollouts(
  db: Db,
  filter: { status?: string | undefined; model?: string | undefined; limit: number },
): Promise<Rollout[]> {
  return selectRollouts(db)
    .$if(filter.status !== undefined, (q) => q.where('status', '=', filter.status as string))
    .$if(filter.model !== undefined, (q) => q.where('device_model', '=', filter.model as string))
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(filter.limit)
    .execute()
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
  const rows = await db
    .selectFrom('rollout_devices')
    .select(['rollout_id', 'state', sql<number>`count(*)::int`.as('n')])
    .where((eb) => eb('rollout_id', '=', eb.fn.any(sql<string[]>`${rolloutIds}::bigint[]`)))
    .where('verified', '=', o.verified)
    .groupBy(['rollout_id', 'state'])
    // state holds what its CHECK constraint allows (sql/0011_ota_rollouts.sql).
    .$narrowType<{ state: DeviceState }>()
    .execute()
  for (const row of rows) {
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

const ROLLOUT_DEVICE_FIELDS = [
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
] as const satisfies ReadonlyArray<keyof RolloutDevice>

export async function rolloutDevices(
  db: Db,
  id: string,
  state: string | undefined,
): Promise<RolloutDevice[]> {
  return db
    .selectFrom('rollout_devices')
    .select(ROLLOUT_DEVICE_FIELDS)
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

/** A row of deviceActions' statement. */
type DeviceActionRow = Row<'rollout_devices', (typeof ROLLOUT_DEVICE_FIELDS)[number]> &
  Row<'rollout_configurations', 'firmware_version' | 'device_model'> & {
    rollout_id: number
    rollout_name: RolloutRow['name']
    rollout_status: RolloutRow['status']
  }

/** A device's actions in every rollout that took it in, newest first: its OTA history with the time of each step. */
export async function deviceActions(
  db: Db,
  deviceId: string,
  limit: number,
): Promise<DeviceAction[]> {
  const r = await sql<DeviceActionRow>`
    SELECT rd.device_id, rd.state, rd.verified, rd.stage, rd.from_version, rd.progress_percent, rd.detail, rd.attempts, rd.notified_at,
      rd.created_at, rd.updated_at, rd.steps, r.id::int AS rollout_id, r.name AS rollout_name, r.firmware_version, r.device_model, r.status AS rollout_status
    FROM rollout_devices rd JOIN rollout_configurations r ON r.id = rd.rollout_id
    WHERE rd.device_id = ${deviceId} ORDER BY rd.created_at DESC LIMIT ${limit}`.execute(db)
  // state and status hold what their CHECK constraints allow (sql/0011_ota_rollouts.sql); steps is
  // the list of {state, at} the trigger of sql/0019_rollout_device_steps.sql appends to.
  return r.rows as DeviceAction[]
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
    const rollout = await tx
      .insertInto('rollout_configurations')
      .values({
        name: n.name,
        firmware_version: n.release.version,
        device_model: n.release.device_model,
        target_type: n.targetType,
        target_filter: n.targetFilter === null ? null : JSON.stringify(n.targetFilter),
        rollout_percentage: n.percentage,
        is_active: n.active,
        created_by: n.createdBy,
        status: n.active ? 'running' : 'paused',
        status_reason: n.active ? null : 'created inactive',
        stages: n.stages,
        auto_advance: n.autoAdvance,
        success_threshold_percent: n.successThresholdPercent,
        error_threshold_count: n.errorThresholdCount,
        error_threshold_percent: n.errorThresholdPercent,
        error_threshold_min_executed: n.errorThresholdMinExecuted,
        allow_downgrade: n.allowDowngrade,
      })
      .onConflict((oc) => oc.column('name').doNothing())
      .returning(ROLLOUT_SELECTION)
      .$narrowType<RolloutNarrowing>()
      .executeTakeFirst()
    if (!rollout) return undefined
    const old = await tx
      .updateTable('rollout_configurations')
      .set({
        status: 'cancelled',
        is_active: false,
        updated_at: sql<Date>`NOW()`,
        status_reason: `superseded by rollout ${rollout.id} (${n.name})`,
      })
      .where('device_model', '=', n.release.device_model)
      .where('status', 'in', ['running', 'paused'])
      .where('id', '<>', rollout.id)
      .returning(['id', 'name'])
      .execute()
    // A completed rollout keeps taking in devices that appear later until a newer one replaces it.
    await tx
      .updateTable('rollout_configurations')
      .set({
        is_active: false,
        updated_at: sql<Date>`NOW()`,
        status_reason: `completed; superseded by rollout ${rollout.id} (${n.name})`,
      })
      .where('device_model', '=', n.release.device_model)
      .where('status', '=', 'completed')
      .where('is_active', '=', true)
      .where('id', '<>', rollout.id)
      .execute()
    for (const o of old) {
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
    return { rollout, superseded: old.map((o) => o.name) }
  })
}

async function cancelOpenDevices(db: Db, rolloutId: string, detail: string): Promise<void> {
  await db
    .updateTable('rollout_devices')
    .set({ state: 'cancelled', detail, updated_at: sql<Date>`NOW()` })
    .where('rollout_id', '=', rolloutId)
    .where('state', 'not in', ['succeeded', 'failed', 'cancelled', 'skipped'])
    .execute()
}

export type Action = 'pause' | 'resume' | 'cancel' | 'advance' | 'retry'

/** Applies an admin action; returns an error sentence when the rollout's state does not allow it. */
export async function applyAction(
  db: Db,
  { id, action, percentage }: { id: string; action: Action; percentage?: number | undefined },
): Promise<{ error: string } | { rollout: Rollout }> {
  return db.transaction().execute(async (tx) => {
    const row = (
      await sql<RolloutRow>`SELECT ${ROLLOUT_COLUMNS} FROM rollout_configurations WHERE id = ${id}::bigint FOR UPDATE`.execute(
        tx,
      )
    ).rows[0]
    if (!row) return { error: 'not found' }
    const r = asRollout(row)
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
        await tx
          .updateTable('rollout_devices')
          .set({
            state: 'pending',
            detail: 'retry requested',
            progress_percent: null,
            notified_at: null,
            updated_at: sql<Date>`NOW()`,
          })
          .where('rollout_id', '=', id)
          .where('state', '=', 'failed')
          .execute()
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
    const updated = await selectRollouts(tx).where('id', '=', id).executeTakeFirstOrThrow()
    return { rollout: updated }
  })
}

/**
 * Devices a rollout could reach: registered devices of its models (or named ones), with their groups.
 * `trusted` is false for devices only unauthenticated pull requests know: their rows are unverified.
 */
async function candidates(db: Db, r: Rollout): Promise<Array<TargetDevice & { trusted: boolean }>> {
  const f = r.target_filter ?? {}
  const models = modelsOf(r)
  const rows = await sql<CandidateRow>`
    SELECT d.device_id, d.device_model, d.current_firmware_version, d.mac_address, d.metadata->>'protocol' AS protocol,
      COALESCE((SELECT array_agg(m.group_name) FROM device_group_members m WHERE m.device_id = d.device_id), '{}') AS groups,
      NOT ${UNPROVEN_DEVICE} AS trusted
    FROM devices d
    WHERE ${
      r.target_type === 'specific'
        ? sql`d.device_id = ANY(${f.device_ids ?? []}::text[]) OR upper(regexp_replace(COALESCE(d.mac_address, ''), '[^0-9A-Fa-f]', '', 'g')) = ANY(${(f.mac_addresses ?? []).map(normalMac)}::text[])`
        : sql`d.device_model = ANY(${models}::text[])`
    }`.execute(db)
  const found: Array<TargetDevice & { trusted: boolean }> = rows.rows
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
    const row = (
      await sql<RolloutRow>`SELECT ${ROLLOUT_COLUMNS} FROM rollout_configurations WHERE id = ${id}::bigint FOR UPDATE`.execute(
        tx,
      )
    ).rows[0]
    if (!row) return undefined
    const r = asRollout(row)
    if (!isLive(r)) return undefined
    const changes: string[] = []
    const timedOut = await tx
      .updateTable('rollout_devices')
      .set({
        state: 'failed',
        detail: `no report for ${timeoutMinutes} min while updating (timed out)`,
        updated_at: sql<Date>`NOW()`,
      })
      .where('rollout_id', '=', id)
      .where((eb) => eb('state', '=', eb.fn.any(sql<string[]>`${[...IN_FLIGHT]}::text[]`)))
      .where('updated_at', '<', sql<Date>`NOW() - make_interval(mins => ${timeoutMinutes})`)
      .returning(['device_id', 'verified'])
      .execute()
    for (const d of timedOut) {
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
          await tx
            .selectFrom('rollout_devices')
            .select('device_id')
            .where('rollout_id', '=', id)
            .execute()
        ).map((d) => d.device_id),
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
    const since = r.errors_since
    const recent: Recent = await tx
      .selectFrom('rollout_devices')
      .select([
        sql<number>`count(*) FILTER (WHERE state = 'failed')::int`.as('failed'),
        sql<number>`count(*) FILTER (WHERE state IN ('failed', 'installed', 'succeeded') AND detail IS DISTINCT FROM 'already runs this version')::int`.as(
          'executed',
        ),
      ])
      .where('rollout_id', '=', id)
      .where('verified', '=', true)
      .$if(since !== null, (q) => q.where('updated_at', '>=', since as Date))
      .executeTakeFirstOrThrow()
    const decision = judge(r, counts, recent)
    if (decision) {
      await tx
        .updateTable('rollout_configurations')
        .set({
          status: decision.status,
          status_reason: decision.reason,
          stage_index: decision.stageIndex,
          updated_at: sql<Date>`NOW()`,
        })
        .where('id', '=', id)
        .execute()
      await insertEvent(tx, {
        type: 'rollout_updated',
        version: r.firmware_version,
        rolloutId: id,
        data: { action: decision.action, reason: decision.reason, counts },
      })
      changes.push(decision.reason)
    }
    const after = await selectRollouts(tx).where('id', '=', id).executeTakeFirstOrThrow()
    const toNotify =
      after.status === 'running'
        ? (
            await sql<Row<'rollout_devices', 'device_id'>>`
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
export type OpenAction = Omit<OpenActionRow, 'rollout_status' | 'state'> & {
  rollout_status: RolloutStatus
  state: DeviceState
}

/** A row of openActions' statement; the release's columns are null where no release row matches (LEFT JOIN). */
type OpenActionRow = Row<'rollout_devices', 'device_id' | 'state' | 'notified_at' | 'updated_at'> &
  Row<'rollout_configurations', 'firmware_version' | 'device_model'> & {
    rollout_id: string
    rollout_status: RolloutRow['status']
    checksum_sha256: Row<'firmware_releases', 'checksum_sha256'>['checksum_sha256'] | null
    checksum_md5: Row<'firmware_releases', 'checksum_md5'>['checksum_md5']
    file_size: number | null
  }

export async function openActions(db: Db, deviceId: string): Promise<OpenAction[]> {
  const r = await sql<OpenActionRow>`
    SELECT rd.rollout_id::text AS rollout_id, r.status AS rollout_status, rd.device_id, rd.state, r.firmware_version, r.device_model,
      rd.notified_at, rd.updated_at, f.checksum_sha256, f.checksum_md5, f.file_size::float8 AS file_size
    FROM rollout_devices rd JOIN rollout_configurations r ON r.id = rd.rollout_id
    LEFT JOIN firmware_releases f ON f.device_model = r.device_model AND f.version = r.firmware_version
    WHERE rd.device_id = ${deviceId} AND (r.status IN ('running', 'paused') OR (r.status = 'completed' AND r.is_active)) AND rd.state NOT IN ('succeeded', 'failed', 'cancelled', 'skipped')
    ORDER BY rd.rollout_id DESC`.execute(db)
  // state and status hold what their CHECK constraints allow (sql/0011_ota_rollouts.sql).
  return r.rows as OpenAction[]
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
  const row = await db
    .updateTable('rollout_devices')
    .set({
      state: to,
      detail: sql<string | null>`COALESCE(${detail}, detail)`,
      progress_percent: sql<
        number | null
      >`COALESCE(${percent ?? null}::int, CASE WHEN ${to} IN ('installed', 'succeeded') THEN 100 ELSE progress_percent END)`,
      updated_at: sql<Date>`NOW()`,
    })
    .where('rollout_id', '=', a.rollout_id)
    .where('device_id', '=', a.device_id)
    .where('state', '=', a.state)
    .returning('verified')
    .executeTakeFirst()
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
const LIVE = sql<boolean>`(status IN ('running', 'paused') OR (status = 'completed' AND is_active))`
const DELIVERING = sql<boolean>`(status = 'running' OR (status = 'completed' AND is_active))`

/** Rollouts that deliver now (running, or completed and current), newest first: what a polling device may be offered. */
export async function runningRollouts(db: Db): Promise<Rollout[]> {
  return selectRollouts(db)
    .where(DELIVERING)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .execute()
}

/** Live rollouts (running, paused, or completed and current), newest first. */
export async function liveRollouts(db: Db): Promise<Rollout[]> {
  return selectRollouts(db)
    .where(LIVE)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .execute()
}

export async function liveRolloutIds(db: Db): Promise<string[]> {
  const rows = await db
    .selectFrom('rollout_configurations')
    .select('id')
    .where(LIVE)
    .orderBy('id')
    .execute()
  return rows.map((x) => x.id)
}

/** Device ids with an open action in a live rollout, and the models live rollouts take devices from. */
export async function trackedDevices(
  db: Db,
): Promise<{ devices: Set<string>; models: Set<string> }> {
  const d = await sql<Row<'rollout_devices', 'device_id'>>`
    SELECT DISTINCT rd.device_id FROM rollout_devices rd JOIN rollout_configurations r ON r.id = rd.rollout_id
    WHERE (r.status IN ('running', 'paused') OR (r.status = 'completed' AND r.is_active)) AND rd.state NOT IN ('succeeded', 'failed', 'cancelled', 'skipped')`.execute(
    db,
  )
  // The models of modelsOf: the target filter's device_models, else the firmware's device_model.
  const m = await sql<Row<'rollout_configurations', 'device_model'>>`
    SELECT DISTINCT unnest(CASE WHEN jsonb_typeof(target_filter->'device_models') = 'array'
      AND jsonb_array_length(target_filter->'device_models') > 0
      THEN ARRAY(SELECT jsonb_array_elements_text(target_filter->'device_models')) ELSE ARRAY[device_model] END) AS device_model
    FROM rollout_configurations WHERE ${DELIVERING}`.execute(db)
  return {
    devices: new Set(d.rows.map((x) => x.device_id)),
    models: new Set(m.rows.map((x) => x.device_model)),
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
  const r = await sql<TargetDeviceRow>`
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
