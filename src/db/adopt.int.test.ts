/**
 * Adopting the old stack's database: its tables as its init scripts and hand migrations left them (the
 * `idx_measurements_new_*` indexes, no created_at, EcoFlow solar input in tenths of a watt), then paku's
 * start (migrations, one-time rewrites, concurrent index builds).
 */
import assert from 'node:assert/strict'
import { describe, it, type TestContext } from 'node:test'
import { sqlClient, testDatabase } from '../../scripts/test-helpers.js'
import { sqlDir } from '../assets.js'
import { createLogger } from '../log/index.js'
import { createDatabase, readSqlDir } from './index.js'
import { serves, type ExistingIndex, type IndexSpec } from './indexes.js'

/** The old database: init.sql's tables, the 2025-12 hand migration's measurements with its indexes, and rows. */
async function oldDatabase(t: TestContext) {
  const url = await testDatabase(t)
  const c = await sqlClient(t, url)
  await c.query(`CREATE TABLE measurements (id BIGSERIAL PRIMARY KEY, site_id TEXT NOT NULL, system TEXT NOT NULL, device_id TEXT NOT NULL,
      location TEXT, ts TIMESTAMPTZ NOT NULL DEFAULT NOW(), metrics JSONB NOT NULL)`)
  await c.query(
    `CREATE INDEX idx_measurements_new_site_system_device ON measurements (site_id, system, device_id)`,
  )
  await c.query(`CREATE INDEX idx_measurements_new_ts ON measurements (ts)`)
  await c.query(
    `CREATE INDEX idx_measurements_new_site_system_device_ts ON measurements (site_id, system, device_id, ts DESC)`,
  )
  await c.query(`CREATE INDEX idx_measurements_new_metrics ON measurements USING GIN (metrics)`)
  await c.query(`INSERT INTO measurements (site_id, system, device_id, ts, metrics)
    SELECT 'paku', 'sensors', 'ruuvi_cabin', TIMESTAMPTZ '2026-01-01' + i * interval '1 minute', jsonb_build_object('temperature_c', i) FROM generate_series(1, 500) i`)
  await c.query(`CREATE TABLE ecoflow_measurements (id BIGSERIAL PRIMARY KEY, device_sn TEXT NOT NULL, ts TIMESTAMPTZ NOT NULL DEFAULT NOW(),
      soc_percent INTEGER, pv_in_watts INTEGER, watts_in_sum INTEGER, bms_temp NUMERIC)`)
  await c.query(`CREATE INDEX idx_ecoflow_measurements_ts ON ecoflow_measurements (ts)`)
  await c.query(`INSERT INTO ecoflow_measurements (device_sn, ts, soc_percent, pv_in_watts, watts_in_sum)
    SELECT 'DCABZ8ZE1234567', TIMESTAMPTZ '2026-01-01' + i * interval '30 seconds', 80, 4120, 412 FROM generate_series(1, 25) i`)
  await c.query(
    `INSERT INTO ecoflow_measurements (device_sn, soc_percent, pv_in_watts) VALUES ('DCABZ8ZE1234567', 80, NULL)`,
  )
  return { url, c }
}

async function start(t: TestContext, url: string) {
  const lines: string[] = []
  const db = createDatabase({
    config: { url, poolSize: 4, embedded: { port: 0 } },
    dataDir: '.paku-test/data',
    log: createLogger({ level: 'info', format: 'json', write: (l) => lines.push(l) }),
    migrations: readSqlDir(sqlDir()),
    indexes: 'wait',
  })
  await db.start()
  t.after(() => db.stop())
  return { db, lines }
}

