import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { defer, testDatabase } from '../../scripts/test-helpers.js'
import { PREPARED, preparingPool } from './index.js'

/** One connection, so every statement of a test runs in the session whose prepared statements it reads. */
async function oneConnection(t: Parameters<typeof testDatabase>[0]) {
  const db = new Kysely<Record<string, never>>({
    dialect: new PostgresDialect({
      pool: preparingPool(new pg.Pool({ connectionString: await testDatabase(t), max: 1 })),
    }),
  })
  defer(t, () => db.destroy())
  const prepared = async () =>
    (
      await sql<{
        name: string
        statement: string
      }>`SELECT name, statement FROM pg_prepared_statements ORDER BY name`.execute(db)
    ).rows
  return { db, prepared }
}

describe('prepared statements (PREPARED)', () => {
  it('prepares a marked text once per connection and reuses it with new parameters; unmarked texts stay unnamed', async (t) => {
    const { db, prepared } = await oneConnection(t)
    const marked = (n: number) =>
      sql<{ v: number }>`${sql.raw(PREPARED)}SELECT ${n}::int + 1 AS v`.execute(db)
    assert.equal((await marked(1)).rows[0]?.v, 2)
    assert.equal((await marked(41)).rows[0]?.v, 42)
    assert.equal((await sql<{ v: number }>`SELECT ${5}::int AS v`.execute(db)).rows[0]?.v, 5)
    const rows = await prepared()
    assert.equal(rows.length, 1, JSON.stringify(rows))
    assert.equal(rows[0]?.name, 'paku_1')
    assert.equal(rows[0]?.statement, `${PREPARED}SELECT $1::int + 1 AS v`)
  })

  it('gives each distinct marked text its own name, and runs marked texts past the cap unprepared', async (t) => {
    const { db, prepared } = await oneConnection(t)
    for (let i = 0; i < 40; i++) {
      const r = await sql<{
        v: number
      }>`${sql.raw(PREPARED)}SELECT ${i}::int AS v, ${sql.raw(String(i))} AS k`.execute(db)
      assert.equal(r.rows[0]?.v, i)
    }
    const rows = await prepared()
    assert.equal(rows.length, 32)
    assert.equal(new Set(rows.map((r) => r.statement)).size, 32)
  })

  it('hands out the same wrapper for the same pg client, so Kysely keeps one connection object per client', async (t) => {
    const pool = preparingPool(new pg.Pool({ connectionString: await testDatabase(t), max: 1 }))
    defer(t, () => pool.end())
    const first = await pool.connect()
    first.release()
    const again = await pool.connect()
    again.release()
    assert.equal(again, first)
  })

  it('a marked statement that fails leaves the connection usable and the statement prepared', async (t) => {
    const { db, prepared } = await oneConnection(t)
    const divide = (n: number) =>
      sql<{ v: number }>`${sql.raw(PREPARED)}SELECT 10 / ${n}::int AS v`.execute(db)
    await assert.rejects(divide(0), /division by zero/)
    assert.equal((await divide(5)).rows[0]?.v, 2)
    // Inside a transaction too: PostgreSQL aborts it, its COMMIT rolls back, and the session goes on.
    const tx = db.transaction().execute(async (tx) => {
      await assert.rejects(
        sql`${sql.raw(PREPARED)}SELECT 10 / ${0}::int AS v`.execute(tx),
        /division by zero/,
      )
    })
    await assert.rejects(tx, /rolled back/)
    assert.equal((await divide(2)).rows[0]?.v, 5)
    assert.equal((await prepared()).length, 1)
  })
})
