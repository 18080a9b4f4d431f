import { sql, type Kysely } from 'kysely'
import type pg from 'pg'
import type { Logger } from '../log/index.js'

/**
 * The indexes of the tables an adopted database may hold millions of rows in. They are not built by
 * the SQL migrations, whose one transaction would hold the table's lock (and block every write) for
 * the whole build, but here, after them: CREATE INDEX CONCURRENTLY, one at a time, with progress in the
 * log. An index the database already has under another name (the old stack's `idx_measurements_new_*`)
 * is used as it is, not built a second time beside it.
 */
export type IndexSpec = {
  name: string
  table: string
  method: 'btree' | 'gin' | 'brin'
  /** Key columns; `desc` for a descending btree column. */
  columns: ReadonlyArray<{ column: string; desc?: boolean }>
}

const col = (column: string, desc = false) => ({ column, desc })

export const INDEXES: readonly IndexSpec[] = [
  {
    name: 'idx_measurements_ts',
    table: 'measurements',
    method: 'btree',
    columns: [col('ts', true)],
  },
  {
    name: 'idx_measurements_site_device_ts',
    table: 'measurements',
    method: 'btree',
    columns: [col('site_id'), col('device_id'), col('ts', true)],
  },
  {
    name: 'idx_measurements_system_ts',
    table: 'measurements',
    method: 'btree',
    columns: [col('system'), col('ts', true)],
  },
  {
    name: 'idx_measurements_site_system',
    table: 'measurements',
    method: 'btree',
    columns: [col('site_id'), col('system')],
  },
  {
    name: 'idx_measurements_metrics',
    table: 'measurements',
    method: 'gin',
    columns: [col('metrics')],
  },
  {
    name: 'idx_measurements_created_brin',
    table: 'measurements',
    method: 'brin',
    columns: [col('created_at')],
  },
  {
    name: 'idx_ecoflow_measurements_ts',
    table: 'ecoflow_measurements',
    method: 'btree',
    columns: [col('ts')],
  },
  {
    name: 'idx_ecoflow_measurements_device_sn',
    table: 'ecoflow_measurements',
    method: 'btree',
    columns: [col('device_sn')],
  },
  {
    name: 'idx_ecoflow_measurements_device_ts',
    table: 'ecoflow_measurements',
    method: 'btree',
    columns: [col('device_sn'), col('ts', true)],
  },
  {
    name: 'idx_ecoflow_measurements_created_brin',
    table: 'ecoflow_measurements',
    method: 'brin',
    columns: [col('created_at')],
  },
  {
    name: 'idx_edge_status_site_device_ts',
    table: 'edge_device_status',
    method: 'btree',
    columns: [col('site_id'), col('device_id'), col('ts', true)],
  },
  {
    name: 'idx_edge_status_ts',
    table: 'edge_device_status',
    method: 'btree',
    columns: [col('ts', true)],
  },
  {
    name: 'idx_edge_status_status',
    table: 'edge_device_status',
    method: 'gin',
    columns: [col('status')],
  },
  {
    name: 'idx_edge_status_created_brin',
    table: 'edge_device_status',
    method: 'brin',
    columns: [col('created_at')],
  },
]

/** An index a table has, as the catalogue describes it. */
export type ExistingIndex = {
  name: string
  method: string
  valid: boolean
  partial: boolean
  defaultOpclasses: boolean
  columns: Array<{ column: string; desc: boolean }>
}

/**
 * Whether an existing index serves every query `want` is for: same method, no predicate, the default
 * operator classes (a GIN jsonb_path_ops index cannot answer `metrics ? 'key'`), and for a btree the
 * wanted columns leading its own, in the same order, all in the same or all in the opposite direction
 * (a btree is read backwards as easily). GIN and BRIN need the same columns.
 */
export function serves(have: ExistingIndex, want: IndexSpec): boolean {
  if (!have.valid || have.partial || !have.defaultOpclasses || have.method !== want.method)
    return false
  if (want.method !== 'btree')
    return (
      have.columns.length === want.columns.length &&
      want.columns.every((c, i) => have.columns[i]?.column === c.column)
    )
  if (have.columns.length < want.columns.length) return false
  const lead = have.columns.slice(0, want.columns.length)
  if (!want.columns.every((c, i) => lead[i]?.column === c.column)) return false
  const same = want.columns.every((c, i) => Boolean(c.desc) === lead[i]?.desc)
  const opposite = want.columns.every((c, i) => Boolean(c.desc) !== lead[i]?.desc)
  return same || opposite
}

/** The indexes of a table in the public schema. */
export async function existingIndexes(db: Kysely<any>, table: string): Promise<ExistingIndex[]> {
  const r = await sql<{
    name: string
    method: string
    valid: boolean
    partial: boolean
    default_opclasses: boolean
    columns: string[]
    options: number[]
  }>`
    SELECT i.relname AS name, am.amname AS method, x.indisvalid AS valid, x.indpred IS NOT NULL AS partial,
      NOT EXISTS (SELECT 1 FROM unnest(x.indclass::oid[]) c JOIN pg_opclass o ON o.oid = c WHERE NOT o.opcdefault) AS default_opclasses,
      ARRAY(SELECT pg_get_indexdef(x.indexrelid, k, true) FROM generate_series(1, x.indnkeyatts) k ORDER BY k) AS columns,
      ARRAY(SELECT (x.indoption[k - 1] & 1)::int FROM generate_series(1, x.indnkeyatts) k ORDER BY k) AS options
    FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid JOIN pg_am am ON am.oid = i.relam
    WHERE t.relname = ${table} AND t.relnamespace = 'public'::regnamespace`.execute(db)
  return r.rows.map((x) => ({
    name: x.name,
    method: x.method,
    valid: x.valid,
    partial: x.partial,
    defaultOpclasses: x.default_opclasses,
    columns: x.columns.map((c, k) => ({
      column: c.replace(/^"(.*)"$/, '$1'),
      desc: x.options[k] === 1,
    })),
  }))
}

