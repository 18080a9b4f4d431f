import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it, type TestContext } from 'node:test'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import {
  defer,
  eventually,
  sqlClient,
  testDatabase,
  testLogger,
} from '../../scripts/test-helpers.js'
import { sqlDir } from '../assets.js'
import { migrate, readSqlDir, type DB } from '../db/index.js'
import type { Reject, Row } from './records.js'
import { writeOtaReport, writeStatusReports } from '../ota/reports.js'
import { createSpool } from './spool.js'
import { createStore } from './store.js'
import { createCommitWindow, createWriter, type WriterOptions } from './writer.js'

/** The statements as paku wires them: OTA writes the status and OTA rows' tables. */
const store = createStore({ statuses: writeStatusReports, ota: writeOtaReport })

async function database(t: Parameters<typeof testDatabase>[0], max = 2) {
  const url = await testDatabase(t)
  const pool = new pg.Pool({ connectionString: url, max })
  // As src/db does: a connection cut under a query fails that query; it must not crash the process.
  pool.on('error', () => undefined)
  pool.on('connect', (client) => client.on('error', () => undefined))
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) })
  defer(t, () => db.destroy())
  await migrate(db, readSqlDir(sqlDir()))
  return { url, db }
}

const measurement = (deviceId: string, ts = new Date()): Row => ({
  kind: 'measurement',
  siteId: 'paku',
  system: 'sensors',
  deviceId,
  location: null,
  mac: null,
  ts,
  metrics: '{"t":1}',
})

const toReject = (row: Row, reason: string): Reject => ({
  kind: 'reject',
  topic: `(row of ${row.kind})`,
  clientId: null,
  deviceId: 'deviceId' in row ? row.deviceId : null,
  reason,
  payload: Buffer.from(JSON.stringify(row)),
  payloadBytes: 1,
  receivedAt: new Date(),
})

/** A writer on `db` with the defaults most tests here use; `o` overrides any of them. */
function testWriter(db: Kysely<DB>, o: Partial<WriterOptions> = {}) {
  return createWriter({
    store,
    db: () => db,
    log: testLogger(),
    batchSize: 100,
    flushIntervalMs: 10_000,
    maxPendingRows: 1000,
    toReject,
    ...o,
  })
}

/**
 * The store, counting the batch writes started: a step calls writeBatch as it starts, before its
 * first await, so `starts` tells at once whether a step started.
 */
function countingStore() {
  const c = {
    starts: 0,
    store: {
      ...store,
      writeBatch: (...args: Parameters<typeof store.writeBatch>) => {
        c.starts++
        return store.writeBatch(...args)
      },
    },
  }
  return c
}

/** One turn of the event loop (setImmediate, which mocked setTimeout leaves alone). */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve))

/**
 * Mocked setTimeout: the writer's timers fire only when the test moves time on (tick). until() waits
 * for a condition without setTimeout, checking it once per turn, up to a wall-clock deadline.
 */
function mockedTimers(t: TestContext) {
  t.mock.timers.enable({ apis: ['setTimeout'] })
  const clock = {
    tick: (ms: number) => t.mock.timers.tick(ms),
    async until<T>(
      fn: () => T | Promise<T>,
      { timeoutMs = 5000, what = 'condition' } = {},
    ): Promise<NonNullable<T>> {
      const until = Date.now() + timeoutMs
      for (;;) {
        const v = await fn()
        if (v) return v as NonNullable<T>
        if (Date.now() > until)
          throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
        await turn()
      }
    },
    /** Waits for `acks`, firing the timers due now at each turn (a step that ends arms one at 0). */
    async settle(acks: Array<Promise<void>>, what = 'the acknowledgements'): Promise<void> {
      let done = false
      const all = Promise.all(acks).then(() => (done = true))
      await clock.until(
        () => {
          clock.tick(0)
          return done
        },
        { what },
      )
      await all
    },
  }
  return clock
}