describe('adopting the old database', () => {
  it('uses the indexes it has instead of building a second one beside them, and builds the rest concurrently', async (t) => {
    const { url, c } = await oldDatabase(t)
    const { lines } = await start(t, url)
    const indexes = (
      await c.query(
        `SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'measurements' ORDER BY 1`,
      )
    ).rows.map((r) => r.indexname)
    assert.deepEqual(indexes, [
      'idx_measurements_created_brin',
      'idx_measurements_new_metrics',
      'idx_measurements_new_site_system_device',
      'idx_measurements_new_site_system_device_ts',
      'idx_measurements_new_ts',
      'idx_measurements_site_device_ts',
      'idx_measurements_system_ts',
      'measurements_pkey',
    ])
    const gins = (
      await c.query(
        `SELECT count(*)::int AS n FROM pg_indexes WHERE tablename = 'measurements' AND indexdef LIKE '%USING gin%'`,
      )
    ).rows[0].n
    assert.equal(gins, 1, 'one GIN on metrics, not two')
    const reused: Array<[string, string]> = [
      ['idx_measurements_metrics', 'idx_measurements_new_metrics'],
      ['idx_measurements_ts', 'idx_measurements_new_ts'],
      ['idx_measurements_site_system', 'idx_measurements_new_site_system_device'],
    ]
    for (const [want, have] of reused) {
      assert.ok(
        lines.some(
          (l) => l.includes('an existing one serves it') && l.includes(want) && l.includes(have),
        ),
        `${want} uses ${have}`,
      )
    }
    assert.ok(
      lines.some((l) => l.includes('index built') && l.includes('idx_measurements_site_device_ts')),
    )
    const invalid = (await c.query(`SELECT count(*)::int AS n FROM pg_index WHERE NOT indisvalid`))
      .rows[0].n
    assert.equal(invalid, 0)
  })

  it('keeps historical rows out of the migration time, and rescales the old poller’s solar input once', async (t) => {
    const { url, c } = await oldDatabase(t)
    const first = await start(t, url)
    const created = (
      await c.query(
        `SELECT count(*) FILTER (WHERE created_at = '-infinity')::int AS old, count(*)::int AS n FROM measurements`,
      )
    ).rows[0]
    assert.deepEqual(
      created,
      { old: 500, n: 500 },
      'created_at of adopted rows is -infinity, not the migration time',
    )
    await c.query(
      `INSERT INTO measurements (site_id, system, device_id, metrics) VALUES ('paku', 'sensors', 'ruuvi_cabin', '{"temperature_c": 1}')`,
    )
    const fresh = (
      await c.query(
        `SELECT created_at > NOW() - interval '1 minute' AS recent FROM measurements ORDER BY id DESC LIMIT 1`,
      )
    ).rows[0]
    assert.deepEqual(fresh, { recent: true }, 'new rows get their insert time')
    assert.equal(
      (
        await c.query(
          `SELECT count(*)::int AS n FROM ecoflow_measurements WHERE created_at = '-infinity'`,
        )
      ).rows[0].n,
      26,
    )

    const solar = async () =>
      (await c.query(`SELECT pv_in_watts FROM ecoflow_measurements ORDER BY id`)).rows.map(
        (r) => r.pv_in_watts,
      )
    assert.deepEqual(await solar(), [...Array(25).fill(412), null])
    assert.ok(
      first.lines.some(
        (l) => l.includes('rescaled the old EcoFlow poller') && l.includes('"rows":25'),
      ),
    )
    // A row paku writes (it sets model) is in watts already; a restart rescales nothing again.
    await c.query(
      `INSERT INTO ecoflow_measurements (device_sn, soc_percent, pv_in_watts, model) VALUES ('DCABZ8ZE1234567', 81, 415, 'delta_pro')`,
    )
    await first.db.stop()
    const second = await start(t, url)
    assert.deepEqual(await solar(), [...Array(25).fill(412), null, 415])
    assert.ok(!second.lines.some((l) => l.includes('rescal')), 'nothing to do the second time')
    const step = (await c.query(`SELECT rows, done_at IS NOT NULL AS done FROM adoption_steps`))
      .rows
    assert.deepEqual(step, [{ rows: '25', done: true }])
  })
})

