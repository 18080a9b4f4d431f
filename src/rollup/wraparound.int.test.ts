import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import {
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import * as v from 'valibot'
import { freePort } from '../../scripts/local-process.js'
import { defer, sqlClient, testLogger } from '../../scripts/test-helpers.js'
import { sqlDir } from '../assets.js'
import { ConfigSchema } from '../config/index.js'
import { createEmbeddedPostgres, migrate, readSqlDir, type DB } from '../db/index.js'
import { createRollup } from './index.js'

/**
 * Transaction ids wrap around at 2^32, and the rollups decide which rows a pass counts by their xmin
 * (src/rollup/statements.ts). Reaching the wraparound takes billions of transactions, so this test moves a
 * fresh cluster's next transaction id there with pg_resetwal, which the npm binaries do not include:
 * it uses Debian's (package postgresql-15, which .ci/run installs when it is missing).
 */
const WRAP = 2n ** 32n
/** Transactions per page of pg_xact (8 kB, two bits per transaction) and per segment file (32 pages). */
const XACT_PER_SEGMENT = 32_768 * 32

function binariesWithResetwal(): string | undefined {
  const base = '/usr/lib/postgresql'
  const versions = existsSync(base)
    ? readdirSync(base)
        .filter((d) => /^\d+$/.test(d))
        .sort((a, b) => Number(b) - Number(a))
    : []
  return versions
    .map((d) => join(base, d, 'bin'))
    .find((b) => ['postgres', 'initdb', 'pg_resetwal'].every((f) => existsSync(join(b, f))))
}
const found = binariesWithResetwal()
// CI installs Debian's PostgreSQL (.ci/run); on a developer machine without it this test is skipped, loudly.
const skip =
  !found && process.env.CI !== 'true'
    ? 'no /usr/lib/postgresql/*/bin/pg_resetwal (apt-get install postgresql-15)'
    : false

/** As root the cluster belongs to `postgres` (src/db/embedded.ts); pg_resetwal must run as its owner. */
function owner(clusterDir: string): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined
  const st = statSync(clusterDir)
  return { uid: st.uid, gid: st.gid }
}

/**
 * Sets the stopped cluster's next transaction id (in its current epoch). The commit-status page of an
 * id PostgreSQL has never reached does not exist yet and PostgreSQL only creates one when it reaches
 * a page's first id, so the segment file is written here, all zeros (no transaction ended yet).
 */
function setNextXid(bin: string, clusterDir: string, xid: bigint): void {
  const as = owner(clusterDir)
  execFileSync(join(bin, 'pg_resetwal'), ['-x', String(xid), '-D', clusterDir], {
    stdio: 'pipe',
    ...as,
  })
  const xactDir = join(clusterDir, 'pg_xact')
  const nameLength = readdirSync(xactDir)[0]?.length ?? 4
  const segment = join(
    xactDir,
    (xid / BigInt(XACT_PER_SEGMENT)).toString(16).toUpperCase().padStart(nameLength, '0'),
  )
  if (!existsSync(segment)) {
    writeFileSync(segment, Buffer.alloc(XACT_PER_SEGMENT / 4))
    if (as) chownSync(segment, as.uid, as.gid)
  }
}

