import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import * as v from 'valibot'
import {
  defer,
  eventually,
  migratedDatabase,
  sqlClient,
  testDatabase,
  testLogger,
} from '../../scripts/test-helpers.js'
import { sqlDir } from '../assets.js'
import { ConfigSchema } from '../config/index.js'
import { migrate, readSqlDir, type DB } from '../db/index.js'
import { createRollup, ranges } from './index.js'

async function setup(
  t: Parameters<typeof testDatabase>[0],
  retention: Record<string, number> = {},
  more: { intervalSeconds?: number; busy?: () => boolean } = {},
) {
  const { url, db } = await migratedDatabase(t, 3)
  const config = v.parse(ConfigSchema, {
    retention,
    rollup: { intervalSeconds: more.intervalSeconds },
  })
  const rollup = createRollup({
    config: config.rollup,
    retention: config.retention,
    db: () => db,
    log: testLogger(),
    busy: more.busy,
  })
  return { db, rollup, url, sql: await sqlClient(t, url) }
}

const H = (iso: string) => new Date(iso)

describe('rollups', () => {
  it('rolls numbers up per device, metric and 5-minute / hourly bucket, keeps the last string, and recomputes buckets late rows land in', async (t) => {
    const { rollup, sql } = await setup(t)
    const rows: Array<[string, string, string]> = [
      ['2026-11-01T10:00:10Z', 'ruuvi_a', '{"temperature_c": 20, "humidity_percent": 40}'],
      ['2026-11-01T10:02:00Z', 'ruuvi_a', '{"temperature_c": 22, "humidity_percent": 42}'],
      ['2026-11-01T10:07:00Z', 'ruuvi_a', '{"temperature_c": 30, "label": "x"}'],
      ['2026-11-01T10:03:00Z', 'ruuvi_b', '{"temperature_c": -5}'],
      ['2026-11-01T11:00:00Z', 'heater', '{"heater_state": "Running", "coolant_temp_c": 70}'],
      [
        '2026-11-01T11:01:00Z',
        'heater',
        '{"heater_state": "Cooling", "coolant_temp_c": 60, "flag": true}',
      ],
    ]
    for (const [ts, dev, m] of rows)
      await sql.query(
        `INSERT INTO measurements (site_id, system, device_id, location, ts, metrics) VALUES ('paku', 'sensors', $1, 'cabin', $2, $3)`,
        [dev, ts, m],
      )
    // The bucket's newest row has one metric only, from elsewhere: each metric keeps its own last value and location.
    await sql.query(
      `INSERT INTO measurements (site_id, system, device_id, location, ts, metrics) VALUES ('paku', 'sensors', 'ruuvi_a', 'van', '2026-11-01T10:04:00Z', '{"humidity_percent": 44}')`,
    )
    await sql.query(
      `INSERT INTO ecoflow_measurements (device_sn, ts, soc_percent, bms_temp, raw, model) VALUES ('SN1', '2026-11-01T10:01:00Z', 80, 25.5, '{}', 'delta_pro'), ('SN1', '2026-11-01T10:02:00Z', 78, 26.5, '{}', 'delta_pro')`,
    )
    await sql.query(
      `INSERT INTO edge_device_status (site_id, device_id, ts, status) VALUES ('paku', 'ESP32-1', '2026-11-01T10:00:00Z', '{"signal_strength_dbm": -60, "uptime_seconds": 100, "firmware_version": "1.4.2"}'), ('paku', 'ESP32-1', '2026-11-01T10:04:00Z', '{"signal_strength_dbm": -70, "uptime_seconds": 340}')`,
    )

    const first = await rollup.pass()
    assert.ok(first.buckets >= 5, JSON.stringify(first))
    const read = async (
      table: string,
      source: string,
      device: string,
      metric: string,
      bucket: string,
    ) =>
      (
        await sql.query(
          `SELECT n, sum / NULLIF(n, 0) AS avg, min, max, last, location FROM ${table} WHERE source = $1 AND device_id = $2 AND metric = $3 AND bucket = $4`,
          [source, device, metric, bucket],
        )
      ).rows[0]
    const five = (source: string, device: string, metric: string, bucket: string) =>
      read('rollup_5m', source, device, metric, bucket)
    assert.deepEqual(
      await five('measurements', 'ruuvi_a', 'temperature_c', '2026-11-01T10:00:00Z'),
      { n: 2, avg: 21, min: 20, max: 22, last: '22', location: 'cabin' },
    )
    assert.deepEqual(
      await five('measurements', 'ruuvi_a', 'humidity_percent', '2026-11-01T10:00:00Z'),
      { n: 3, avg: 42, min: 40, max: 44, last: '44', location: 'van' },
    )
    assert.deepEqual(
      await five('measurements', 'ruuvi_a', 'temperature_c', '2026-11-01T10:05:00Z'),
      { n: 1, avg: 30, min: 30, max: 30, last: '30', location: 'cabin' },
    )
    assert.deepEqual(await five('measurements', 'heater', 'heater_state', '2026-11-01T11:00:00Z'), {
      n: 0,
      avg: null,
      min: null,
      max: null,
      last: 'Cooling',
      location: 'cabin',
    })
    // EcoFlow and status (sampled every 30 s to 5 min) get hourly buckets only, straight from their rows.
    assert.deepEqual(
      await read('rollup_1h', 'ecoflow', 'SN1', 'soc_percent', '2026-11-01T10:00:00Z'),
      { n: 2, avg: 79, min: 78, max: 80, last: '78', location: null },
    )
    assert.deepEqual(
      await read('rollup_1h', 'ecoflow', 'SN1', 'bms_temp', '2026-11-01T10:00:00Z'),
      { n: 2, avg: 26, min: 25.5, max: 26.5, last: '26.5', location: null },
    )
    assert.deepEqual(
      await read('rollup_1h', 'status', 'ESP32-1', 'signal_strength_dbm', '2026-11-01T10:00:00Z'),
      { n: 2, avg: -65, min: -70, max: -60, last: '-70', location: null },
    )
    assert.equal(
      (await sql.query(`SELECT count(*)::int AS n FROM rollup_5m WHERE source <> 'measurements'`))
        .rows[0].n,
      0,
    )
    assert.equal(
      (
        await sql.query(
          `SELECT count(*)::int AS n FROM rollup_1h WHERE source = 'status' AND metric = 'firmware_version'`,
        )
      ).rows[0].n,
      0,
      'only the status readings',
    )
    assert.equal(
      (
        await sql.query(
          `SELECT count(*)::int AS n FROM rollup_1h WHERE source = 'ecoflow' AND metric = 'watts_in_sum'`,
        )
      ).rows[0].n,
      0,
      'empty columns make no rows',
    )
    const hour = (
      await sql.query(
        `SELECT n, sum / n AS avg, min, max, last FROM rollup_1h WHERE device_id = 'ruuvi_a' AND metric = 'temperature_c' AND bucket = '2026-11-01T10:00:00Z'`,
      )
    ).rows[0]
    assert.deepEqual(hour, { n: 3, avg: 24, min: 20, max: 30, last: '30' })

    const six = (
      await sql.query(
        `SELECT n, sum / n AS avg FROM rollup_6h WHERE device_id = 'ruuvi_a' AND metric = 'temperature_c' AND bucket = '2026-11-01T06:00:00Z'`,
      )
    ).rows[0]
    assert.deepEqual(six, { n: 3, avg: 24 })
    assert.equal(
      (
        await sql.query(
          `SELECT n FROM rollup_6h WHERE source = 'status' AND metric = 'uptime_seconds' AND bucket = '2026-11-01T06:00:00Z'`,
        )
      ).rows[0]?.n,
      2,
    )
    const series = (
      await sql.query(`SELECT source, site_id, system, device_id FROM rollup_series ORDER BY 1, 4`)
    ).rows.map((r) => Object.values(r).join('/'))
    assert.deepEqual(series, [
      'ecoflow//ecoflow/SN1',
      'measurements/paku/sensors/heater',
      'measurements/paku/sensors/ruuvi_a',
      'measurements/paku/sensors/ruuvi_b',
      'status/paku/edge/ESP32-1',
    ])

    // A late row (a replayed spool) for an old bucket: that bucket and its hour are recomputed.
    await sql.query(
      `INSERT INTO measurements (site_id, system, device_id, location, ts, metrics) VALUES ('paku', 'sensors', 'ruuvi_a', 'cabin', '2026-11-01T10:01:00Z', '{"temperature_c": 27}')`,
    )
    await rollup.pass()
    assert.deepEqual(
      await five('measurements', 'ruuvi_a', 'temperature_c', '2026-11-01T10:00:00Z'),
      { n: 3, avg: 23, min: 20, max: 27, last: '22', location: 'cabin' },
    )
    assert.equal(
      (
        await sql.query(
          `SELECT n FROM rollup_1h WHERE device_id = 'ruuvi_a' AND metric = 'temperature_c' AND bucket = '2026-11-01T10:00:00Z'`,
        )
      ).rows[0].n,
      4,
    )
  })

  it('adds each row once: a row committed after a pass is in the next one, rows already counted are not read again', async (t) => {
    const { rollup, sql, url } = await setup(t)
    const insert = (db: pg.Client, ts: string, m: string) =>
      db.query(
        `INSERT INTO measurements (site_id, system, device_id, location, ts, metrics) VALUES ('paku', 'sensors', 'ruuvi_x', 'cabin', $1, $2)`,
        [ts, m],
      )
    const bucket = async () =>
      (
        await sql.query(
          `SELECT n, sum, min, max, last, last_at FROM rollup_5m WHERE device_id = 'ruuvi_x' AND metric = 't' AND bucket = '2026-11-02T10:00:00Z'`,
        )
      ).rows[0]
    await insert(sql, '2026-11-02T10:00:30Z', '{"t": 1}')
    await rollup.pass()
    // A transaction writes a row before the next pass and commits after it.
    const other = await sqlClient(t, url)
    const otherPid = (await other.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number
    await other.query('BEGIN')
    await insert(other, '2026-11-02T10:01:00Z', '{"t": 2}')
    await insert(sql, '2026-11-02T10:02:00Z', '{"t": 3}')
    await rollup.pass()
    // The committed row waits too: its transaction is newer than the open one, and a pass counts the
    // rows of the transactions older than the oldest one running, so that none is counted twice.
    assert.deepEqual(await bucket(), {
      n: 1,
      sum: 1,
      min: 1,
      max: 1,
      last: '1',
      last_at: new Date('2026-11-02T10:00:30Z'),
    })
    // The watermark (where the API's raw part begins, and the next scan) stays at the open transaction's start.
    const held = await sql.query(
      `SELECT (SELECT watermark FROM rollup_state WHERE source = 'measurements') <= xact_start AS held FROM pg_stat_activity WHERE pid = $1`,
      [otherPid],
    )
    assert.deepEqual(held.rows, [{ held: true }])
    await other.query('COMMIT')
    // The counted row is gone from the raw table: a pass that recomputed the bucket would lose it.
    await sql.query(`DELETE FROM measurements WHERE metrics->>'t' = '1'`)
    await rollup.pass()
    assert.deepEqual(
      await bucket(),
      { n: 3, sum: 6, min: 1, max: 3, last: '3', last_at: new Date('2026-11-02T10:02:00Z') },
      'the older row merged in keeps the newest value last',
    )
    const idle = await rollup.pass()
    assert.deepEqual(
      idle.sources.measurements?.buckets,
      0,
      'a pass with nothing new touches no bucket',
    )
    assert.equal((await bucket())?.n, 3, 'nothing counted twice')
    const hour = (
      await sql.query(
        `SELECT n, sum, last FROM rollup_1h WHERE device_id = 'ruuvi_x' AND metric = 't'`,
      )
    ).rows
    assert.deepEqual(hour, [{ n: 3, sum: 6, last: '3' }])
    assert.deepEqual(
      (await sql.query(`SELECT n FROM rollup_6h WHERE device_id = 'ruuvi_x' AND metric = 't'`))
        .rows,
      [{ n: 3 }],
    )

    // A string metric merged into a bucket of numbers and the other way round: sums stay those of the numbers.
    await insert(sql, '2026-11-02T10:03:00Z', '{"t": "off", "s": "a"}')
    await insert(sql, '2026-11-02T10:03:30Z', '{"s": 5}')
    await rollup.pass()
    assert.deepEqual(await bucket(), {
      n: 3,
      sum: 6,
      min: 1,
      max: 3,
      last: 'off',
      last_at: new Date('2026-11-02T10:03:00Z'),
    })
    const s = (
      await sql.query(
        `SELECT n, sum, last FROM rollup_5m WHERE device_id = 'ruuvi_x' AND metric = 's'`,
      )
    ).rows
    assert.deepEqual(s, [{ n: 1, sum: 5, last: '5' }])

    // EcoFlow merges into its hourly buckets the same way.
    await sql.query(
      `INSERT INTO ecoflow_measurements (device_sn, ts, soc_percent, raw, model) VALUES ('SN9', '2026-11-02T10:10:00Z', 80, '{}', 'delta_pro')`,
    )
    await rollup.pass()
    await sql.query(
      `INSERT INTO ecoflow_measurements (device_sn, ts, soc_percent, raw, model) VALUES ('SN9', '2026-11-02T10:05:00Z', 90, '{}', 'delta_pro')`,
    )
    await rollup.pass()
    const soc = (
      await sql.query(
        `SELECT n, sum, min, max, last FROM rollup_1h WHERE source = 'ecoflow' AND device_id = 'SN9' AND metric = 'soc_percent'`,
      )
    ).rows
    assert.deepEqual(soc, [{ n: 2, sum: 170, min: 80, max: 90, last: '80' }])
  })

  it('after the upgrade to merging, the first pass recomputes the buckets written since the watermark, then merges', async (t) => {
    const url = await testDatabase(t)
    const db = new Kysely<DB>({
      dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 3 }) }),
    })
    defer(t, () => db.destroy())
    const files = readSqlDir(sqlDir())
    await migrate(
      db,
      files.filter((f) => f.name < '0015'),
    )
    const sql = await sqlClient(t, url)
    const insert = (ts: string, t: number) =>
      sql.query(
        `INSERT INTO measurements (site_id, system, device_id, ts, metrics) VALUES ('paku', 'sensors', 'ruuvi_u', $1, $2)`,
        [ts, JSON.stringify({ t })],
      )
    // What the recomputing code left: the bucket of one row and a watermark after it.
    await insert('2026-11-03T10:00:30Z', 1)
    await sql.query(`INSERT INTO rollup_5m (source, site_id, system, device_id, metric, bucket, n, sum, min, max, last)
      VALUES ('measurements', 'paku', 'sensors', 'ruuvi_u', 't', '2026-11-03T10:00:00Z', 1, 1, 1, 1, '1')`)
    await sql.query(`INSERT INTO rollup_state (source, watermark) VALUES ('measurements', NOW())`)
    await migrate(db, files)
    const config = v.parse(ConfigSchema, {})
    const rollup = createRollup({
      config: config.rollup,
      retention: config.retention,
      db: () => db,
      log: testLogger(),
    })
    await insert('2026-11-03T10:01:00Z', 2)
    await rollup.pass()
    const read = async () =>
      (
        await sql.query(
          `SELECT n, sum, last FROM rollup_5m WHERE device_id = 'ruuvi_u' AND metric = 't'`,
        )
      ).rows
    assert.deepEqual(
      await read(),
      [{ n: 2, sum: 3, last: '2' }],
      'recomputed from its rows, not the new row added to the old figure twice',
    )
    assert.notEqual(
      (await sql.query(`SELECT counted_below FROM rollup_state WHERE source = 'measurements'`))
        .rows[0].counted_below,
      null,
    )
    await insert('2026-11-03T10:02:00Z', 4)
    await rollup.pass()
    assert.deepEqual(await read(), [{ n: 3, sum: 7, last: '4' }])
  })

  it('retention deletes old raw rows in slices and keeps the rollups', async (t) => {
    const { rollup, sql } = await setup(t, { measurementsDays: 30, statusDays: 30 })
    await sql.query(`INSERT INTO measurements (site_id, system, device_id, ts, metrics)
      SELECT 'paku', 'sensors', 'old', NOW() - INTERVAL '40 days' + g * INTERVAL '1 second', '{"t": 1}' FROM generate_series(1, 25000) g`)
    await sql.query(
      `INSERT INTO measurements (site_id, system, device_id, ts, metrics) VALUES ('paku', 'sensors', 'new', NOW(), '{"t": 2}')`,
    )
    await sql.query(
      `INSERT INTO edge_device_status (site_id, device_id, ts, status) VALUES ('paku', 'old', NOW() - INTERVAL '31 days', '{}')`,
    )
    await rollup.pass()
    const deleted = await rollup.applyRetention()
    assert.deepEqual(deleted, { measurements: 25000, edge_device_status: 1 })
    assert.deepEqual((await sql.query(`SELECT device_id FROM measurements`)).rows, [
      { device_id: 'new' },
    ])
    assert.equal(
      (await sql.query(`SELECT sum(n)::int AS n FROM rollup_5m WHERE device_id = 'old'`)).rows[0].n,
      25000,
      'history stays in the rollups',
    )
  })

  it('forgets QoS 1 redelivery ids after a week, with retention otherwise off', async (t) => {
    const { rollup, sql } = await setup(t)
    await sql.query(`INSERT INTO ingest_dedup (client_id, slot, message_id, digest, seen_at) VALUES
      ('gone', 1, 1, 'a', NOW() - INTERVAL '8 days'), ('gone', 2, 2, 'b', NOW() - INTERVAL '8 days'), ('here', 1, 1, 'c', NOW() - INTERVAL '6 days')`)
    assert.deepEqual(await rollup.applyRetention(), { ingest_dedup: 2 })
    assert.deepEqual((await sql.query(`SELECT client_id FROM ingest_dedup`)).rows, [
      { client_id: 'here' },
    ])
  })

  it('a pass that falls due while ingest is busy waits for the burst to end, and for at most one interval', async (t) => {
    let busy = true
    /** How often the rollup has asked whether ingest is busy: at start, then once a second while it waits. */
    let asked = 0
    const { rollup, sql } = await setup(t, {}, { intervalSeconds: 2, busy: () => (asked++, busy) })
    await sql.query(
      `INSERT INTO measurements (site_id, system, device_id, ts, metrics) VALUES ('paku', 'sensors', 'ruuvi_a', '2026-11-01T10:00:10Z', '{"t": 1}')`,
    )
    const rolledUp = async () =>
      (await sql.query(`SELECT n FROM rollup_5m WHERE device_id = 'ruuvi_a' AND metric = 't'`))
        .rows[0]?.n as number | undefined
    await rollup.start()
    defer(t, () => rollup.stop())
    // Busy for good: the first pass is held back while the rollup looks again a second later, and
    // runs one interval after it fell due.
    await eventually(async () => asked >= 2, { what: 'a second look at ingest' })
    assert.equal(rollup.health().lastPass, null)
    assert.equal((await sql.query('SELECT count(*)::int AS n FROM rollup_5m')).rows[0].n, 0)
    const first = await eventually(async () => rollup.health().lastPass, { timeoutMs: 8000 })
    assert.ok(first.waitedMs >= 2000 && first.waitedMs < 3500, `waited ${first.waitedMs} ms`)
    assert.equal(await rolledUp(), 1, 'the pass held back rolls the row up once it runs')
    // The next pass falls due while ingest is still busy, and the burst ends while it waits.
    const seen = asked
    await eventually(async () => asked > seen, { what: 'the next pass falling due' })
    assert.equal(rollup.health().lastPass?.at, first.at, 'no pass while ingest is busy')
    busy = false
    const next = await eventually(
      async () => (rollup.health().lastPass?.at !== first.at ? rollup.health().lastPass : null),
      { timeoutMs: 8000 },
    )
    assert.ok(
      next.waitedMs >= 700 && next.waitedMs < 2000,
      `waited ${next.waitedMs} ms: until the burst ended (looked at once a second), less than the interval`,
    )
  })

  it('merges consecutive buckets into ranges of at most a day', () => {
    const m = 300_000
    assert.deepEqual(ranges([0, m, 2 * m, 5 * m], m), [
      [0, 3 * m],
      [5 * m, 6 * m],
    ])
    const day = Array.from({ length: 300 }, (_, i) => i * m)
    const r = ranges(day, m)
    assert.equal(r.length, 2)
    assert.deepEqual(r[0], [0, 288 * m])
  })
})
