import { sql, type Kysely } from 'kysely'
import type { DB, Row } from '../db/index.js'
import type { ImageInfo } from './image.js'

export type Db = Kysely<DB>

/**
 * A release as the API shows it (the old `releases` items plus what paku adds): `file_size` as a
 * number, `is_signed` false where unset.
 */
export type Release = Row<
  'firmware_releases',
  | 'id'
  | 'version'
  | 'device_model'
  | 'file_path'
  | 'checksum_sha256'
  | 'checksum_md5'
  | 'release_notes'
  | 'changelog'
  | 'min_version'
  | 'created_at'
  | 'created_by'
  | 'metadata'
> & { file_size: number; is_signed: boolean }

/** The columns of a Release, for `select` and `returning`. */
const RELEASE_COLUMNS = [
  'id',
  'version',
  'device_model',
  'file_path',
  sql<number>`file_size::float8`.as('file_size'),
  'checksum_sha256',
  'checksum_md5',
  sql<boolean>`COALESCE(is_signed, false)`.as('is_signed'),
  'release_notes',
  'changelog',
  'min_version',
  'created_at',
  'created_by',
  'metadata',
] as const

const selectReleases = (db: Db) => db.selectFrom('firmware_releases').select(RELEASE_COLUMNS)

export type NewRelease = {
  version: string
  model: string
  image: ImageInfo
  data: Uint8Array
  releaseNotes: string | null
  changelog: string | null
  minVersion: string | null
  isSigned: boolean
  createdBy: string
}

/**
 * Stores a release and its bytes in one transaction. An existing (model, version) is never
 * overwritten: the existing release comes back as `conflict`.
 */
export async function insertRelease(
  db: Db,
  r: NewRelease,
): Promise<{ release: Release } | { conflict: Release }> {
  return db.transaction().execute(async (tx) => {
    const release: Release | undefined = await tx
      .insertInto('firmware_releases')
      .values({
        version: r.version,
        device_model: r.model,
        min_version: r.minVersion,
        file_path: `${r.model}_${r.version}.bin`,
        file_size: r.image.size,
        checksum_sha256: r.image.sha256,
        checksum_md5: r.image.md5,
        changelog: r.changelog,
        release_notes: r.releaseNotes,
        is_signed: r.isSigned,
        created_by: r.createdBy,
        metadata: JSON.stringify({ chip: r.image.chip, app: r.image.app ?? null }),
      })
      .onConflict((oc) => oc.columns(['version', 'device_model']).doNothing())
      .returning(RELEASE_COLUMNS)
      .executeTakeFirst()
    if (!release) {
      const existing = await getRelease(tx, r.model, r.version)
      if (!existing)
        throw new Error(`release ${r.model} ${r.version} conflicted but cannot be read`)
      return { conflict: existing }
    }
    await tx
      .insertInto('firmware_images')
      .values({
        release_id: release.id,
        data: Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength),
      })
      .execute()
    await insertEvent(tx, {
      type: 'firmware_uploaded',
      version: r.version,
      data: {
        device_model: r.model,
        file_size: r.image.size,
        checksum: r.image.sha256,
        md5: r.image.md5,
        chip: r.image.chip,
        by: r.createdBy,
      },
    })
    return { release }
  })
}

export async function getRelease(
  db: Db,
  model: string,
  version: string,
): Promise<Release | undefined> {
  return selectReleases(db)
    .where('device_model', '=', model)
    .where('version', '=', version)
    .executeTakeFirst()
}

/** Releases with this version (one per model); the download route picks among them. */
export async function releasesByVersion(db: Db, version: string): Promise<Release[]> {
  return selectReleases(db).where('version', '=', version).orderBy('device_model').execute()
}

export async function listReleases(
  db: Db,
  model: string | undefined,
  limit: number,
): Promise<Release[]> {
  return selectReleases(db)
    .$if(model !== undefined, (q) => q.where('device_model', '=', model as string))
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit)
    .execute()
}

/** Releases of a model whose bytes are stored, for matching a running sketch's hash to a version. */
export async function releaseByHash(
  db: Db,
  model: string,
  hash: { md5?: string; sha256?: string },
): Promise<Release | undefined> {
  if (!hash.md5 && !hash.sha256) return undefined
  const { md5, sha256 } = hash
  return selectReleases(db)
    .where('device_model', '=', model)
    .where((eb) =>
      eb.or([
        ...(sha256 !== undefined ? [eb('checksum_sha256', '=', sha256)] : []),
        ...(md5 !== undefined ? [eb('checksum_md5', '=', md5)] : []),
      ]),
    )
    .orderBy('created_at', 'desc')
    .limit(1)
    .executeTakeFirst()
}

