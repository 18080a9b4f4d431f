import assert from 'node:assert/strict'
import { hash } from 'node:crypto'
import { describe, it } from 'node:test'
import { migratedDatabase, sqlClient } from '../../scripts/test-helpers.js'
import { createRedeliveries } from './redelivery.js'

const digest = (content: string) => hash('sha1', content, 'base64')

describe('looking up clients’ message ids after a restart', () => {
  it('looks up clients that publish at once together, 50 to a query, and gives each its own ids', async (t) => {
    const { url, db } = await migratedDatabase(t)
    const c = await sqlClient(t, url)
    // 120 clients that stored ids 1–3 before the restart, each with content of its own.
    // Client ids are the device's to choose: quotes, backslashes, commas, braces and the word NULL go
    // into the query's array parameter as they are, each only its own.
    const odd = ['dev "q"', 'dev\\b', 'dev,{c}', 'NULL', 'dev ü 🙂']
    const clients = [...odd, ...Array.from({ length: 120 - odd.length }, (_, i) => `dev-${i}`)]
    const rows = clients.flatMap((id) =>
      [1, 2, 3].map((m) => [id, m, digest(`${id}/${m}`)] as const),
    )
    await c.query(
      `INSERT INTO ingest_dedup (client_id, slot, message_id, digest)
       SELECT c, m, m, d FROM unnest($1::text[], $2::int[], $3::text[]) AS x(c, m, d)`,
      [rows.map((x) => x[0]), rows.map((x) => x[1]), rows.map((x) => x[2])],
    )
    let queries = 0
    const r = createRedeliveries({
      db: () => {
        queries++
        return db
      },
      failing: () => false,
      degraded: () => false,
    })
    const loads = clients.map((id) => r.load(id))
    assert.ok(
      loads.every((p) => p instanceof Promise),
      'each client waits for its lookup',
    )
    await Promise.all(loads as Array<Promise<void>>)
    // The first alone, the 119 that came while it ran in three (50, 50, 19).
    assert.equal(queries, 4)
    for (const id of clients) {
      for (const m of [1, 2, 3]) {
        const key = { clientId: id, messageId: m, digest: digest(`${id}/${m}`) }
        assert.ok(r.duplicateOf(key), `${id} id ${m} recognised`)
      }
      // Another client's content under the same id is not this client's message.
      const other = id === 'dev-0' ? 'dev-1' : 'dev-0'
      assert.equal(
        r.duplicateOf({ clientId: id, messageId: 1, digest: digest(`${other}/1`) }),
        undefined,
      )
    }
    assert.equal(r.load('dev-5'), undefined, 'loaded once')
    assert.equal(queries, 4)
  })
})
