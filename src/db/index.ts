import {
  Kysely,
  PostgresDialect,
  sql,
  type PostgresPool,
  type PostgresPoolClient,
  type Selectable,
} from 'kysely'
import pg from 'pg'
import type { Config } from '../config/index.js'
import { maskUrl } from '../config/index.js'
import type { Logger } from '../log/index.js'
import { addMissingColumns, dropVersionOnlyUnique, rescaleOldEcoflowSolar } from './adopt.js'
import { createEmbeddedPostgres } from './embedded.js'
import { grantGrafanaRole } from './grafana-role.js'
import { buildIndexes } from './indexes.js'
import { migrate, type SqlFile } from './migrate.js'
import type { DB } from './schema.js'

export type { DB } from './schema.js'

/**
 * The row type of a raw `sql` statement that returns a table's columns as they are, from the generated
 * schema: a column renamed or retyped in sql/ breaks the build where the statement reads it.
 */
export type Row<
  T extends keyof DB,
  C extends keyof Selectable<DB[T]> = keyof Selectable<DB[T]>,
> = Pick<Selectable<DB[T]>, C>
export { migrate, readSqlDir, type SqlFile } from './migrate.js'
export { buildIndexes, planIndexes, INDEXES, type IndexSpec } from './indexes.js'
export { createEmbeddedPostgres } from './embedded.js'
export { intArray, textArray } from './arrays.js'
export {
  ECOFLOW_INTEGER_COLUMNS,
  ECOFLOW_QUOTA_COLUMNS,
  ECOFLOW_READING_COLUMNS,
} from './ecoflow-columns.js'

// BIGINT and NUMERIC come back as strings by default; ids stay strings (they can exceed 2^53),
// but COUNT(*) and friends are cast in SQL where numbers are wanted.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => v)

/**
 * Leading a statement's text, makes it a prepared statement of each connection that runs it: parsed and
 * planned once per connection instead of at every execution. For the ingest batch, which runs hundreds
 * of times a second with the same text: ~9 % less PostgreSQL CPU per row in 276-row batches
 * (docs/performance.md, "The prepared batch statement"). Only for texts that repeat: each distinct one
 * stays prepared on every connection.
 */
export const PREPARED = '/* paku:prepared */ '
/** Distinct prepared texts at most; beyond that a marked statement runs unprepared, as any other. */
const MAX_PREPARED = 32

/**
 * A pg pool for Kysely that runs statements marked PREPARED as named statements (node-postgres parses
 * a name once per connection and reuses it after). Kysely itself always runs a statement unnamed.
 */
export function preparingPool(pool: pg.Pool): PostgresPool {
  const names = new Map<string, string>()
  const nameOf = (text: string): string | undefined => {
    let name = names.get(text)
    if (name === undefined && names.size < MAX_PREPARED)
      names.set(text, (name = `paku_${names.size + 1}`))
    return name
  }
  // One wrapper per pg client, made when it first connects: Kysely keeps its own connection object per
  // client it is given, so a new wrapper at every checkout would make it build a new one for every query.
  const wrappers = new WeakMap<pg.PoolClient, PostgresPoolClient>()
  const wrap = (client: pg.PoolClient): PostgresPoolClient => {
    const query = (q: unknown, values?: unknown[]): unknown => {
      const name = typeof q === 'string' && q.startsWith(PREPARED) ? nameOf(q) : undefined
      return name
        ? client.query({ name, text: q as string, values })
        : client.query(q as string, values)
    }
    return {
      query: query as PostgresPoolClient['query'],
      release: (destroy?: boolean) => client.release(destroy),
    }
  }
  return {
    async connect(): Promise<PostgresPoolClient> {
      const client = await pool.connect()
      let wrapper = wrappers.get(client)
      if (!wrapper) wrappers.set(client, (wrapper = wrap(client)))
      return wrapper
    },
    end: () => pool.end(),
  }
}

export type DatabaseOptions = {
  config: Config['database']
  dataDir: string
  log: Logger
  migrations: readonly SqlFile[]
  /** Skip migrations at start (the `migrate` command runs them itself). */
  migrateOnStart?: boolean
  /**
   * The indexes of the big tables (src/db/indexes.ts), built CONCURRENTLY after the migrations:
   * `background` (serve: paku serves meanwhile), `wait` (`paku migrate`), or `skip` (other commands).
   */
  indexes?: 'background' | 'wait' | 'skip'
}

/**
 * The database service: starts the embedded PostgreSQL when no URL is configured, connects a pool,
 * applies pending migrations, and exposes the Kysely instance. The pool opens no socket before start().
 */