describe('batch writer', () => {
  it('isolates a row PostgreSQL refuses, rejects it with the reason and writes the rest of the batch', async (t) => {
    const { url, db } = await database(t)
    const writer = testWriter(db)
    // Year -10000 is a valid JavaScript Date but older than timestamptz's 4713 BC: SQLSTATE 22008.
    const poisoned = new Date(Date.UTC(-10000, 0, 1))
    for (const row of [measurement('a'), measurement('b', poisoned), measurement('c')])
      void writer.push(row)
    await writer.flush()
    const sql = await sqlClient(t, url)
    const { rows } = await sql.query('SELECT device_id FROM measurements ORDER BY device_id')
    assert.deepEqual(
      rows.map((r) => r.device_id),
      ['a', 'c'],
    )
    const rejects = await sql.query('SELECT device_id, reason FROM ingest_rejects')
    assert.equal(rejects.rows.length, 1)
    assert.equal(rejects.rows[0].device_id, 'b')
    assert.match(rejects.rows[0].reason, /^database refused the row: .*out of range/)
    assert.equal(writer.stats().written, 3)
    assert.equal(writer.stats().pending, 0)
  })

  it('keeps rows while the database is unreachable and writes them once it is back', async (t) => {
    const { url, db } = await database(t)
    let broken = true
    const bad = new Kysely<DB>({
      dialect: new PostgresDialect({
        pool: new pg.Pool({
          connectionString: 'postgres://x:y@127.0.0.1:1/none',
          connectionTimeoutMillis: 200,
        }),
      }),
    })
    defer(t, () => bad.destroy())
    const logged: string[] = []
    const log = {
      ...testLogger(),
      error: (m: string) => logged.push(`error ${m}`),
      info: (m: string) => logged.push(`info ${m}`),
    }
    const writer = createWriter({
      store,
      db: () => (broken ? bad : db),
      log,
      batchSize: 100,
      flushIntervalMs: 10_000,
      maxPendingRows: 1000,
      toReject,
    })
    for (const id of ['a', 'b']) void writer.push(measurement(id))
    await writer.flush()
    await writer.flush()
    assert.equal(writer.stats().pending, 2)
    assert.equal(writer.failing, true)
    broken = false
    await writer.flush()
    assert.equal(writer.stats().pending, 0)
    assert.equal(writer.failing, false)
    const sql = await sqlClient(t, url)
    assert.equal((await sql.query('SELECT 1 FROM measurements')).rowCount, 2)
    // Only the transitions are logged, not every retry.
    assert.deepEqual(logged, [
      'error database writes failing; keeping rows in memory and retrying',
      'info database writes recovered',
    ])
  })

  it('stores metrics exactly, whatever their strings hold (newlines, quotes, backslashes, braces, non-ASCII)', async (t) => {
    const { url, db } = await database(t)
    const writer = testWriter(db)
    const docs = [
      { note: 'a\nb\r\n"q" \\ {x,y} ü 🙂', n: 1 },
      { note: '', n: 2, list: ['\n', '","'] },
      { n: 3 },
    ]
    for (const [i, d] of docs.entries()) {
      void writer.push({
        kind: 'measurement',
        siteId: 'paku',
        system: 'sensors',
        deviceId: `m${i}`,
        location: null,
        mac: null,
        ts: new Date(),
        metrics: JSON.stringify(d),
      })
    }
    await writer.flush()
    const sql = await sqlClient(t, url)
    const { rows } = await sql.query('SELECT metrics FROM measurements ORDER BY device_id')
    assert.deepEqual(
      rows.map((r) => r.metrics),
      docs,
    )
  })

  it('stores every column exactly: hostile text and NULLs in each, timestamps to the millisecond from 1 BC to 9999', async (t) => {
    const { url, db } = await database(t)
    const writer = testWriter(db)
    const text = ['', 'NULL', 'a"b', 'back\\slash', '{x,y}', ' sp ', 'ü 🙂', 'line\nbreak']
    const times = [
      '2026-12-05T10:43:10.383Z',
      '1970-01-01T00:00:00.000Z',
      '1969-12-31T23:59:59.999Z',
      '1900-02-28T12:00:00.001Z',
      '9999-12-31T23:59:59.999Z',
      '0000-06-15T08:30:00.250Z',
      '2255-06-01T00:00:00.007Z',
      '4321-01-01T00:00:00.999Z',
    ].map((s) => new Date(s))
    const rows = text.map((s, i): Row => ({
      kind: 'measurement',
      siteId: `site${s}`,
      system: `sys${s}`,
      deviceId: `${i}${s}`,
      location: i % 2 === 0 ? s : null,
      mac: i % 3 === 0 ? null : s,
      ts: times[i] as Date,
      metrics: '{}',
    }))
    for (const row of rows) void writer.push(row)
    await writer.flush()
    const sql = await sqlClient(t, url)
    // Epoch milliseconds as text: exact for any year, with no time zone or date formatting in between.
    const got =
      await sql.query(`SELECT site_id, system, device_id, location, mac, trim_scale(extract(epoch FROM ts) * 1000)::text AS ms
      FROM measurements ORDER BY id`)
    assert.deepEqual(
      got.rows,
      rows.map(
        (r) =>
          r.kind === 'measurement' && {
            site_id: r.siteId,
            system: r.system,
            device_id: r.deviceId,
            location: r.location,
            mac: r.mac,
            ms: String(r.ts.getTime()),
          },
      ),
    )
  })

  it('remembers one QoS 1 id per slot: ids 1,024 apart in one batch keep the newer, and the batch is written', async (t) => {
    const { url, db } = await database(t)
    const writer = testWriter(db)
    const keyed = (messageId: number, digest: string): Row => ({
      ...measurement('esp'),
      dedup: { clientId: 'ESP32-A', messageId, digest },
    })
    // 5 and 1029 share slot 5: an upsert of both in one statement fails in PostgreSQL ("cannot affect row a second time").
    for (const row of [keyed(5, 'old'), keyed(6, 'six'), keyed(1029, 'new')])
      void writer.push(row, true)
    await writer.flush()
    // PostgreSQL's refusal is SQLSTATE 21000, not a row's fault: the batch would fail on every retry.
    assert.equal(writer.stats().failedFlushes, 0)
    const sql = await sqlClient(t, url)
    const { rows } = await sql.query(
      `SELECT slot, message_id, digest FROM ingest_dedup WHERE client_id = 'ESP32-A' ORDER BY slot`,
    )
    assert.deepEqual(rows, [
      { slot: 5, message_id: 1029, digest: 'new' },
      { slot: 6, message_id: 6, digest: 'six' },
    ])
    assert.equal((await sql.query('SELECT 1 FROM measurements')).rowCount, 3)
  })

  it('drops and counts rows beyond maxPendingRows instead of growing without bound', async (t) => {
    const { db } = await database(t)
    const writer = testWriter(db, {
      maxPendingRows: 3,
    })
    const accepted = ['a', 'b', 'c', 'd', 'e'].map((id) => writer.push(measurement(id)))
    assert.deepEqual(accepted, [undefined, undefined, undefined, false, false])
    assert.equal(writer.stats().dropped, 2)
    await writer.stop()
    assert.equal(writer.stats().written, 3)
  })
})

