import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { generateSchema, SCHEMA_FILE } from '../../scripts/db-schema.js'
import { sqlClient, testDatabase } from '../../scripts/test-helpers.js'

describe('src/db/schema.ts', () => {
  it('is what `npm run db-schema` generates from the migrated sql/, and a schema change shows', async (t) => {
    const url = await testDatabase(t)
    const generated = await generateSchema(url)
    assert.equal(
      readFileSync(SCHEMA_FILE, 'utf8'),
      generated,
      'src/db/schema.ts differs from sql/: run `npm run db-schema`',
    )
    // The same comparison sees a column the file does not have.
    const c = await sqlClient(t, url)
    await c.query('ALTER TABLE devices ADD COLUMN drift_probe integer')
    const drifted = await generateSchema(url)
    assert.notEqual(drifted, generated)
    assert.match(drifted, /drift_probe: number \| null/)
  })
})
