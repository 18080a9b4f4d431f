import { sql, type Kysely } from 'kysely'
import type { Logger } from '../log/index.js'
import type { DB } from './schema.js'

/**
 * One-time rewrites of data an adopted database brings from the old stack, each recorded in
 * `adoption_steps` (sql/0018_adoption.sql) with how far it got, so it runs once and resumes where it
 * stopped. They run in batches, each its own short transaction: no table is locked for long.
 */

const BATCH = 10_000

/**
 * Columns paku writes that an adopted table may lack: added with a constant default (a change of the
 * catalogue only, instant whatever the table holds). Rows adopted without created_at get -infinity:
 * their insert time is unknown, and stamping them with NOW() would date every old row at the
 * migration; new rows then get their insert time.
 */
const COLUMNS: ReadonlyArray<{
  table: string
  column: string
  type: string
  insertTime?: boolean
}> = [
  { table: 'measurements', column: 'mac', type: 'TEXT' },
  {
    table: 'measurements',
    column: 'created_at',
    type: "TIMESTAMPTZ NOT NULL DEFAULT '-infinity'",
    insertTime: true,
  },
  { table: 'ecoflow_measurements', column: 'raw', type: 'JSONB' },
  { table: 'ecoflow_measurements', column: 'model', type: 'TEXT' },
  {
    table: 'ecoflow_measurements',
    column: 'created_at',
    type: "TIMESTAMPTZ NOT NULL DEFAULT '-infinity'",
    insertTime: true,
  },
]

/**
 * Adds the missing columns, each in a transaction of its own that waits at most half a second for the
 * table's lock (a writer's open transaction) and tries again: the table is locked for milliseconds, and
 * never queues every other writer behind a long wait.
 */
export async function addMissingColumns(db: Kysely<any>, log: Logger): Promise<string[]> {
  const added: string[] = []
  for (const c of COLUMNS) {
    const exists = await sql<{ ok: number }>`
      SELECT 1 AS ok FROM information_schema.columns WHERE table_schema = 'public' AND table_name = ${c.table} AND column_name = ${c.column}`.execute(
      db,
    )
    if (exists.rows.length > 0) continue
    for (let attempt = 1; ; attempt++) {
      try {
        await db.transaction().execute(async (tx) => {
          await sql`SET LOCAL lock_timeout = '500ms'`.execute(tx)
          await sql
            .raw(`ALTER TABLE ${c.table} ADD COLUMN IF NOT EXISTS ${c.column} ${c.type}`)
            .execute(tx)
          if (c.insertTime)
            await sql
              .raw(`ALTER TABLE ${c.table} ALTER COLUMN ${c.column} SET DEFAULT NOW()`)
              .execute(tx)
        })
        break
      } catch (err) {
        // 55P03 lock_not_available: a writer held the table; let it finish and try again.
        if ((err as { code?: string }).code !== '55P03' || attempt >= 60) throw err
        await new Promise((r) => setTimeout(r, 500))
      }
    }
    added.push(`${c.table}.${c.column}`)
  }
  if (added.length > 0)
    log.info('added the columns paku writes to adopted tables', { columns: added })
  return added
}

/**
 * The old EcoFlow poller stored the Delta Pro's `mppt.inWatts` as it comes, in tenths of a watt; paku
 * stores watts. Rows the old poller wrote (no `model`, which paku always sets) are divided by ten once,
 * so charts have no tenfold step at the cut-over. The rows are those present when the step first runs.
 */
export async function rescaleOldEcoflowSolar(
  db: Kysely<DB>,
  log: Logger,
): Promise<{ rows: number } | undefined> {
  const step = 'ecoflow pv_in_watts to watts'
  await sql`
    INSERT INTO adoption_steps (step, upto_id, done_id)
    SELECT ${step}, COALESCE((SELECT max(id) FROM ecoflow_measurements WHERE model IS NULL), 0), 0
    ON CONFLICT (step) DO NOTHING`.execute(db)
  const state = await db
    .selectFrom('adoption_steps')
    .select(['upto_id', 'done_id', 'done_at'])
    .where('step', '=', step)
    .executeTakeFirst()
  if (!state || state.done_at !== null) return undefined
  const upto = BigInt(state.upto_id)
  let done = BigInt(state.done_id)
  let rows = 0
  if (done < upto)
    log.info("rescaling the old EcoFlow poller's solar input (tenths of a watt) to watts", {
      upToId: String(upto),
      fromId: String(done),
    })
  while (done < upto) {
    const next = done + BigInt(BATCH) < upto ? done + BigInt(BATCH) : upto
    rows += await db.transaction().execute(async (tx) => {
      const r = await sql`
        UPDATE ecoflow_measurements SET pv_in_watts = round(pv_in_watts / 10.0)
        WHERE id > ${String(done)}::bigint AND id <= ${String(next)}::bigint AND model IS NULL AND pv_in_watts IS NOT NULL`.execute(
        tx,
      )
      await tx
        .updateTable('adoption_steps')
        .set({ done_id: String(next) })
        .where('step', '=', step)
        .execute()
      return Number(r.numAffectedRows ?? 0)
    })
    done = next
  }
  await db
    .updateTable('adoption_steps')
    .set({ done_at: sql<Date>`NOW()`, rows })
    .where('step', '=', step)
    .execute()
  if (upto > 0n) log.info("rescaled the old EcoFlow poller's solar input to watts", { rows })
  return { rows }
}

/**
 * The old OTA schema first made `version` unique on its own, and a hand migration that not every
 * installation ran replaced it with (version, device_model). Left in place, the same version for a second
 * model fails to upload. Dropped when found (a small table: locked for a moment).
 */
export async function dropVersionOnlyUnique(db: Kysely<any>, log: Logger): Promise<string[]> {
  const found = await sql<{ index: string; constraint: string | null }>`
    SELECT i.relname AS index, c.conname AS constraint
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'public'
    LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = t.oid
    WHERE t.relname = 'firmware_releases' AND x.indisunique AND NOT x.indisprimary AND x.indnatts = 1
      AND x.indkey[0] = (SELECT attnum FROM pg_attribute WHERE attrelid = t.oid AND attname = 'version')`.execute(
    db,
  )
  const dropped: string[] = []
  for (const r of found.rows) {
    if (r.constraint)
      await sql`ALTER TABLE firmware_releases DROP CONSTRAINT IF EXISTS ${sql.id(r.constraint)}`.execute(
        db,
      )
    else await sql`DROP INDEX IF EXISTS ${sql.id(r.index)}`.execute(db)
    dropped.push(r.constraint ?? r.index)
  }
  if (dropped.length > 0)
    log.info(
      'dropped the old unique version of firmware_releases (a version is unique per model)',
      { dropped },
    )
  return dropped
}