/** Whether the bytes are in the database (releases adopted from the old service need `paku firmware import`). */
export async function hasImage(db: Db, releaseId: string): Promise<boolean> {
  const row = await db
    .selectFrom('firmware_images')
    .select('release_id')
    .where('release_id', '=', releaseId)
    .executeTakeFirst()
  return row !== undefined
}

/** Bytes [offset, offset + length) of a release's image. substring() on an EXTERNAL bytea reads only those TOAST chunks. */
export async function readImage(
  db: Db,
  { releaseId, offset, length }: { releaseId: string; offset: number; length: number },
): Promise<Buffer> {
  const row = await db
    .selectFrom('firmware_images')
    .select(sql<Buffer>`substring(data FROM ${offset + 1}::int FOR ${length}::int)`.as('chunk'))
    .where('release_id', '=', releaseId)
    .executeTakeFirst()
  if (!row) throw new Error(`firmware image of release ${releaseId} is gone`)
  return row.chunk
}

/** Deletes a release unless a live rollout (running, paused, or completed and current) delivers it; returns the rollouts in the way. */
export async function deleteRelease(
  db: Db,
  model: string,
  version: string,
): Promise<{ deleted: boolean; blockedBy: string[] }> {
  return db.transaction().execute(async (tx) => {
    const users = await sql<Row<'rollout_configurations', 'name'>>`
      SELECT name FROM rollout_configurations
      WHERE device_model = ${model} AND firmware_version = ${version} AND (status IN ('running', 'paused') OR (status = 'completed' AND is_active)) FOR UPDATE`.execute(
      tx,
    )
    if (users.rows.length > 0) return { deleted: false, blockedBy: users.rows.map((u) => u.name) }
    const r = await tx
      .deleteFrom('firmware_releases')
      .where('device_model', '=', model)
      .where('version', '=', version)
      .executeTakeFirst()
    return { deleted: r.numDeletedRows > 0n, blockedBy: [] }
  })
}

/** Whether a device has reported this model or a release already uses it. */
export async function isKnownModel(db: Db, model: string): Promise<boolean> {
  const row = await db
    .selectNoFrom((eb) =>
      eb
        .or([
          eb.exists(eb.selectFrom('devices').select('id').where('device_model', '=', model)),
          eb.exists(
            eb.selectFrom('firmware_releases').select('id').where('device_model', '=', model),
          ),
        ])
        .as('known'),
    )
    .executeTakeFirstOrThrow()
  return row.known === true
}

export type OtaEventType =
  | 'firmware_uploaded'
  | 'rollout_created'
  | 'rollout_updated'
  | 'update_started'
  | 'update_completed'
  | 'update_failed'
  | 'rollback_initiated'

export type OtaEvent = {
  type: OtaEventType
  deviceId?: string | null
  version?: string | null
  rolloutId?: string | null
  data: Record<string, unknown>
  /** 'paku' for what paku did; null for what a device reported (as the old collector wrote them). */
  createdBy?: 'paku' | null
}

/** One row of ota_events, the OTA history every part of paku writes through. */
export async function insertEvent(db: Db, e: OtaEvent): Promise<void> {
  await db
    .insertInto('ota_events')
    .values({
      event_type: e.type,
      device_id: e.deviceId ?? null,
      firmware_version: e.version ?? null,
      rollout_id: e.rolloutId ?? null,
      event_data: JSON.stringify(e.data),
      created_by: e.createdBy === undefined ? 'paku' : e.createdBy,
    })
    .execute()
}

/** A device as the admin API shows it (the old `devices` items plus groups and what paku learned). */
export type Device = Row<
  'devices',
  | 'device_id'
  | 'device_model'
  | 'current_firmware_version'
  | 'last_seen'
  | 'created_at'
  | 'mac_address'
  | 'online'
  | 'site_id'
  | 'metadata'
> & { groups: string[] }

const DEVICE_COLUMNS = sql`d.device_id, d.device_model, d.current_firmware_version, d.last_seen, d.created_at, d.mac_address, d.online,
  d.site_id, d.metadata,
  COALESCE((SELECT array_agg(m.group_name ORDER BY m.group_name) FROM device_group_members m WHERE m.device_id = d.device_id), '{}') AS groups`

