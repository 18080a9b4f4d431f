import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import mqtt from 'mqtt'
import {
  defer,
  eventually,
  sqlClient,
  startApp,
  testConfig,
  testDatabase,
} from '../../scripts/test-helpers.js'

describe('QoS 0 backpressure', () => {
  it('slows a publisher down while the database lags instead of queueing or dropping its messages', async (t) => {
    const url = await testDatabase(t)
    // Without backpressure the burst below would pass maxPendingRows while inserts are blocked and be
    // dropped: 20,000 messages against room for 3,000. With it, pending exceeds the mark by at most
    // what one socket read holds (aedes handles a read's packets together): ~80 KiB, ~1,100 of these.
    const sut = await startApp(
      t,
      testConfig({
        databaseUrl: url,
        ingest: { batchSize: 100, backpressureRows: 100, maxPendingRows: 3000 },
      }),
    )
    const locker = await sqlClient(t, url)
    const db = await sqlClient(t, url)
    // Inserts into measurements wait for this lock: the database "lags" for as long as the test wants.
    await locker.query('BEGIN')
    await locker.query('LOCK TABLE measurements IN SHARE MODE')
    const client = await mqtt.connectAsync(sut.mqttUrl)
    defer(t, () => client.endAsync())
    // Held back by the broker, mqtt.js waits for 'drain' once per queued publish: expected here.
    client.stream.setMaxListeners(0)
    const total = 20_000
    let written = 0
    for (let i = 0; i < total; i++) {
      client.publish(
        'paku/sensors/burst/data',
        JSON.stringify({ device_id: 'burst', metrics: { i } }),
        { qos: 0 },
        () => written++,
      )
    }
    // The broker stops reading: pending stays near the mark while the client's own queue backs up.
    // Sampled until the mark is reached and nothing more has been received for a second (40 samples
    // in a row): the stall itself is watched for as long as the whole ramp-up and stall were before.
    let maxPending = 0
    let lastReceived = -1
    let still = 0
    await eventually(
      async () => {
        const s = sut.app.ingest.stats()
        maxPending = Math.max(maxPending, s.pending)
        still = s.received === lastReceived ? still + 1 : 0
        lastReceived = s.received
        return s.pending >= 100 && still >= 40
      },
      {
        timeoutMs: 15_000,
        what: () => `the broker to stop reading (stats ${JSON.stringify(sut.app.ingest.stats())})`,
      },
    )
    const stalled = sut.app.ingest.stats()
    assert.ok(maxPending >= 100, `pending reached the mark (${maxPending})`)
    assert.ok(
      maxPending < 1500,
      `pending stayed within one socket read of the mark (${maxPending})`,
    )
    assert.ok(
      stalled.received < total,
      `the broker stopped reading (${stalled.received} of ${total} received)`,
    )
    assert.equal(stalled.dropped, 0)
    await locker.query('COMMIT')
    await eventually(
      async () =>
        (await db.query('SELECT count(*)::int AS n FROM measurements')).rows[0].n === total,
      {
        timeoutMs: 30_000,
        what: () =>
          `all ${total} rows (stats ${JSON.stringify(sut.app.ingest.stats())}, written by client ${written})`,
      },
    )
    const { rows } = await db.query(
      `SELECT count(DISTINCT (metrics->>'i'))::int AS n FROM measurements`,
    )
    assert.equal(rows[0].n, total)
    assert.equal(sut.app.ingest.stats().dropped, 0)
    // The control: the count the stall was read from moves once the database is back.
    assert.equal(sut.app.ingest.stats().received, total)
  })
})

describe('QoS 0 backpressure, publishers that hang up', () => {
  it('stores what a publisher sent before disconnecting, even while paku was holding back reading', async (t) => {
    const url = await testDatabase(t)
    const sut = await startApp(
      t,
      testConfig({
        databaseUrl: url,
        ingest: { batchSize: 500, backpressureRows: 500, maxPendingRows: 100_000 },
      }),
    )
    const locker = await sqlClient(t, url)
    const db = await sqlClient(t, url)
    await locker.query('BEGIN')
    await locker.query('LOCK TABLE measurements IN SHARE MODE')
    const perClient = 1000
    const clients = await Promise.all(
      Array.from({ length: 20 }, () => mqtt.connectAsync(sut.mqttUrl)),
    )
    for (const [c, client] of clients.entries()) {
      for (let i = 0; i < perClient; i++)
        client.publish(
          `paku/sensors/hangup${c}/data`,
          JSON.stringify({ device_id: `h${c}`, metrics: { i } }),
          { qos: 0 },
        )
    }
    // Each client sends DISCONNECT and closes once its socket has taken everything; the broker is
    // still behind, with packets of every connection waiting unread.
    const ended = Promise.all(clients.map((c) => c.endAsync()))
    await eventually(async () => clients.every((c) => c.stream.writableFinished), {
      what: () =>
        `every client's socket to take all it sent (${clients.filter((c) => c.stream.writableFinished).length} of ${clients.length}; received ${sut.app.ingest.stats().received})`,
    })
    await locker.query('COMMIT')
    await ended
    const total = clients.length * perClient
    await eventually(
      async () =>
        (await db.query('SELECT count(*)::int AS n FROM measurements')).rows[0].n === total,
      {
        timeoutMs: 30_000,
        what: () => `all ${total} rows (stats ${JSON.stringify(sut.app.ingest.stats())})`,
      },
    )
  })
})
