import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { parseRange } from './download.js'

describe('parseRange', () => {
  const size = 1000
  const table: Array<[string | undefined, ReturnType<typeof parseRange>]> = [
    [undefined, undefined],
    ['bytes=0-99', { start: 0, end: 99 }],
    ['bytes=500-', { start: 500, end: 999 }],
    ['bytes=-100', { start: 900, end: 999 }],
    ['bytes=-5000', { start: 0, end: 999 }],
    ['bytes=900-5000', { start: 900, end: 999 }],
    ['bytes=999-999', { start: 999, end: 999 }],
    ['bytes=1000-', 'unsatisfiable'],
    ['bytes=-0', 'unsatisfiable'],
    ['bytes=5-2', undefined],
    ['bytes=0-1,5-9', undefined],
    ['items=0-9', undefined],
    ['bytes=-', undefined],
    ['bytes=abc-def', undefined],
    ['bytes=99999999999999999999-', 'unsatisfiable'],
  ]
  for (const [header, want] of table)
    it(`${JSON.stringify(header)} → ${JSON.stringify(want)}`, () =>
      assert.deepEqual(parseRange(header, size), want))
})
