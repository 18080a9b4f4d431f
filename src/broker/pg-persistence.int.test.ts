import { after, describe, it, test } from 'node:test'
import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { sql } from 'kysely'
import mqemitter from 'mqemitter'
import { migratedDatabase, testLogger } from '../../scripts/test-helpers.js'
import * as v from 'valibot'
import { ConfigSchema } from '../config/index.js'
import { createLedger } from './ledger.js'
import { PgPersistence, type PgPersistenceOptions } from './pg-persistence.js'

// The abstract test suite that aedes-persistence ships for every persistence implementation.
const abstractPersistence = createRequire(import.meta.url)('aedes-persistence/abstract.js') as (
  opts: Record<string, unknown>,
) => void

const file = { after }
const { db } = await migratedDatabase(file)
const TABLES = sql`TRUNCATE mqtt_retained, mqtt_subscriptions, mqtt_outgoing, mqtt_incoming, mqtt_wills, mqtt_sessions`
const DEFAULTS = v.parse(ConfigSchema, {}).mqtt

/** A persistence on the test database with the default quotas and its own ledger. */
function persistence(o: Partial<PgPersistenceOptions> = {}): PgPersistence {
  const quotas = o.quotas ?? DEFAULTS.quotas
  return new PgPersistence({
    db: () => db,
    log: testLogger(),
    ledger: createLedger({ quotas, now: Date.now }),
    quotas,
    sessionExpiryHours: DEFAULTS.sessionExpiryHours,
    ...o,
  })
}

describe('aedes-persistence abstract suite on PostgreSQL', () => {
  abstractPersistence({
    test,
    testAsync: true,
    // Each test expects an empty persistence: start every instance on empty tables.
    persistence: async () => {
      await TABLES.execute(db)
      return persistence({ flushDelayMs: 1 })
    },
  })
})

function fakeBroker(id: string) {
  const mq = mqemitter()
  return {
    id,
    mq,
    publish: mq.emit.bind(mq),
    subscribe: mq.on.bind(mq),
    unsubscribe: mq.removeListener.bind(mq),
    counter: 0,
  }
}

const read = async (stream: AsyncIterable<unknown>) => {
  const out: Array<Record<string, unknown>> = []
  for await (const x of stream) out.push(x as Record<string, unknown>)
  return out
}

