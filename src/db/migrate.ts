import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Migrator, sql, type Kysely, type Migration, type MigrationProvider } from 'kysely'

/** A migration file's name (e.g. `0001_measurements.sql`) and its SQL text. */
export type SqlFile = { name: string; sql: string }

const FILE_NAME = /^\d{4}_[a-z0-9_]+\.sql$/

/** Reads `NNNN_name.sql` files from a directory, sorted by name (Kysely applies them in that order). */
export function readSqlDir(dir: string): SqlFile[] {
  return readdirSync(dir)
    .filter((f) => FILE_NAME.test(f))
    .sort()
    .map((name) => ({ name, sql: readFileSync(join(dir, name), 'utf8') }))
}

/** Kysely migration provider over plain SQL files: each file is one forward-only migration. */
export function sqlFileProvider(files: readonly SqlFile[]): MigrationProvider {
  return {
    async getMigrations() {
      const migrations: Record<string, Migration> = {}
      for (const file of files) {
        // The migration's name keeps the `.sql` suffix, so logs and kysely_migration show the file name.
        migrations[file.name] = {
          // A raw query without parameters goes through pg's simple protocol, which allows many statements.
          up: async (db) => {
            await sql.raw(file.sql).execute(db)
          },
        }
      }
      return migrations
    },
  }
}

export type MigrateResult = { applied: string[] }

/**
 * Applies every pending migration in one transaction under Kysely's migration lock, so two paku
 * processes starting together cannot both apply a file. Throws `apply migration NAME: …` on failure.
 */
export async function migrate(db: Kysely<any>, files: readonly SqlFile[]): Promise<MigrateResult> {
  const migrator = new Migrator({ db, provider: sqlFileProvider(files) })
  const { error, results = [] } = await migrator.migrateToLatest()
  if (error) {
    const failed = results.find((r) => r.status === 'Error')
    const message = (error as Error).message ?? String(error)
    throw new Error(`apply migration ${failed?.migrationName ?? '(unknown)'}: ${message}`, {
      cause: error,
    })
  }
  return { applied: results.filter((r) => r.status === 'Success').map((r) => r.migrationName) }
}