export async function listDevices(
  db: Db,
  filter: { model?: string | undefined; group?: string | undefined; limit: number },
): Promise<Device[]> {
  const r = await sql<Device>`
    SELECT ${DEVICE_COLUMNS} FROM devices d
    WHERE (${filter.model ?? null}::text IS NULL OR d.device_model = ${filter.model ?? null}::text)
      AND (${filter.group ?? null}::text IS NULL OR EXISTS (
        SELECT 1 FROM device_group_members m WHERE m.device_id = d.device_id AND m.group_name = ${filter.group ?? null}::text))
    ORDER BY d.last_seen DESC NULLS LAST, d.device_id LIMIT ${filter.limit}`.execute(db)
  return r.rows
}

export async function getDevice(db: Db, deviceId: string): Promise<Device | undefined> {
  const r =
    await sql<Device>`SELECT ${DEVICE_COLUMNS} FROM devices d WHERE d.device_id = ${deviceId}`.execute(
      db,
    )
  return r.rows[0]
}

/**
 * Registers a device by hand (before it ever connects) or changes its model/metadata. A device an admin
 * registers is recorded as `registered_via: 'admin'`: unauthenticated pull requests may not change it.
 * How a device was registered is paku's to say, so the admin's metadata cannot set it.
 */
export async function putDevice(
  db: Db,
  {
    deviceId,
    model,
    metadata,
  }: { deviceId: string; model: string; metadata: Record<string, unknown> | null },
): Promise<void> {
  const { registered_via: _ignored, ...given } = metadata ?? {}
  await sql`
    INSERT INTO devices (device_id, device_model, metadata) VALUES (${deviceId}, ${model}, ${JSON.stringify({ ...given, registered_via: 'admin' })}::jsonb)
    ON CONFLICT (device_id) DO UPDATE SET device_model = EXCLUDED.device_model,
      metadata = COALESCE(devices.metadata, '{}'::jsonb) || ${JSON.stringify(given)}::jsonb`.execute(
    db,
  )
}

export type Group = Row<'device_groups', 'name' | 'description' | 'created_at'> & {
  device_ids: string[]
}

export async function listGroups(db: Db): Promise<Group[]> {
  const r = await sql<Group>`
    SELECT g.name, g.description, g.created_at,
      COALESCE((SELECT array_agg(m.device_id ORDER BY m.device_id) FROM device_group_members m WHERE m.group_name = g.name), '{}') AS device_ids
    FROM device_groups g ORDER BY g.name`.execute(db)
  return r.rows
}

/** Creates or updates a group; with `deviceIds` its members are exactly those. */
export async function putGroup(
  db: Db,
  {
    name,
    description,
    deviceIds,
  }: { name: string; description: string | null; deviceIds: readonly string[] | undefined },
): Promise<void> {
  await db.transaction().execute(async (tx) => {
    await sql`
      INSERT INTO device_groups (name, description) VALUES (${name}, ${description})
      ON CONFLICT (name) DO UPDATE SET description = COALESCE(EXCLUDED.description, device_groups.description)`.execute(
      tx,
    )
    if (deviceIds === undefined) return
    await sql`DELETE FROM device_group_members WHERE group_name = ${name} AND device_id <> ALL(${[...deviceIds]}::text[])`.execute(
      tx,
    )
    await addMembers(tx, name, deviceIds)
  })
}

export async function addMembers(
  db: Db,
  name: string,
  deviceIds: readonly string[],
): Promise<void> {
  await sql`
    INSERT INTO device_group_members (group_name, device_id) SELECT ${name}, unnest(${[...deviceIds]}::text[])
    ON CONFLICT DO NOTHING`.execute(db)
}

export async function removeMember(db: Db, name: string, deviceId: string): Promise<boolean> {
  const r = await db
    .deleteFrom('device_group_members')
    .where('group_name', '=', name)
    .where('device_id', '=', deviceId)
    .executeTakeFirst()
  return r.numDeletedRows > 0n
}

export async function deleteGroup(db: Db, name: string): Promise<boolean> {
  const r = await db.deleteFrom('device_groups').where('name', '=', name).executeTakeFirst()
  return r.numDeletedRows > 0n
}

export async function groupExists(db: Db, name: string): Promise<boolean> {
  const row = await db
    .selectFrom('device_groups')
    .select('name')
    .where('name', '=', name)
    .executeTakeFirst()
  return row !== undefined
}

/** What a polling (HTTPUpdate) device's request says about it; `metadata` is merged into the row's. */
export type PolledDevice = {
  deviceId: string
  model: string
  mac: string
  version: string | null
  metadata: Record<string, unknown>
}