export function createDatabase(opts: DatabaseOptions) {
  const embedded = opts.config.url
    ? undefined
    : createEmbeddedPostgres({
        dataDir: opts.dataDir,
        port: opts.config.embedded.port,
        log: opts.log,
      })
  let pool: pg.Pool | undefined
  let kysely: Kysely<DB> | undefined
  let applied: string[] = []
  /** When the database first answered in the last start() (performance.now()), for the ready figure. */
  let answeredAt: number | undefined
  /** The background index build, and how to stop it. */
  let indexTask: Promise<void> | undefined
  let indexAbort: AbortController | undefined
  let indexState:
    { state: 'building' | 'done' | 'failed'; built?: string[]; error?: string } | undefined

  const url = () => opts.config.url || (embedded ? embedded.url() : '')

  return {
    name: 'db',
    get db(): Kysely<DB> {
      if (!kysely) throw new Error('database not started')
      return kysely
    },
    get pool(): pg.Pool {
      if (!pool) throw new Error('database not started')
      return pool
    },
    /** The URL the pool connects to (with its password: for connections of paku's own, never for display). */
    connectionString(): string {
      return url()
    },
    /** performance.now() when the database first answered (SELECT 1) in the last start(). */
    get answeredAt(): number | undefined {
      return answeredAt
    },
    /** Migrations applied by the last start(). */
    get applied(): readonly string[] {
      return applied
    },
    /** Where we connect, with the password masked: for the banner and logs. */
    describe(): string {
      return embedded ? `embedded ${maskUrl(url())}` : maskUrl(url())
    },
    async start(): Promise<void> {
      if (embedded) await embedded.start()
      pool = new pg.Pool({
        connectionString: url(),
        max: opts.config.poolSize,
        connectionTimeoutMillis: 10_000,
        // Without this a server-side kill of an idle connection would be an unhandled 'error' event.
        application_name: 'paku',
      })
      pool.on('error', (err) => opts.log.warn('idle database connection failed', { err }))
      // pg also emits 'error' on a checked-out client whose connection drops (after failing its query);
      // with no listener that is an uncaught exception. The failed query already reports it.
      pool.on('connect', (client) =>
        client.on('error', (err) =>
          opts.log.debug('database connection lost', { err: err.message }),
        ),
      )
      kysely = new Kysely<DB>({ dialect: new PostgresDialect({ pool: preparingPool(pool) }) })
      try {
        await sql`SELECT 1`.execute(kysely)
        answeredAt = performance.now()
      } catch (err) {
        throw new Error(
          `database: connect ${maskUrl(url())}: ${(err as Error).message} — is PostgreSQL running? set PAKU_DATABASE_URL`,
          {
            cause: err,
          },
        )
      }
      if (opts.migrateOnStart !== false) {
        applied = (await migrate(kysely, opts.migrations)).applied
        for (const name of applied) opts.log.info('applied migration', { name })
        await addMissingColumns(kysely, opts.log)
        await dropVersionOnlyUnique(kysely, opts.log)
        await rescaleOldEcoflowSolar(kysely, opts.log)
        await grantGrafanaRole(kysely, opts.log)
      }
      const mode = opts.indexes ?? 'background'
      if (mode !== 'skip') {
        indexAbort = new AbortController()
        indexState = { state: 'building' }
        const k = kysely
        const run = buildIndexes({
          pool,
          db: kysely,
          log: opts.log,
          signal: indexAbort.signal,
        }).then(
          (r) => {
            indexState = { state: 'done', built: r.built }
          },
          (err: unknown) => {
            indexState = { state: 'failed', error: (err as Error).message }
            // Cancelled by stop(): the next start builds it again.
            if (!indexAbort?.signal.aborted)
              opts.log.error(
                'building indexes failed; queries stay slower until the next start builds them',
                { err: (err as Error).message },
              )
            if (mode === 'wait' && k) throw err
          },
        )
        if (mode === 'wait') await run
        else indexTask = run
      }
    },
    /** The background index build (tests, /health). */
    indexes: () => indexState,
    /** Cheap liveness probe for /health; never throws. */
    async health(): Promise<{ ok: boolean; error?: string; latencyMs?: number; indexes?: string }> {
      if (!kysely) return { ok: false, error: 'not started' }
      const t0 = performance.now()
      try {
        await sql`SELECT 1`.execute(kysely)
        return {
          ok: true,
          latencyMs: Math.round((performance.now() - t0) * 10) / 10,
          ...(indexState ? { indexes: indexState.state } : {}),
        }
      } catch (err) {
        return { ok: false, error: (err as Error).message }
      }
    },
    async stop(): Promise<void> {
      // A build in progress is cancelled (it leaves an invalid index, dropped and rebuilt next time).
      indexAbort?.abort()
      await indexTask?.catch(() => undefined)
      indexTask = undefined
      const k = kysely
      kysely = undefined
      pool = undefined
      try {
        await k?.destroy()
      } finally {
        await embedded?.stop()
      }
    },
  }
}

export type Database = ReturnType<typeof createDatabase>