export type IndexPlan = {
  build: IndexSpec[]
  reuse: Array<{ want: string; have: string }>
  dropInvalid: string[]
}

/** What to do for each index: nothing (it exists), use another that serves it, or build it (dropping a failed build first). */
export async function planIndexes(
  db: Kysely<any>,
  specs: readonly IndexSpec[] = INDEXES,
): Promise<IndexPlan> {
  const plan: IndexPlan = { build: [], reuse: [], dropInvalid: [] }
  const byTable = new Map<string, ExistingIndex[]>()
  for (const spec of specs) {
    let have = byTable.get(spec.table)
    if (!have) byTable.set(spec.table, (have = await existingIndexes(db, spec.table)))
    const own = have.find((h) => h.name === spec.name)
    if (own?.valid) continue
    // An interrupted concurrent build leaves an invalid index behind that writes still maintain.
    if (own) plan.dropInvalid.push(own.name)
    const other = have.find((h) => h.name !== spec.name && serves(h, spec))
    if (other) plan.reuse.push({ want: spec.name, have: other.name })
    else plan.build.push(spec)
  }
  return plan
}

/** The statement that builds an index without blocking writes. */
export function createStatement(spec: IndexSpec): string {
  const q = (id: string) => `"${id.replaceAll('"', '""')}"`
  const cols = spec.columns.map((c) => `${q(c.column)}${c.desc ? ' DESC' : ''}`).join(', ')
  return `CREATE INDEX CONCURRENTLY IF NOT EXISTS ${q(spec.name)} ON ${q(spec.table)} USING ${spec.method} (${cols})`
}

/**
 * Builds what the plan says, one index at a time, each CONCURRENTLY on a connection of its own (it cannot
 * run in a transaction), logging PostgreSQL's progress (pg_stat_progress_create_index) every
 * `progressMs`. Only one paku builds at a time (an advisory lock: several instances start together).
 * `signal` cancels the build in progress (the invalid index it leaves is dropped and rebuilt next time).
 */
export async function buildIndexes(o: {
  pool: pg.Pool
  db: Kysely<any>
  log: Logger
  specs?: readonly IndexSpec[]
  signal?: AbortSignal
  progressMs?: number
}): Promise<{ built: string[]; reused: Array<{ want: string; have: string }>; skipped: boolean }> {
  const client = await o.pool.connect()
  try {
    const locked = await client.query<{ ok: boolean }>(
      `SELECT pg_try_advisory_lock(hashtext('paku.indexes')) AS ok`,
    )
    if (!locked.rows[0]?.ok) {
      o.log.info('another paku is building indexes; not building them here')
      return { built: [], reused: [], skipped: true }
    }
    try {
      const plan = await planIndexes(o.db, o.specs)
      for (const r of plan.reuse)
        o.log.info('index not built: an existing one serves it', { index: r.want, uses: r.have })
      for (const name of plan.dropInvalid) {
        o.log.warn('dropping an index a build left invalid', { index: name })
        await client.query(`DROP INDEX CONCURRENTLY IF EXISTS "${name.replaceAll('"', '""')}"`)
      }
      const built: string[] = []
      for (const spec of plan.build) {
        if (o.signal?.aborted) break
        await buildOne(client, spec, o)
        built.push(spec.name)
      }
      return { built, reused: plan.reuse, skipped: false }
    } finally {
      await client.query(`SELECT pg_advisory_unlock(hashtext('paku.indexes'))`)
    }
  } finally {
    client.release()
  }
}

async function buildOne(
  client: pg.PoolClient,
  spec: IndexSpec,
  o: { pool: pg.Pool; log: Logger; signal?: AbortSignal; progressMs?: number },
): Promise<void> {
  const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid
  const t0 = performance.now()
  o.log.info('building index', { index: spec.name, table: spec.table })
  const cancel = () =>
    void o.pool.query('SELECT pg_cancel_backend($1)', [pid]).catch(() => undefined)
  o.signal?.addEventListener('abort', cancel, { once: true })
  const timer = setInterval(() => {
    o.pool
      .query<{
        phase: string
        blocks_done: string
        blocks_total: string
        tuples_done: string
        tuples_total: string
      }>(
        'SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total FROM pg_stat_progress_create_index WHERE pid = $1',
        [pid],
      )
      .then((r) => {
        const p = r.rows[0]
        if (!p) return
        const pct = (done: string, total: string) =>
          Number(total) > 0 ? Math.round((Number(done) * 1000) / Number(total)) / 10 : null
        o.log.info('building index', {
          index: spec.name,
          phase: p.phase,
          blocksPercent: pct(p.blocks_done, p.blocks_total),
          tuplesPercent: pct(p.tuples_done, p.tuples_total),
          seconds: Math.round((performance.now() - t0) / 1000),
        })
      })
      .catch(() => undefined)
  }, o.progressMs ?? 10_000)
  timer.unref()
  try {
    await client.query(createStatement(spec))
    o.log.info('index built', {
      index: spec.name,
      seconds: Math.round((performance.now() - t0) / 100) / 10,
    })
  } finally {
    clearInterval(timer)
    o.signal?.removeEventListener('abort', cancel)
  }
}