/**
 * Registers a polling device that paku does not know yet, recorded as `registered_via: 'http'`. The MAC
 * stays with the device that has it. Returns false when the id exists already (nothing is written).
 */
export async function registerPolledDevice(db: Db, d: PolledDevice): Promise<boolean> {
  const r = await sql`
    INSERT INTO devices (device_id, device_model, mac_address, current_firmware_version, last_seen, online, metadata)
    VALUES (${d.deviceId}, ${d.model}, (SELECT ${d.mac}::text WHERE NOT EXISTS (SELECT 1 FROM devices WHERE upper(mac_address) = ${d.mac}::text)),
      ${d.version}, NOW(), true, ${JSON.stringify({ ...d.metadata, registered_via: 'http' })}::jsonb)
    ON CONFLICT (device_id) DO NOTHING`.execute(db)
  return Number(r.numAffectedRows ?? 0) > 0
}

/**
 * A known polling device's check-in, once the request has proved it is that device (its pull token, or
 * the MAC stored for a device registered over HTTP). With `claimMac` (a token) the MAC moves to the
 * request's, unless another device has it.
 */
export async function refreshPolledDevice(
  db: Db,
  d: PolledDevice,
  o: { claimMac: boolean },
): Promise<void> {
  await sql`
    UPDATE devices SET device_model = ${d.model},
      mac_address = CASE WHEN ${o.claimMac} AND NOT EXISTS (SELECT 1 FROM devices o WHERE upper(o.mac_address) = ${d.mac}::text AND o.device_id <> ${d.deviceId})
        THEN ${d.mac}::text ELSE COALESCE(mac_address, (SELECT ${d.mac}::text WHERE NOT EXISTS (SELECT 1 FROM devices o WHERE upper(o.mac_address) = ${d.mac}::text))) END,
      current_firmware_version = COALESCE(${d.version}::text, current_firmware_version),
      last_seen = NOW(), online = true, metadata = COALESCE(metadata, '{}'::jsonb) || ${JSON.stringify(d.metadata)}::jsonb
    WHERE device_id = ${d.deviceId}`.execute(db)
}

/** The device id that already owns a MAC address, if any. */
export async function deviceByMac(db: Db, mac: string): Promise<string | undefined> {
  const row = await db
    .selectFrom('devices')
    .select('device_id')
    .where((eb) => eb(eb.fn('upper', ['mac_address']), '=', mac.toUpperCase()))
    .limit(1)
    .executeTakeFirst()
  return row?.device_id
}

/** A device as the old /check names it: id, model and the version it runs. */
export type CheckedDevice = { deviceId: string; model: string; version: string }

/**
 * The old /check registering a device paku does not know yet (docs/compatibility.md, "The old routes"). A
 * device that asks over HTTP polls for its updates: it is marked so rollouts do not also push cmd/ota to
 * it. Returns false when the id exists already (nothing is written).
 */
export async function registerCheckedDevice(
  db: Db,
  { deviceId, model, version }: CheckedDevice,
): Promise<boolean> {
  const r = await db
    .insertInto('devices')
    .values({
      device_id: deviceId,
      device_model: model,
      current_firmware_version: version,
      last_seen: sql<Date>`NOW()`,
      metadata: JSON.stringify({ protocol: 'http', registered_via: 'http' }),
    })
    .onConflict((oc) => oc.column('device_id').doNothing())
    .executeTakeFirst()
  return Number(r.numInsertedOrUpdatedRows ?? 0) > 0
}

/** A token-authenticated /check: refreshes version and last_seen (as the old service did) and marks the device as polling. */
export async function refreshCheckedDevice(
  db: Db,
  deviceId: string,
  version: string,
): Promise<void> {
  await db
    .updateTable('devices')
    .set({
      current_firmware_version: version,
      last_seen: sql`NOW()`,
      metadata: sql`COALESCE(metadata, '{}'::jsonb) || '{"protocol": "http"}'::jsonb`,
    })
    .where('device_id', '=', deviceId)
    .execute()
}

export type UpdateStatus =
  'pending' | 'downloading' | 'downloaded' | 'installing' | 'success' | 'failed' | 'rolled_back'

/**
 * Keeps device_update_status (what the Grafana OTA dashboard reads) in step for updates paku sees
 * over HTTP: moves the device's open row for that version, or starts one.
 */
