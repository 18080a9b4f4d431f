import { sql, type Kysely, type Selectable, type Transaction } from 'kysely'
import { intArray, PREPARED, textArray, type DB } from '../db/index.js'
import type { DedupKey, Reject, Row } from './records.js'

type Tx = Transaction<DB>
type Of<K extends Row['kind']> = Extract<Row, { kind: K }>

/**
 * Where status and OTA rows go inside a batch's transaction: the devices registry, device_update_status
 * and ota_events belong to OTA, which writes them (app.ts hands its functions over). Called in the same
 * transaction as the batch's other rows, in arrival order.
 */
export type DeviceReports = {
  statuses: (tx: Tx, rows: Of<'status'>[]) => Promise<void>
  ota: (tx: Tx, row: Of<'ota'>) => Promise<void>
}

/**
 * Telemetry (the hot path: measurements and rejects, no spool id) as one statement, which PostgreSQL runs
 * as one transaction: one round trip per batch instead of four (BEGIN, two INSERTs, COMMIT).
 * Data-modifying CTEs all run.
 */
export async function writeTelemetry(
  db: Kysely<DB>,
  rows: ReadonlyArray<Of<'measurement'> | Reject>,
): Promise<void> {
  const by = groupByKind(rows)
  const parts = [
    by.measurement.length > 0 ? insertMeasurementsSql(by.measurement) : undefined,
    by.reject.length > 0 ? insertRejectsSql(by.reject) : undefined,
    rememberKeysSql(rows),
  ].filter((p) => p !== undefined)
  // Prepared: the same few texts (which parts a batch has) hundreds of times a second.
  await sql`${sql.raw(PREPARED)}WITH ${sql.join(parts.map((p, i) => sql`${sql.raw(`w${i}`)} AS (${p})`))} SELECT 1`.execute(
    db,
  )
}

const isTelemetry = (r: Row): r is Of<'measurement'> | Reject =>
  r.kind === 'measurement' || r.kind === 'reject'

/** The batch writer's statements, with OTA's writes for the rows that are OTA's. */
export function createStore(reports: DeviceReports) {
  async function writeRows(tx: Tx, rows: readonly Row[]): Promise<void> {
    const by = groupByKind(rows)
    if (by.measurement.length > 0) await insertMeasurementsSql(by.measurement).execute(tx)
    if (by.status.length > 0) {
      await insertStatuses(tx, by.status)
      await reports.statuses(tx, by.status)
    }
    if (by.config.length > 0) await upsertConfigs(tx, by.config)
    if (by.ecoflow.length > 0) await insertEcoflow(tx, by.ecoflow)
    for (const row of by.ota) await reports.ota(tx, row)
    if (by.reject.length > 0) await insertRejectsSql(by.reject).execute(tx)
    await rememberKeysSql(rows)?.execute(tx)
  }

  return {
    /**
     * Writes one batch in one transaction: a handful of statements whatever the batch size
     * (unnest of column arrays, so no per-row round trip and no 65535-parameter limit).
     */
    async writeBatch(db: Kysely<DB>, rows: readonly Row[], batchId?: string): Promise<void> {
      if (rows.length === 0 && batchId === undefined) return
      if (batchId === undefined && rows.every(isTelemetry)) return writeTelemetry(db, rows)
      await db.transaction().execute(async (tx) => {
        if (batchId !== undefined && !(await claimBatch(tx, batchId))) return
        await writeRows(tx, rows)
      })
    },

    /**
     * Writes several spooled batches in one transaction, skipping those an earlier replay already
     * committed: one round trip for many small batches spooled during an outage.
     */
    async writeSpooled(
      db: Kysely<DB>,
      batches: ReadonlyArray<{ id: string; rows: readonly Row[] }>,
    ): Promise<number> {
      return db.transaction().execute(async (tx) => {
        const claimed = await sql<Pick<Selectable<DB['ingest_spool_batches']>, 'id'>>`
          INSERT INTO ingest_spool_batches (id) SELECT unnest(${batches.map((b) => b.id)}::uuid[]) ON CONFLICT DO NOTHING RETURNING id`.execute(
          tx,
        )
        const fresh = new Set(claimed.rows.map((r) => r.id))
        const rows = batches.filter((b) => fresh.has(b.id)).flatMap((b) => b.rows)
        if (rows.length > 0) await writeRows(tx, rows)
        return rows.length
      })
    },

    /**
     * Writes rows one by one, each under its own savepoint, and returns those PostgreSQL refused.
     * Used only after a batch failed on bad data, to keep the good rows and reject the poisoned ones.
     */
    async writeIsolated(
      db: Kysely<DB>,
      rows: readonly Row[],
      batchId?: string,
    ): Promise<Array<{ row: Row; error: Error }>> {
      const failed: Array<{ row: Row; error: Error }> = []
      await db.transaction().execute(async (tx) => {
        if (batchId !== undefined && !(await claimBatch(tx, batchId))) return
        for (const row of rows) {
          await sql`SAVEPOINT paku_row`.execute(tx)
          try {
            await writeRows(tx, [row])
            await sql`RELEASE SAVEPOINT paku_row`.execute(tx)
          } catch (err) {
            if (!isDataError(err)) throw err
            await sql`ROLLBACK TO SAVEPOINT paku_row`.execute(tx)
            failed.push({ row, error: err as Error })
          }
        }
      })
      return failed
    },
  }
}