describe('PgPersistence across a restart', () => {
  it('reloads retained messages, subscriptions, queued messages, inbound QoS 2 and wills from PostgreSQL', async () => {
    await TABLES.execute(db)
    const first = persistence()
    await first.setup(fakeBroker('broker-1'))
    const client = { id: 'ha-bridge' }
    await first.storeRetained({
      cmd: 'publish',
      topic: 'paku/edge/E1/config/set',
      payload: Buffer.from('{"a":1}'),
      qos: 1,
      retain: true,
    })
    await first.storeRetained({
      cmd: 'publish',
      topic: 'gone/soon',
      payload: Buffer.from('x'),
      qos: 0,
      retain: true,
    })
    await first.storeRetained({
      cmd: 'publish',
      topic: 'gone/soon',
      payload: Buffer.alloc(0),
      qos: 0,
      retain: true,
    })
    await first.addSubscriptions(client, [
      { topic: 'paku/#', qos: 1 },
      { topic: 'x/y', qos: 0 },
    ])
    const queued = {
      cmd: 'publish',
      topic: 'paku/edge/E1/cmd/ota',
      payload: Buffer.from('{"url":"u"}'),
      qos: 1,
      retain: false,
      brokerId: 'broker-1',
      brokerCounter: 5,
    }
    await first.outgoingEnqueueCombi([{ clientId: client.id }], queued)
    await first.outgoingUpdate(client, { ...queued, messageId: 42 })
    const acked = { ...queued, brokerCounter: 6, payload: Buffer.from('acked') }
    await first.outgoingEnqueue({ clientId: client.id }, acked)
    await first.outgoingUpdate(client, { ...acked, messageId: 43 })
    await first.outgoingClearMessageId(client, { messageId: 43 })
    await first.incomingStorePacket(client, {
      cmd: 'publish',
      topic: 'q2',
      payload: Buffer.from('z'),
      qos: 2,
      messageId: 9,
    })
    // A clean session's inbound QoS 2 message, left behind as by a crash: it has no session to go back to.
    await first.incomingStorePacket(
      { id: 'clean-device' },
      { cmd: 'publish', topic: 'q2', payload: Buffer.from('c'), qos: 2, messageId: 3 },
    )
    await first.putWill(
      { id: 'ESP32-1' },
      {
        cmd: 'publish',
        topic: 'paku/edge/ESP32-1/status',
        payload: Buffer.from('{"online":false}'),
        qos: 1,
        retain: true,
      },
    )
    await first.destroy()

    const second = persistence()
    await second.setup(fakeBroker('broker-2'))
    const retained = await read(second.createRetainedStream('#'))
    assert.deepEqual(
      retained.map((p) => [p.topic, String(p.payload)]),
      [['paku/edge/E1/config/set', '{"a":1}']],
    )
    const subs = await second.subscriptionsByClient(client)
    assert.deepEqual(subs.map((s) => [s.topic, s.qos]).sort(), [
      ['paku/#', 1],
      ['x/y', 0],
    ])
    const matched = (await second.subscriptionsByTopic('paku/edge/E1/cmd/ota')) as Array<{
      clientId: string
    }>
    assert.deepEqual(
      matched.map((m) => m.clientId),
      ['ha-bridge'],
    )
    const out = await read(second.outgoingStream(client))
    assert.deepEqual(
      out.map((p) => [String(p.payload), p.messageId]),
      [['{"url":"u"}', 42]],
    )
    assert.equal(String((await second.incomingGetPacket(client, { messageId: 9 })).payload), 'z')
    await assert.rejects(
      second.incomingGetPacket({ id: 'clean-device' }, { messageId: 3 }),
      /no such packet/,
    )
    const wills = await read(second.streamWill({ 'broker-2': Date.now() }))
    assert.deepEqual(
      wills.map((w) => [w.topic, w.brokerId]),
      [['paku/edge/ESP32-1/status', 'broker-1']],
      'the dead broker id is kept',
    )
    await second.destroy()
  })
})

describe('PgPersistence clearing a message not sent yet', () => {
  it('removes that broker packet, not another one still waiting for its message id', async () => {
    await TABLES.execute(db)
    const p = persistence({ flushDelayMs: 1 })
    await p.setup(fakeBroker('broker-1'))
    const client = { id: 'ha-bridge' }
    const command = {
      cmd: 'publish',
      topic: 'paku/edge/E1/cmd/n',
      payload: Buffer.from('cmd'),
      qos: 1,
      retain: false,
      brokerId: 'broker-1',
      brokerCounter: 7,
    }
    const own = {
      ...command,
      topic: 'paku/sensors/ruuvi_cabin/data',
      payload: Buffer.from('own reading'),
      brokerCounter: 8,
    }
    await p.outgoingEnqueueCombi([{ clientId: client.id }], command)
    await p.outgoingEnqueueCombi([{ clientId: client.id }], own)
    // aedes leaves the bridge's own reading out (authorizeForward: no-local) and clears it, with no id yet.
    const cleared = await p.outgoingClearMessageId(client, { ...own })
    assert.equal(String(cleared?.payload), 'own reading')
    // The command is still there, and gets its message id as it is sent.
    await p.outgoingUpdate(client, { ...command, messageId: 1 })
    assert.deepEqual(
      (await read(p.outgoingStream(client))).map((x) => [String(x.payload), x.messageId]),
      [['cmd', 1]],
    )
    assert.equal(
      await p.outgoingClearMessageId(client, { messageId: undefined }),
      undefined,
      'no id and no broker packet: nothing is guessed',
    )
    await p.flush()
    const rows = await sql<{
      payload: Buffer
      message_id: number | null
    }>`SELECT payload, message_id FROM mqtt_outgoing ORDER BY seq`.execute(db)
    assert.deepEqual(
      rows.rows.map((r) => [String(r.payload), r.message_id]),
      [['cmd', 1]],
    )
    await p.destroy()
  })
})