describe('rollups across transaction id wraparound', { skip }, () => {
  it('count rows older than 2^31 transactions in the first pass, and each row once while ids wrap past 2^32', async (t) => {
    assert.ok(
      found,
      'no /usr/lib/postgresql/*/bin with pg_resetwal: apt-get install postgresql-15 (.ci/run does)',
    )
    const bin = found
    const root = mkdtempSync(join(tmpdir(), 'paku-xid-'))
    defer(t, () => rmSync(root, { recursive: true, force: true }))
    const options = {
      dataDir: root,
      port: await freePort(),
      log: testLogger(),
      binDir: bin,
      settings: { fsync: 'off', autovacuum: 'off' },
    }
    const kysely = (url: string) => {
      const pool = new pg.Pool({ connectionString: url, max: 3 })
      // pool.end() resolves before its sockets close, so an idle client can still hear the server's
      // shutdown at teardown; a query's own error still fails its query.
      pool.on('error', () => undefined)
      return new Kysely<DB>({ dialect: new PostgresDialect({ pool }) })
    }
    // Clients of the first server, ended before it stops (sqlClient's end comes with the test's teardown).
    const client = async (url: string) => {
      const c = new pg.Client({ connectionString: url })
      await c.connect()
      return c
    }

    // An adopted database's history: rows written a year ago by transactions with small ids, frozen since.
    const first = createEmbeddedPostgres(options)
    await first.start()
    try {
      const db = kysely(first.url())
      await migrate(db, readSqlDir(sqlDir()))
      await db.destroy()
      const c = await client(first.url())
      for (const [ts, value] of [
        ['2025-11-01T10:00:10Z', 1],
        ['2025-11-01T10:01:00Z', 2],
        ['2025-11-01T10:02:00Z', 4],
      ] as const) {
        await c.query(
          `INSERT INTO measurements (site_id, system, device_id, location, ts, metrics, created_at) VALUES ('paku', 'sensors', 'old', 'cabin', $1, $2, $1)`,
          [ts, { t: value }],
        )
      }
      await c.end()
      // Frozen rows need no commit status, so the catalogs and these rows survive the jump below.
      for (const database of ['template1', 'postgres', 'paku']) {
        const admin = await client(first.url().replace(/\/paku$/, `/${database}`))
        await admin.query('VACUUM FREEZE')
        await admin.end()
      }
    } finally {
      await first.stop()
    }
    setNextXid(bin, join(root, 'postgres'), WRAP - 3000n)

    const server = createEmbeddedPostgres(options)
    await server.start()
    defer(t, () => server.stop())
    const db = kysely(server.url())
    defer(t, () => db.destroy())
    const sql = await sqlClient(t, server.url())
    const config = v.parse(ConfigSchema, {})
    const rollup = createRollup({
      config: config.rollup,
      retention: config.retention,
      db: () => db,
      log: testLogger(),
    })

    // The premise: about 2^32 transactions after those rows, age() reads them as from the future.
    const old = await sql.query(
      `SELECT bool_and(age(xmin) < 0) AS wrapped, count(*)::int AS n FROM measurements WHERE device_id = 'old'`,
    )
    assert.deepEqual(old.rows, [{ wrapped: true, n: 3 }])
    await rollup.pass()
    const bucket = async (device: string, at: string) =>
      (
        await sql.query(
          `SELECT n, sum, min, max, last FROM rollup_5m WHERE device_id = $1 AND metric = 't' AND bucket = $2`,
          [device, at],
        )
      ).rows[0]
    assert.deepEqual(
      await bucket('old', '2025-11-01T10:00:00Z'),
      { n: 3, sum: 7, min: 1, max: 4, last: '4' },
      'the first pass counts the old rows',
    )

    // New rows while the ids wrap past 2^32, with a transaction held open across the wrap and a pass.
    const insert = (c: pg.Client, ts: string, value: number) =>
      c.query(
        `INSERT INTO measurements (site_id, system, device_id, location, ts, metrics) VALUES ('paku', 'sensors', 'new', 'cabin', $1, $2) RETURNING pg_current_xact_id()::text::numeric AS xid`,
        [ts, { t: value }],
      )
    const xidOf = async (r: Promise<pg.QueryResult>) => BigInt((await r).rows[0].xid as string)
    assert.ok((await xidOf(insert(sql, '2026-11-02T10:00:10Z', 1))) < WRAP)
    await rollup.pass()
    const other = await sqlClient(t, server.url())
    await other.query('BEGIN')
    assert.ok(
      (await xidOf(insert(other, '2026-11-02T10:01:00Z', 2))) < WRAP,
      'the open transaction began before the wrap',
    )
    // Each iteration commits, so each takes a transaction id of its own.
    await sql.query(
      `DO $$ BEGIN FOR i IN 1..3100 LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$`,
    )
    assert.ok(
      (await xidOf(insert(sql, '2026-11-02T10:02:00Z', 3))) > WRAP,
      'this row was written after the wrap',
    )
    await rollup.pass()
    assert.deepEqual(
      await bucket('new', '2026-11-02T10:00:00Z'),
      { n: 1, sum: 1, min: 1, max: 1, last: '1' },
      'both wait for the open transaction',
    )
    await other.query('COMMIT')
    await rollup.pass()
    assert.deepEqual(await bucket('new', '2026-11-02T10:00:00Z'), {
      n: 3,
      sum: 6,
      min: 1,
      max: 3,
      last: '3',
    })
    const state = await sql.query(
      `SELECT counted_below::text::numeric > $1 AS past FROM rollup_state WHERE source = 'measurements'`,
      [WRAP.toString()],
    )
    assert.deepEqual(
      state.rows,
      [{ past: true }],
      'the horizon the next pass starts from is past the wrap',
    )
    await insert(sql, '2026-11-02T10:03:00Z', 4)
    await rollup.pass()
    const idle = await rollup.pass()
    assert.equal(idle.sources.measurements?.buckets, 0, 'nothing new, nothing touched')
    assert.deepEqual(
      await bucket('new', '2026-11-02T10:00:00Z'),
      { n: 4, sum: 10, min: 1, max: 4, last: '4' },
      'each row once',
    )
    assert.deepEqual(
      await bucket('old', '2025-11-01T10:00:00Z'),
      { n: 3, sum: 7, min: 1, max: 4, last: '4' },
      'old buckets untouched',
    )
  })
})