export type Store = ReturnType<typeof createStore>

/**
 * Records a spooled batch as written, in the same transaction as its rows; false when an earlier
 * replay already committed it (the crash came between COMMIT and deleting the spool segment).
 */
async function claimBatch(tx: Tx, batchId: string): Promise<boolean> {
  const claimed = await tx
    .insertInto('ingest_spool_batches')
    .values({ id: batchId })
    .onConflict((oc) => oc.doNothing())
    .returning('id')
    .execute()
  return claimed.length === 1
}

/** SQLSTATE classes 22 (data exception) and 23 (integrity): the row is at fault, not the connection. */
export function isDataError(err: unknown): boolean {
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' && (code.startsWith('22') || code.startsWith('23'))
}

/**
 * Message ids remembered per client in ingest_dedup: one row per slot (message id mod REDELIVERY_SLOTS),
 * so the table holds a client's newest ids and no more (sql/0014_ingest_dedup_slots.sql).
 */
export const REDELIVERY_SLOTS = 1024

/** Remembers the message ids of the QoS 1/2 rows (see ingest_dedup); undefined when there are none. */
function rememberKeysSql(rows: readonly Row[]) {
  // One entry per slot, the batch's newest: PostgreSQL refuses an upsert that touches a row twice.
  const last = new Map<string, { key: DedupKey; slot: number }>()
  for (const r of rows) {
    if (!r.dedup) continue
    const slot = r.dedup.messageId % REDELIVERY_SLOTS
    last.set(`${r.dedup.clientId}\u0000${slot}`, { key: r.dedup, slot })
  }
  if (last.size === 0) return undefined
  // Sorted: two batches written at the same time then lock conflicting slots in the same order and
  // one waits for the other instead of deadlocking.
  const list = [...last.values()].sort((a, b) =>
    a.key.clientId < b.key.clientId ? -1 : a.key.clientId > b.key.clientId ? 1 : a.slot - b.slot,
  )
  return sql`
    INSERT INTO ingest_dedup (client_id, slot, message_id, digest)
    SELECT * FROM unnest(${textArray(list.map((e) => e.key.clientId))}::text[], ${intArray(list.map((e) => e.slot))}::int2[],
      ${intArray(list.map((e) => e.key.messageId))}::int[], ${textArray(list.map((e) => e.key.digest))}::text[])
    ON CONFLICT (client_id, slot) DO UPDATE SET message_id = EXCLUDED.message_id, digest = EXCLUDED.digest, seen_at = NOW()`
}

/** A QoS 1/2 message id a client used, and the digest of what it sent under it. */
export type RecentKey = { messageId: number; digest: string }

/**
 * The message ids (and digests) that reached the database of each of `clientIds`, oldest first: a
 * client's newest REDELIVERY_SLOTS, which is all the table keeps of it. One statement whatever the number
 * of clients (an array parameter, not a list).
 */
export async function recentKeys(
  db: Kysely<DB>,
  clientIds: readonly string[],
): Promise<Map<string, RecentKey[]>> {
  const rows = await db
    .selectFrom('ingest_dedup')
    .select(['client_id', 'message_id', 'digest'])
    .where(sql<boolean>`client_id = any(${textArray(clientIds)}::text[])`)
    .orderBy('client_id')
    .orderBy('seen_at')
    .execute()
  const by = new Map<string, RecentKey[]>()
  for (const r of rows) {
    let keys = by.get(r.client_id)
    if (!keys) by.set(r.client_id, (keys = []))
    keys.push({ messageId: r.message_id, digest: r.digest })
  }
  return by
}