describe('commit window', () => {
  it('opens only while rows arrive often enough for two more to share it, and ends with its first row', () => {
    const w = createCommitWindow(20)
    let at = 0
    // Rows 500 ms apart: a row would wait for nothing.
    for (let i = 0; i < 5; i++) w.arrived((at += 500), true)
    assert.equal(w.delay(at), 0)
    // A thousand a second: the window opens once the estimate has caught up with the new rate.
    const delays: number[] = []
    for (let i = 0; i < 60; i++) {
      w.arrived((at += 1), i === 0)
      delays.push(w.delay(at))
    }
    assert.equal(delays[0], 0, 'the first fast row commits at once: the rate is not known yet')
    const opened = at - 59
    assert.equal(
      w.delay(at),
      Math.max(0, opened + 20 - at),
      'measured from the first row that waits',
    )
    const w2 = createCommitWindow(20)
    for (let i = 0; i < 60; i++) w2.arrived(1000 + i, i === 50)
    assert.equal(w2.delay(1055), 15, 'a row arriving later does not move the end')
    assert.equal(w2.delay(1080), 0, 'past the end: now')
    assert.equal(createCommitWindow(0).delay(5), 0, '0: never waits')
  })

  /** A writer on mocked timers and a clock the test moves: nothing fires unless the test advances time. */
  async function windowed(t: TestContext, commitWindowMs: number) {
    const { db } = await database(t)
    let clock = 1_000_000
    const timers = mockedTimers(t)
    const writer = testWriter(db, {
      batchSize: 1000,
      flushIntervalMs: 60_000,
      maxPendingRows: 10_000,
      commitWindowMs,
      now: () => clock,
    })
    writer.start()
    defer(t, () => writer.stop())
    const advance = (ms: number) => {
      clock += ms
      timers.tick(ms)
    }
    // Warm the rate estimate: 50 rows a millisecond apart (one commit, started by a timer due now).
    const warm = Array.from(
      { length: 50 },
      (_, i) => writer.push(measurement(`w${i}`), true) as Promise<void>,
    )
    for (let i = 0; i < 50; i++) clock += 1
    advance(0)
    await Promise.all(warm)
    return {
      writer,
      advance,
      settle: timers.settle,
      push: (id: string) => writer.push(measurement(id), true) as Promise<void>,
    }
  }

  it(
    'gathers the QoS 1 rows of a window into one commit, ending it at the first row plus the window',
    { timeout: 20_000 },
    async (t) => {
      const { writer, advance, push } = await windowed(t, 30)
      const before = writer.stats().flushes
      const first = [push('a'), push('b')]
      advance(20)
      const later = [push('c')]
      advance(9)
      // The window ends 30 ms after "a", however long rows keep arriving.
      advance(1)
      await Promise.all([...first, ...later])
      assert.equal(writer.stats().flushes - before, 1, 'a, b and c share one commit')
    },
  )

  it('without a window, rows of different turns go in different commits (the control)', async (t) => {
    const { writer, advance, settle, push } = await windowed(t, 0)
    const before = writer.stats().flushes
    const first = [push('a'), push('b')]
    advance(0)
    await Promise.all(first)
    const later = [push('c')]
    await settle(later)
    assert.equal(writer.stats().flushes - before, 2)
  })
})