export async function recordUpdateStatus(
  db: Db,
  {
    deviceId,
    version,
    status,
    message = null,
  }: { deviceId: string; version: string; status: UpdateStatus; message?: string | null },
): Promise<void> {
  const done = status === 'success' || status === 'failed' || status === 'rolled_back'
  const r = await sql`
    UPDATE device_update_status SET status = ${status}, error_message = ${message},
      progress_percent = CASE WHEN ${status} = 'success' THEN 100 ELSE progress_percent END,
      completed_at = CASE WHEN ${done} THEN NOW() ELSE completed_at END, reported_at = NOW()
    WHERE id = (SELECT id FROM device_update_status WHERE device_id = ${deviceId} AND firmware_version = ${version}
      AND status NOT IN ('success', 'failed', 'rolled_back') ORDER BY reported_at DESC, id DESC LIMIT 1)`.execute(
    db,
  )
  if (Number(r.numAffectedRows ?? 0) > 0) return
  await db
    .insertInto('device_update_status')
    .values({
      device_id: deviceId,
      firmware_version: version,
      status,
      error_message: message,
      progress_percent: status === 'success' ? 100 : null,
      started_at: sql`NOW()`,
      completed_at: done ? sql`NOW()` : null,
    })
    .execute()
}

/** The old service's /api/admin/update-status rows. */
export async function listUpdateStatus(
  db: Db,
  f: { deviceId?: string | undefined; version?: string | undefined; limit: number },
) {
  return db
    .selectFrom('device_update_status')
    .select([
      'device_id',
      'firmware_version',
      'status',
      'error_message',
      'progress_percent',
      'started_at',
      'completed_at',
      'reported_at',
    ])
    .$if(f.deviceId !== undefined, (q) => q.where('device_id', '=', f.deviceId as string))
    .$if(f.version !== undefined, (q) => q.where('firmware_version', '=', f.version as string))
    .orderBy('reported_at', 'desc')
    .orderBy('id', 'desc')
    .limit(f.limit)
    .execute()
}

/** A device's OTA events (uploads of nothing, rollouts taking it in, outcomes), newest first. */
export async function deviceEvents(db: Db, deviceId: string, limit: number) {
  return db
    .selectFrom('ota_events')
    .select([
      'event_type',
      'firmware_version',
      sql<number | null>`rollout_id::int`.as('rollout_id'),
      'event_data',
      'created_at',
    ])
    .where('device_id', '=', deviceId)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit)
    .execute()
}

/** The old report endpoint's effects (docs/compatibility.md, "The old routes"), with success also moving the device's version. */
export async function reportUpdateStatus(
  db: Db,
  deviceId: string,
  b: {
    firmware_version: string
    status: UpdateStatus
    error_message?: string | null | undefined
    progress_percent?: number | null | undefined
  },
): Promise<void> {
  await db.transaction().execute(async (tx) => {
    await tx
      .insertInto('device_update_status')
      .values({
        device_id: deviceId,
        firmware_version: b.firmware_version,
        status: b.status,
        error_message: b.error_message ?? null,
        progress_percent: b.progress_percent ?? null,
        started_at: b.status === 'downloading' ? sql`NOW()` : null,
        completed_at: b.status === 'success' || b.status === 'failed' ? sql`NOW()` : null,
      })
      .execute()
    if (b.status === 'success') {
      await tx
        .updateTable('devices')
        .set({ current_firmware_version: b.firmware_version, last_seen: sql`NOW()` })
        .where('device_id', '=', deviceId)
        .execute()
      await insertEvent(tx, {
        type: 'update_completed',
        deviceId,
        version: b.firmware_version,
        data: { via: 'update-status' },
      })
    }
    if (b.status === 'failed')
      await insertEvent(tx, {
        type: 'update_failed',
        deviceId,
        version: b.firmware_version,
        data: { error: b.error_message ?? null },
      })
  })
}

/** Small numbers for /metrics that live in the database. */
export async function gauges(db: Db): Promise<{
  devicesByModel: Array<{ model: string; n: number }>
  rolloutsByStatus: Array<{ status: string; n: number }>
  releases: number
}> {
  const count = sql<number>`count(*)::int`.as('n')
  const devicesByModel = await db
    .selectFrom('devices')
    .select(['device_model as model', count])
    .groupBy('device_model')
    .orderBy('device_model')
    .execute()
  const rolloutsByStatus = await db
    .selectFrom('rollout_configurations')
    .select(['status', count])
    .groupBy('status')
    .orderBy('status')
    .execute()
  const f = await db.selectFrom('firmware_releases').select(count).executeTakeFirst()
  return { devicesByModel, rolloutsByStatus, releases: f?.n ?? 0 }
}