function groupByKind(rows: readonly Row[]) {
  const by = {
    measurement: [] as Of<'measurement'>[],
    status: [] as Of<'status'>[],
    config: [] as Of<'config'>[],
    ota: [] as Of<'ota'>[],
    ecoflow: [] as Of<'ecoflow'>[],
    reject: [] as Reject[],
  }
  for (const row of rows) (by[row.kind] as Row[]).push(row)
  return by
}

function insertMeasurementsSql(rows: Of<'measurement'>[]) {
  // Columns go as array literals built here (src/db/arrays.ts). ts goes as epoch milliseconds: no date
  // text to print here or parse there (0.3 µs a row in PostgreSQL), and exact in whole seconds plus
  // milliseconds (one interval product of ms alone rounds past 2^53 µs, from about the year 2255).
  // metrics (JSON.stringify output, which never holds a raw newline) go as one newline-joined text: an
  // array literal would escape every quote they hold.
  return sql`
    INSERT INTO measurements (site_id, system, device_id, location, mac, ts, metrics)
    SELECT site_id, system, device_id, location, mac,
      TIMESTAMPTZ 'epoch' + (ms / 1000) * INTERVAL '1 second' + (ms % 1000) * INTERVAL '1 millisecond', metrics::jsonb FROM unnest(
      ${textArray(rows.map((r) => r.siteId))}::text[], ${textArray(rows.map((r) => r.system))}::text[],
      ${textArray(rows.map((r) => r.deviceId))}::text[], ${textArray(rows.map((r) => r.location))}::text[],
      ${textArray(rows.map((r) => r.mac))}::text[], ${intArray(rows.map((r) => r.ts.getTime()))}::int8[],
      string_to_array(${rows.map((r) => r.metrics).join('\n')}::text, E'\\n')) AS u(site_id, system, device_id, location, mac, ms, metrics)`
}

async function insertStatuses(tx: Tx, rows: Of<'status'>[]): Promise<void> {
  await sql`
    INSERT INTO edge_device_status (site_id, device_id, status, ts)
    SELECT * FROM unnest(${rows.map((r) => r.siteId)}::text[], ${rows.map((r) => r.deviceId)}::text[],
      ${rows.map((r) => r.status)}::jsonb[], ${rows.map((r) => r.ts)}::timestamptz[])`.execute(tx)
}

// Column names come from src/ecoflow/mapping.ts's fixed list, never from input.
const ECOFLOW_COLUMN = /^[a-z0-9_]+$/

async function insertEcoflow(tx: Tx, rows: Of<'ecoflow'>[]): Promise<void> {
  for (const r of rows) {
    const cols = Object.keys(r.columns).filter((c) => ECOFLOW_COLUMN.test(c))
    const names = sql.join([
      sql.ref('device_sn'),
      sql.ref('ts'),
      sql.ref('model'),
      sql.ref('raw'),
      ...cols.map((c) => sql.ref(c)),
    ])
    const values = sql.join([
      sql`${r.deviceSn}`,
      sql`${r.ts}`,
      sql`${r.model}`,
      sql`${r.raw}::jsonb`,
      ...cols.map((c) => sql`${r.columns[c]}`),
    ])
    await sql`INSERT INTO ecoflow_measurements (${names}) VALUES (${values})`.execute(tx)
  }
}

async function upsertConfigs(tx: Tx, rows: Of<'config'>[]): Promise<void> {
  const last = new Map<string, Of<'config'>>()
  for (const r of rows) last.set(`${r.siteId}\u0000${r.deviceId}`, r)
  const list = [...last.values()]
  await sql`
    INSERT INTO edge_device_configs (site_id, device_id, config, updated_at)
    SELECT * FROM unnest(${list.map((r) => r.siteId)}::text[], ${list.map((r) => r.deviceId)}::text[],
      ${list.map((r) => r.config)}::jsonb[], ${list.map((r) => r.receivedAt)}::timestamptz[])
    ON CONFLICT (site_id, device_id) DO UPDATE SET config = EXCLUDED.config, updated_at = EXCLUDED.updated_at`.execute(
    tx,
  )
}

function insertRejectsSql(rows: Reject[]) {
  return sql`
    INSERT INTO ingest_rejects (received_at, topic, client_id, device_id, reason, payload, payload_bytes)
    SELECT * FROM unnest(${rows.map((r) => r.receivedAt)}::timestamptz[], ${rows.map((r) => r.topic)}::text[],
      ${rows.map((r) => r.clientId)}::text[], ${rows.map((r) => r.deviceId)}::text[], ${rows.map((r) => r.reason)}::text[],
      ${rows.map((r) => r.payload)}::bytea[], ${rows.map((r) => r.payloadBytes)}::int[])`
}
