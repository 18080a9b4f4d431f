import { sql, type Kysely } from 'kysely'
import type { Config } from '../config/index.js'
import type { DB } from '../db/index.js'

/** Retention deletes in slices so no statement holds locks for long. */
const DELETE_SLICE = 10_000
/**
 * QoS 1/2 message ids kept for recognising redeliveries after a restart (ingest_dedup): a client
 * resends an unacknowledged message when it reconnects, within minutes; a week also covers a paku
 * that was down for days. Without it the table only grew, by every client id ever seen.
 */
const DEDUP_KEEP_DAYS = 7

/**
 * Deletes raw rows older than their configured retention, in slices; rollups outlive them. Old
 * redelivery ids go too, whatever the configuration. When `stopping` turns true, the table being
 * worked on keeps the rest for the next run. Returns the rows deleted per table.
 */
export async function applyRetention(
  db: Kysely<DB>,
  retention: Config['retention'],
  stopping: () => boolean,
): Promise<Record<string, number>> {
  const r = retention
  const rules: Array<[string, string, number]> = [
    ['measurements', 'ts', r.measurementsDays],
    ['edge_device_status', 'ts', r.statusDays],
    ['ecoflow_measurements', 'ts', r.ecoflowDays],
    ['ingest_rejects', 'received_at', r.rejectsDays],
    ['rollup_5m', 'bucket', r.rollup5mDays],
    ['ingest_dedup', 'seen_at', DEDUP_KEEP_DAYS],
  ]
  const deleted: Record<string, number> = {}
  for (const [table, column, days] of rules) {
    if (days <= 0) continue
    let total = 0
    for (;;) {
      const res = await sql`
        DELETE FROM ${sql.table(table)} WHERE ctid = ANY(ARRAY(
          SELECT ctid FROM ${sql.table(table)} WHERE ${sql.ref(column)} < NOW() - make_interval(days => ${days}) LIMIT ${DELETE_SLICE}))`.execute(
        db,
      )
      const n = Number(res.numAffectedRows ?? 0)
      total += n
      if (n < DELETE_SLICE || stopping()) break
    }
    if (total > 0) deleted[table] = total
  }
  return deleted
}