describe('adopting an old OTA schema', () => {
  it('drops a unique version of its own (the first OTA schema), so one version can be uploaded for two models', async (t) => {
    const url = await testDatabase(t)
    const c = await sqlClient(t, url)
    // The first ota_schema.sql: version unique by itself; the hand migration that fixed it never ran here.
    await c.query(`CREATE TABLE firmware_releases (id BIGSERIAL PRIMARY KEY, version TEXT NOT NULL UNIQUE, device_model TEXT NOT NULL, min_version TEXT,
      file_path TEXT NOT NULL, file_size BIGINT NOT NULL, checksum_sha256 TEXT NOT NULL, changelog TEXT, release_notes TEXT, is_signed BOOLEAN DEFAULT false,
      created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(), created_by TEXT, metadata JSONB)`)
    await c.query(
      `CREATE UNIQUE INDEX firmware_releases_model_only ON firmware_releases (device_model) WHERE false`,
    )
    const insert = (model: string) =>
      c.query(
        `INSERT INTO firmware_releases (version, device_model, file_path, file_size, checksum_sha256) VALUES ('1.4.2', $1, $1 || '_1.4.2.bin', 1, 'aa')`,
        [model],
      )
    await insert('lilygo-t-display-s3')
    await assert.rejects(
      insert('esp32-heater'),
      /firmware_releases_version_key/,
      'the old schema refuses it (the control)',
    )
    const { lines } = await start(t, url)
    await insert('esp32-heater')
    const uniques = (
      await c.query(
        `SELECT indexname FROM pg_indexes WHERE tablename = 'firmware_releases' AND indexdef LIKE 'CREATE UNIQUE%' ORDER BY 1`,
      )
    ).rows.map((r) => r.indexname)
    assert.deepEqual(
      uniques,
      [
        'firmware_releases_model_only',
        'firmware_releases_pkey',
        'firmware_releases_version_model_key',
      ],
      'other unique indexes stay',
    )
    assert.ok(
      lines.some(
        (l) =>
          l.includes('dropped the old unique version') &&
          l.includes('firmware_releases_version_key'),
      ),
    )
  })
})

describe('which existing index serves a wanted one', () => {
  const want = (
    columns: IndexSpec['columns'],
    method: IndexSpec['method'] = 'btree',
  ): IndexSpec => ({ name: 'w', table: 't', method, columns })
  const have = (
    columns: ExistingIndex['columns'],
    o: Partial<ExistingIndex> = {},
  ): ExistingIndex => ({
    name: 'h',
    method: 'btree',
    valid: true,
    partial: false,
    defaultOpclasses: true,
    columns,
    ...o,
  })
  const cases: Array<[string, ExistingIndex, IndexSpec, boolean]> = [
    [
      'the same columns',
      have([{ column: 'ts', desc: true }]),
      want([{ column: 'ts', desc: true }]),
      true,
    ],
    [
      'a btree read backwards',
      have([{ column: 'ts', desc: false }]),
      want([{ column: 'ts', desc: true }]),
      true,
    ],
    [
      'leading columns',
      have([
        { column: 'site_id', desc: false },
        { column: 'system', desc: false },
        { column: 'device_id', desc: false },
      ]),
      want([{ column: 'site_id' }, { column: 'system' }]),
      true,
    ],
    [
      'mixed directions turned around',
      have([
        { column: 'a', desc: true },
        { column: 'ts', desc: false },
      ]),
      want([{ column: 'a' }, { column: 'ts', desc: true }]),
      true,
    ],
    [
      'mixed directions that do not match',
      have([
        { column: 'a', desc: false },
        { column: 'ts', desc: false },
      ]),
      want([{ column: 'a' }, { column: 'ts', desc: true }]),
      false,
    ],
    [
      'another column order',
      have([
        { column: 'system', desc: false },
        { column: 'site_id', desc: false },
      ]),
      want([{ column: 'site_id' }, { column: 'system' }]),
      false,
    ],
    [
      'a column missing in between',
      have([
        { column: 'site_id', desc: false },
        { column: 'system', desc: false },
        { column: 'device_id', desc: false },
        { column: 'ts', desc: true },
      ]),
      want([{ column: 'site_id' }, { column: 'device_id' }, { column: 'ts', desc: true }]),
      false,
    ],
    [
      'a partial index',
      have([{ column: 'ts', desc: false }], { partial: true }),
      want([{ column: 'ts' }]),
      false,
    ],
    [
      'an invalid index',
      have([{ column: 'ts', desc: false }], { valid: false }),
      want([{ column: 'ts' }]),
      false,
    ],
    [
      'GIN jsonb_path_ops (no ? operator)',
      have([{ column: 'metrics', desc: false }], { method: 'gin', defaultOpclasses: false }),
      want([{ column: 'metrics' }], 'gin'),
      false,
    ],
    [
      'GIN on the column',
      have([{ column: 'metrics', desc: false }], { method: 'gin' }),
      want([{ column: 'metrics' }], 'gin'),
      true,
    ],
    [
      'a btree for a GIN',
      have([{ column: 'metrics', desc: false }]),
      want([{ column: 'metrics' }], 'gin'),
      false,
    ],
  ]
  for (const [name, h, w, expected] of cases)
    it(`${name} → ${expected}`, () => assert.equal(serves(h, w), expected))
})