describe('batch writer backpressure', () => {
  it('asks QoS 0 producers to wait from highWaterRows pending rows on, and lets them go at half', async (t) => {
    const { db } = await database(t)
    const writer = testWriter(db, {
      batchSize: 4,
      flushIntervalMs: 60_000,
      maxPendingRows: 100,
      highWaterRows: 10,
    })
    writer.start()
    defer(t, () => writer.stop())
    for (let i = 0; i < 9; i++) void writer.push(measurement(`r${i}`))
    assert.equal(writer.room(), undefined, 'below the mark: no waiting')
    void writer.push(measurement('r9'))
    const wait = writer.room()
    assert.ok(wait instanceof Promise, 'at the mark: wait')
    assert.equal(writer.room(), wait, 'every producer waits on the same promise')
    // Released by the writer catching up (flushes of 4 rows: 10 → 6 → 2 ≤ 5), not by the 60 s interval.
    await wait
    assert.ok(writer.stats().pending <= 5, `pending ${writer.stats().pending} after release`)
    assert.equal(writer.stats().dropped, 0)
  })

  it('does not hold producers back while writes fail (the spool or the drop counter takes over)', async (t) => {
    const bad = new Kysely<DB>({
      dialect: new PostgresDialect({
        pool: new pg.Pool({
          connectionString: 'postgres://nobody@127.0.0.1:1/none',
          connectionTimeoutMillis: 200,
        }),
      }),
    })
    defer(t, () => bad.destroy())
    const writer = createWriter({
      store,
      db: () => bad,
      log: testLogger(),
      batchSize: 2,
      flushIntervalMs: 60_000,
      maxPendingRows: 100,
      highWaterRows: 3,
      toReject,
    })
    writer.start()
    defer(t, () => writer.stop(0))
    for (let i = 0; i < 3; i++) void writer.push(measurement(`f${i}`))
    const wait = writer.room()
    assert.ok(wait instanceof Promise)
    // The writer's timers are unref'd (they must not keep paku alive): hold the loop open while the
    // refused connection fails, or node:test may find nothing left to run and cancel the test.
    const keepAlive = setTimeout(() => undefined, 10_000)
    await wait
    clearTimeout(keepAlive)
    assert.equal(writer.failing, true, 'released because writes fail')
    assert.equal(writer.room(), undefined)
  })
})

