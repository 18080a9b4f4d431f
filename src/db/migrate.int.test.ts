import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import { defer, sqlClient, testDatabase, testLogger } from '../../scripts/test-helpers.js'
import { sqlDir } from '../assets.js'
import { addMissingColumns } from './adopt.js'
import { buildIndexes, INDEXES, migrate, readSqlDir } from './index.js'

async function kysely(t: Parameters<typeof testDatabase>[0], url: string) {
  const db = new Kysely<Record<string, never>>({
    dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 2 }) }),
  })
  defer(t, () => db.destroy())
  return db
}

const files = readSqlDir(sqlDir())

describe('SQL migrations', () => {
  it('applies every file of sql/ once, in name order', async (t) => {
    const url = await testDatabase(t)
    const db = await kysely(t, url)
    const first = await migrate(db, files)
    assert.deepEqual(
      first.applied,
      files.map((f) => f.name),
    )
    assert.deepEqual(first.applied, [...first.applied].sort())
    assert.deepEqual((await migrate(db, files)).applied, [])
    const c = await sqlClient(t, url)
    const tables = (
      await c.query(
        `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_name NOT LIKE 'kysely%' ORDER BY 1`,
      )
    ).rows.map((r) => r.table_name)
    assert.deepEqual(tables, [
      'admin_keys',
      'adoption_steps',
      'device_commands',
      'device_group_members',
      'device_groups',
      'device_pull_tokens',
      'device_update_status',
      'devices',
      'ecoflow_measurements',
      'edge_device_configs',
      'edge_device_status',
      'firmware_images',
      'firmware_releases',
      'ingest_dedup',
      'ingest_rejects',
      'ingest_spool_batches',
      'measurements',
      'mqtt_credentials',
      'mqtt_incoming',
      'mqtt_outgoing',
      'mqtt_retained',
      'mqtt_sensor_claims',
      'mqtt_sessions',
      'mqtt_subscriptions',
      'mqtt_wills',
      'ota_events',
      'rollout_configurations',
      'rollout_devices',
      'rollup_1h',
      'rollup_5m',
      'rollup_6h',
      'rollup_series',
      'rollup_state',
    ])
    // The big tables' indexes come after the migrations, concurrently.
    const indexes = async () =>
      (
        await c.query(
          `SELECT indexname FROM pg_indexes WHERE tablename = 'measurements' ORDER BY 1`,
        )
      ).rows.map((r) => r.indexname)
    assert.deepEqual(await indexes(), ['measurements_pkey'])
    const pool = new pg.Pool({ connectionString: url, max: 2 })
    defer(t, () => pool.end())
    const r = await buildIndexes({ pool, db, log: testLogger() })
    assert.deepEqual(
      r.built,
      INDEXES.map((i) => i.name),
    )
    assert.deepEqual(await indexes(), [
      'idx_measurements_created_brin',
      'idx_measurements_metrics',
      'idx_measurements_site_device_ts',
      'idx_measurements_site_system',
      'idx_measurements_system_ts',
      'idx_measurements_ts',
      'measurements_pkey',
    ])
    assert.deepEqual(
      (await buildIndexes({ pool, db, log: testLogger() })).built,
      [],
      'a second run builds nothing',
    )
  })

  it('adopts an existing paku-iot database whose measurements table lacks mac and created_at', async (t) => {
    const url = await testDatabase(t)
    const c = await sqlClient(t, url)
    // The shape the old one-off migration left on production (docs/compatibility.md, "Adopting an existing
    // database").
    await c.query(`CREATE TABLE measurements (id BIGSERIAL PRIMARY KEY, site_id TEXT NOT NULL, system TEXT NOT NULL, device_id TEXT NOT NULL,
      location TEXT, ts TIMESTAMPTZ NOT NULL DEFAULT NOW(), metrics JSONB NOT NULL)`)
    await c.query(
      `INSERT INTO measurements (site_id, system, device_id, metrics) VALUES ('paku', 'sensors', 'van_inside', '{"temperature_c": 20}')`,
    )
    const db = await kysely(t, url)
    await migrate(db, files)
    // The columns paku writes come after the migrations, each in a short transaction of its own.
    assert.deepEqual(
      await addMissingColumns(db, testLogger()),
      ['measurements.mac', 'measurements.created_at'],
      'ecoflow_measurements was made new, with all its columns',
    )
    const cols = (
      await c.query(
        `SELECT column_name FROM information_schema.columns WHERE table_name = 'measurements' ORDER BY ordinal_position`,
      )
    ).rows.map((r) => r.column_name)
    assert.deepEqual(cols, [
      'id',
      'site_id',
      'system',
      'device_id',
      'location',
      'ts',
      'metrics',
      'mac',
      'created_at',
    ])
    assert.deepEqual(await addMissingColumns(db, testLogger()), [], 'nothing the second time')
    const { rows } = await c.query(`SELECT device_id, metrics FROM measurements`)
    assert.deepEqual(rows, [{ device_id: 'van_inside', metrics: { temperature_c: 20 } }])
  })

  it('moves QoS 1 redelivery ids to slots (0014), keeping the newest id of each slot', async (t) => {
    const url = await testDatabase(t)
    const db = await kysely(t, url)
    await migrate(
      db,
      files.filter((f) => f.name < '0014'),
    )
    const c = await sqlClient(t, url)
    // 5 and 1029 share slot 5 of ESP-A; 1029 is the newer.
    await c.query(`INSERT INTO ingest_dedup (client_id, message_id, digest, seen_at) VALUES
      ('ESP-A', 5, 'a5', NOW() - interval '2 minutes'), ('ESP-A', 1029, 'a1029', NOW() - interval '1 minute'),
      ('ESP-A', 7, 'a7', NOW() - interval '3 minutes'), ('ESP-B', 5, 'b5', NOW())`)
    assert.deepEqual(
      (await migrate(db, files)).applied,
      files.filter((f) => f.name >= '0014').map((f) => f.name),
    )
    const { rows } = await c.query(
      `SELECT client_id, slot, message_id, digest FROM ingest_dedup ORDER BY client_id, slot`,
    )
    assert.deepEqual(rows, [
      { client_id: 'ESP-A', slot: 5, message_id: 1029, digest: 'a1029' },
      { client_id: 'ESP-A', slot: 7, message_id: 7, digest: 'a7' },
      { client_id: 'ESP-B', slot: 5, message_id: 5, digest: 'b5' },
    ])
    // Half-empty pages: the update of a slot can stay on its page (HOT), the point of the change.
    const { rows: opts } = await c.query(
      `SELECT reloptions FROM pg_class WHERE relname = 'ingest_dedup'`,
    )
    assert.deepEqual(opts, [{ reloptions: ['fillfactor=50'] }])
  })

  it('names the failing file and applies nothing of that run', async (t) => {
    const url = await testDatabase(t)
    const db = await kysely(t, url)
    const broken = [
      { name: '0001_ok.sql', sql: 'CREATE TABLE first_table (id int);' },
      { name: '0002_broken.sql', sql: 'CREATE TABLE second_table (id int);\nCREATE TABLEX oops;' },
    ]
    await assert.rejects(
      migrate(db, broken),
      /^Error: apply migration 0002_broken\.sql: syntax error at or near "TABLEX"/,
    )
    const c = await sqlClient(t, url)
    const { rows } = await c.query(
      `SELECT to_regclass('first_table') AS a, to_regclass('second_table') AS b`,
    )
    assert.deepEqual(rows, [{ a: null, b: null }])
  })

  it('applies each file once when two processes migrate at the same time', async (t) => {
    const url = await testDatabase(t)
    const [a, b] = await Promise.all([
      migrate(await kysely(t, url), files),
      migrate(await kysely(t, url), files),
    ])
    assert.equal(a.applied.length + b.applied.length, files.length)
  })

  it('reads only NNNN_name.sql files', () => {
    assert.ok(files.length >= 4)
    for (const f of files) assert.match(f.name, /^\d{4}_[a-z0-9_]+\.sql$/)
  })
})
