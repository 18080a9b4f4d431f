import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import {
  ECOFLOW_INTEGER_COLUMNS,
  ECOFLOW_QUOTA_COLUMNS,
  ECOFLOW_READING_COLUMNS,
} from './ecoflow-columns.js'

const migration = readFileSync(
  join(import.meta.dirname, '..', '..', 'sql', '0001_measurements.sql'),
  'utf8',
)
const table =
  /CREATE TABLE IF NOT EXISTS ecoflow_measurements \(([\s\S]*?)\n\);/.exec(migration)?.[1] ?? ''

describe('EcoFlow reading columns', () => {
  it('are the columns of ecoflow_measurements between ts and raw, in table order', () => {
    const columns = table
      .split('\n')
      .map((l) => /^\s+(\w+)\s/.exec(l)?.[1])
      .filter((c) => c !== undefined)
    assert.ok(
      columns.includes('device_sn') && columns.includes('raw'),
      'positive control: the table was read',
    )
    assert.deepEqual(columns.slice(columns.indexOf('ts') + 1, columns.indexOf('raw')), [
      ...ECOFLOW_READING_COLUMNS,
    ])
  })

  it('the integer ones are the quota columns the table declares INTEGER', () => {
    const integer = table
      .split('\n')
      .map((l) => /^\s+(\w+)\s+INTEGER\b/.exec(l)?.[1])
      .filter((c) => c !== undefined)
    assert.ok(integer.includes('soc_percent'), 'positive control: the types were read')
    assert.deepEqual(
      [...ECOFLOW_INTEGER_COLUMNS].sort(),
      integer.filter((c) => (ECOFLOW_QUOTA_COLUMNS as readonly string[]).includes(c)).sort(),
    )
  })
})