describe('batch writer concurrency', () => {
  /** push() of a row whose producer waits: always a promise. */
  const durable = (writer: ReturnType<typeof createWriter>, row: Row): Promise<void> => {
    const ack = writer.push(row, true)
    assert.ok(ack instanceof Promise)
    return ack
  }

  const status = (deviceId: string): Row => ({
    kind: 'status',
    siteId: 'paku',
    deviceId,
    status: '{"online":true}',
    ts: new Date(),
    receivedAt: new Date(),
    online: true,
    model: null,
    firmware: null,
  })

  /** Holds the measurements table (SHARE lock: every INSERT waits) until release() commits. */
  async function blockInserts(t: Parameters<typeof testDatabase>[0], url: string) {
    const locker = await sqlClient(t, url)
    await locker.query('BEGIN')
    await locker.query('LOCK TABLE measurements IN SHARE MODE')
    return { release: () => locker.query('COMMIT') }
  }

  /**
   * Backends of this database waiting for a lock, once `n` of them are (or the deadline passes). It
   * polls once per turn, without setTimeout: it works under mocked timers too.
   */
  async function waitingInserts(
    url: string,
    t: Parameters<typeof testDatabase>[0],
    n: number,
    ms = 5000,
  ): Promise<number[]> {
    const sql = await sqlClient(t, url)
    const until = Date.now() + ms
    for (;;) {
      const r = await sql.query<{ pid: number }>(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO measurements%' ORDER BY pid",
      )
      if (r.rows.length >= n || Date.now() > until) return r.rows.map((x) => x.pid)
      await turn()
    }
  }

  it('counts each committed batch in the duration histogram, one held inside PostgreSQL above 0.25 s', async (t) => {
    const { url, db } = await database(t)
    const writer = testWriter(db, {
      batchSize: 10,
      flushIntervalMs: 60_000,
      maxPendingRows: 100,
    })
    writer.start()
    defer(t, () => writer.stop())
    await durable(writer, measurement('quick'))
    const lock = await blockInserts(t, url)
    const held = durable(writer, measurement('held'))
    assert.equal((await waitingInserts(url, t, 1)).length, 1)
    // The lock stays until the INSERT has waited 0.3 s by PostgreSQL's own clock.
    const sql = await sqlClient(t, url)
    await eventually(
      async () =>
        (
          await sql.query(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO measurements%' AND clock_timestamp() - query_start >= interval '300 ms'",
          )
        ).rowCount === 1,
      { what: 'the INSERT waiting 0.3 s for the lock' },
    )
    await lock.release()
    await held
    const h = writer.flushDurations()
    assert.equal(h.count, 2)
    assert.equal(h.count, writer.stats().flushes)
    /** Batches that took at most `le` seconds (the histogram's cumulative bucket). */
    const upTo = (le: number) =>
      h.counts.slice(0, h.bounds.indexOf(le) + 1).reduce((a, b) => a + b, 0)
    assert.ok(
      upTo(0.25) <= 1,
      'the batch that waited 0.3 s for the lock is not in the 0.25 s bucket',
    )
    assert.equal(upTo(10), 2)
    assert.ok(h.sum >= 0.3 && h.sum < 10, `sum ${h.sum} s`)
  })

  it('is busy while a fifth of a batch or more waits to be durable, and not once it is written', async (t) => {
    const { url, db } = await database(t)
    const writer = testWriter(db, {
      batchSize: 10,
      flushIntervalMs: 60_000,
      maxPendingRows: 100,
    })
    writer.start()
    defer(t, () => writer.stop())
    assert.equal(writer.busy, false, 'idle')
    const lock = await blockInserts(t, url)
    const first = durable(writer, measurement('a'))
    assert.equal((await waitingInserts(url, t, 1)).length, 1)
    assert.equal(writer.busy, false, 'one row in flight is below a fifth of a batch (2 of 10)')
    const second = durable(writer, measurement('b'))
    assert.equal(writer.busy, true, 'two rows not yet durable')
    await lock.release()
    await Promise.all([first, second])
    assert.equal(writer.busy, false, 'written')
  })

  it('stays busy for a second after a burst-sized batch, so a queue that runs dry for a moment is not the end of the burst', async (t) => {
    const { db } = await database(t)
    const writer = testWriter(db, {
      batchSize: 10,
      flushIntervalMs: 60_000,
      maxPendingRows: 100,
    })
    writer.start()
    defer(t, () => writer.stop())
    // Five rows at once: the flushes take them two and three at a time, a fifth of a batch (2 of 10) or more.
    const pushedAt = performance.now()
    const acks = ['a', 'b', 'c', 'd', 'e'].map((id) => durable(writer, measurement(id)))
    await Promise.all(acks)
    const emptiedAt = performance.now()
    assert.equal(writer.stats().pending, 0)
    assert.equal(writer.busy, true, 'nothing waits, but a burst-sized batch was taken just now')
    await eventually(async () => !writer.busy, {
      timeoutMs: 3000,
      what: 'the writer no longer busy',
    })
    const idleAt = performance.now()
    // The last such batch started after the pushes and before the queue emptied: a second from then.
    assert.ok(
      idleAt - pushedAt >= 1000,
      `busy until ${Math.round(idleAt - pushedAt)} ms after the pushes`,
    )
    assert.ok(
      idleAt - emptiedAt < 1500,
      `busy for ${Math.round(idleAt - emptiedAt)} ms after the queue emptied`,
    )
  })

  it('writes the rows a full batch left behind at once when nothing more arrived (a burst that ended), not after the flush interval', async (t) => {
    const { db } = await database(t)
    const writer = testWriter(db, {
      flushIntervalMs: 60_000,
    })
    writer.start()
    defer(t, () => writer.stop())
    // QoS 0 rows (no producer waiting): the 100th starts a full batch; 50 are left behind it.
    for (let i = 0; i < 150; i++) assert.equal(writer.push(measurement(`d${i}`)), undefined)
    await eventually(async () => writer.stats().written === 150, {
      timeoutMs: 5000,
      what: 'all 150 written long before the 60 s flush interval',
    })
    assert.equal(writer.stats().flushes, 2)
  })

  it('keeps gathering the rows behind a full batch while more arrive during its write (the burst goes on)', async (t) => {
    const { url, db } = await database(t)
    const clock = mockedTimers(t)
    const counted = countingStore()
    const writer = testWriter(db, {
      store: counted.store,
      flushIntervalMs: 60_000,
    })
    writer.start()
    defer(t, () => writer.stop())
    const lock = await blockInserts(t, url)
    for (let i = 0; i < 150; i++) void writer.push(measurement(`d${i}`))
    // The 100th row armed a timer at 0 for the full batch.
    clock.tick(0)
    assert.equal(
      (await waitingInserts(url, t, 1)).length,
      1,
      'the full batch waits inside PostgreSQL',
    )
    void writer.push(measurement('late'))
    await lock.release()
    await clock.until(() => writer.stats().written >= 100, { what: 'the full batch written' })
    assert.equal(writer.stats().written, 100)
    // Its step has ended (in the same turn as the commit) and armed the next timer: nothing is due
    // before the flush interval.
    clock.tick(59_999)
    assert.equal(counted.starts, 1, 'no batch started before the flush interval')
    assert.equal(
      writer.stats().written,
      100,
      'the 51 behind it wait for more rows or the flush interval',
    )
    assert.equal(writer.stats().pending, 51)
    // The control: the same observation sees the flush interval start their batch.
    clock.tick(1)
    assert.equal(counted.starts, 2, 'the flush interval starts the batch of the 51')
    await writer.flush()
    assert.equal(writer.stats().written, 151)
  })

  it('writes two telemetry batches at the same time, each on its own connection', async (t) => {
    const { url, db } = await database(t, 4)
    const clock = mockedTimers(t)
    const counted = countingStore()
    const writer = testWriter(db, {
      store: counted.store,
      batchSize: 2,
      flushIntervalMs: 60_000,
      concurrency: 2,
      maxPendingRows: 100,
    })
    writer.start()
    defer(t, () => writer.stop())
    const lock = await blockInserts(t, url)
    const acks = ['a', 'b', 'c', 'd', 'e'].map((id) => durable(writer, measurement(id)))
    // Two batches wait inside PostgreSQL; the other rows wait for a free writer.
    assert.equal((await waitingInserts(url, t, 2)).length, 2)
    // Every timer the writer armed fires, the flush interval's included: no third batch starts.
    clock.tick(60_000)
    assert.equal(counted.starts, 2, 'no more than concurrency batches started')
    assert.equal(
      (await waitingInserts(url, t, 3, 0)).length,
      2,
      'no more than concurrency batches at once',
    )
    assert.equal(writer.stats().pending, 5)
    assert.equal(writer.stats().waiting, 5)
    await lock.release()
    // The control: the same count sees a third batch start once a writer is free.
    await clock.until(
      () => {
        clock.tick(0)
        return counted.starts > 2
      },
      { what: 'a third batch started' },
    )
    await clock.settle(acks)
    const sql = await sqlClient(t, url)
    const { rows } = await sql.query('SELECT device_id FROM measurements ORDER BY device_id')
    assert.deepEqual(
      rows.map((r) => r.device_id),
      ['a', 'b', 'c', 'd', 'e'],
    )
    assert.equal(writer.stats().pending, 0)
    assert.equal(writer.stats().waiting, 0)
  })

  it('writes a batch with a status row alone, after the telemetry before it', async (t) => {
    const { url, db } = await database(t, 4)
    const clock = mockedTimers(t)
    const counted = countingStore()
    // batchSize 10: the first flush starts once two rows (a fifth of a batch) wait.
    const writer = testWriter(db, {
      store: counted.store,
      batchSize: 10,
      flushIntervalMs: 60_000,
      concurrency: 2,
      maxPendingRows: 100,
    })
    writer.start()
    defer(t, () => writer.stop())
    const lock = await blockInserts(t, url)
    const first = [durable(writer, measurement('a')), durable(writer, measurement('b'))]
    assert.equal((await waitingInserts(url, t, 1)).length, 1)
    const later = [durable(writer, status('s1')), durable(writer, measurement('c'))]
    // Every timer the writer armed fires, the flush interval's included.
    clock.tick(60_000)
    assert.equal(counted.starts, 1, 'status batch did not start beside the telemetry one')
    const sql = await sqlClient(t, url)
    // The status batch would not wait for the measurements lock: had it started, its row would be there.
    assert.equal(
      (await sql.query('SELECT 1 FROM edge_device_status')).rowCount,
      0,
      'status batch did not start beside the telemetry one',
    )
    assert.equal((await waitingInserts(url, t, 2, 0)).length, 1)
    await lock.release()
    // The control: the same count sees the status batch start once the telemetry one committed.
    await clock.until(
      () => {
        clock.tick(0)
        return counted.starts > 1
      },
      { what: 'the status batch started' },
    )
    await clock.settle([...first, ...later])
    assert.equal((await sql.query('SELECT 1 FROM edge_device_status')).rowCount, 1)
    assert.equal((await sql.query('SELECT 1 FROM measurements')).rowCount, 3)
  })

  it('loses and doubles nothing when one of two batches in flight fails and the other commits', async (t) => {
    const { url, db } = await database(t, 4)
    const dir = mkdtempSync(join(tmpdir(), 'paku-writer-'))
    defer(t, () => rmSync(dir, { recursive: true, force: true }))
    const spool = createSpool({ dir, maxBytes: 1 << 20, log: testLogger() })
    spool.open()
    const writer = testWriter(db, {
      spool,
      batchSize: 3,
      flushIntervalMs: 50,
      concurrency: 2,
      maxPendingRows: 100,
    })
    writer.start()
    defer(t, () => writer.stop())
    const lock = await blockInserts(t, url)
    const ids = ['a', 'b', 'c', 'd', 'e', 'f']
    const acks = ids.map((id) => durable(writer, measurement(id)))
    const pids = await waitingInserts(url, t, 2)
    assert.equal(pids.length, 2)
    // Cut one writer's connection while both wait: its batch fails and goes to the spool (acknowledged
    // from there) while the other batch still waits, and commits once the lock is gone.
    const admin = await sqlClient(t, url)
    await admin.query('SELECT pg_terminate_backend($1)', [pids[0]])
    await eventually(async () => writer.stats().spooled > 0, {
      what: 'the failed batch spooled',
    })
    assert.ok(writer.stats().spooled > 0, 'the failed batch was spooled')
    assert.equal((await waitingInserts(url, t, 1, 0)).length, 1, 'the other batch still waits')
    await lock.release()
    await Promise.all(acks)
    // Then the spooled batch is replayed once the database answers again.
    await eventually(async () => !writer.degraded && writer.stats().pending === 0, {
      timeoutMs: 10_000,
      what: 'the spool replayed and nothing pending',
    })
    const { rows } = await admin.query(
      'SELECT device_id, count(*)::int AS n FROM measurements GROUP BY device_id ORDER BY device_id',
    )
    assert.deepEqual(
      rows,
      ids.map((id) => ({ device_id: id, n: 1 })),
    )
    assert.equal(writer.stats().dropped, 0)
  })
})
