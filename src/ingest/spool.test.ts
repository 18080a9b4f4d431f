import assert from 'node:assert/strict'
import { appendFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { createLogger } from '../log/index.js'
import type { Row } from './records.js'
import { createSpool, decodeRow, encodeRow } from './spool.js'

const log = createLogger({ level: 'silent', format: 'json' })
const m = (id: string): Row => ({
  kind: 'measurement',
  siteId: 'p',
  system: 's',
  deviceId: id,
  location: null,
  mac: null,
  ts: new Date('2026-11-27T10:00:00.123Z'),
  metrics: '{"t":1}',
})

function dir(t: { after: (fn: () => void) => void }) {
  const d = mkdtempSync(join(tmpdir(), 'paku-spool-'))
  t.after(() => rmSync(d, { recursive: true, force: true }))
  return d
}

describe('spool', () => {
  it('round-trips every row kind, Dates and Buffers included', () => {
    const rows: Row[] = [
      m('a'),
      {
        kind: 'status',
        siteId: 'p',
        deviceId: 'd',
        status: '{}',
        ts: new Date(1),
        receivedAt: new Date(2),
        online: false,
        model: null,
        firmware: '1',
        dedup: { clientId: 'c', messageId: 7, digest: 'x' },
      },
      {
        kind: 'reject',
        topic: 't',
        clientId: null,
        deviceId: null,
        reason: 'r',
        payload: Buffer.from([0, 255, 10]),
        payloadBytes: 3,
        receivedAt: new Date(3),
      },
    ]
    assert.deepEqual(
      rows.map((r) => decodeRow(JSON.parse(JSON.stringify(encodeRow(r))))),
      rows,
    )
  })

  it('appends batches in order, survives a reopen, and drops a replayed segment', async (t) => {
    const d = dir(t)
    const spool = createSpool({ dir: d, maxBytes: 1e9, segmentBytes: 200, log })
    spool.open()
    for (const id of ['a', 'b', 'c']) assert.equal(await spool.append([m(id)]), true)
    assert.ok(spool.segments >= 2, 'small segments roll over')
    const reopened = createSpool({ dir: d, maxBytes: 1e9, segmentBytes: 200, log })
    reopened.open()
    assert.equal(reopened.bytes, spool.bytes)
    const seen: string[] = []
    while (!reopened.empty) {
      const head = await reopened.head()
      for (const b of head?.batches ?? [])
        seen.push(...b.rows.map((r) => (r as { deviceId: string }).deviceId))
      await reopened.drop(head?.segment as number)
    }
    assert.deepEqual(seen, ['a', 'b', 'c'])
    assert.deepEqual(readdirSync(d), [])
    assert.equal(reopened.bytes, 0)
  })

  it('refuses an append past maxBytes, writing nothing', async (t) => {
    const spool = createSpool({ dir: dir(t), maxBytes: 300, log })
    spool.open()
    assert.equal(await spool.append([m('a')]), true)
    const before = spool.bytes
    assert.equal(await spool.append([m('b'), m('c'), m('d')]), false)
    assert.equal(spool.bytes, before)
  })

  it('skips a torn last line left by a crash mid-append', async (t) => {
    const d = dir(t)
    const spool = createSpool({ dir: d, maxBytes: 1e9, log })
    spool.open()
    await spool.append([m('a')])
    appendFileSync(join(d, readdirSync(d)[0] as string), '{"id":"x","rows":[{"kind":"meas')
    const head = await spool.head()
    assert.deepEqual(
      head?.batches.map((b) => b.rows.length),
      [1],
    )
  })

  it('never deletes a batch appended while the head segment was being replayed', async (t) => {
    const spool = createSpool({ dir: dir(t), maxBytes: 1e9, log })
    spool.open()
    await spool.append([m('a')])
    const head = await spool.head()
    await spool.append([m('late')])
    await spool.drop(head?.segment as number)
    const next = await spool.head()
    assert.deepEqual(
      next?.batches.flatMap((b) => b.rows.map((r) => (r as { deviceId: string }).deviceId)),
      ['late'],
    )
  })
})
