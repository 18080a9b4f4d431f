import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import type pg from 'pg'
import { sqlClient, testDatabase } from '../../scripts/test-helpers.js'
import { intArray, textArray } from './arrays.js'

const client = async (t: Parameters<typeof testDatabase>[0]): Promise<pg.Client> =>
  sqlClient(t, await testDatabase(t))

// What PostgreSQL reads back from the literal, element by element, with NULLs told apart from the text "NULL".
async function readText(c: pg.Client, literal: string): Promise<Array<string | null>> {
  const r = await c.query<{ v: string | null; ord: string }>(
    'SELECT v, ord FROM unnest($1::text[]) WITH ORDINALITY AS u(v, ord) ORDER BY ord',
    [literal],
  )
  return r.rows.map((x) => x.v)
}

describe('array literals for unnest columns', () => {
  it('round-trips hostile text through PostgreSQL: quotes, backslashes, braces, commas, "NULL", empty, spaces, newlines, unicode', async (t) => {
    const c = await client(t)
    const hostile = [
      'plain',
      '',
      ' ',
      ' padded ',
      'NULL',
      'null',
      '"',
      '\\',
      '\\"',
      'a"b\\c',
      '{',
      '}',
      '{a,b}',
      'a,b',
      '\n',
      'tab\there',
      'ümlaut 😀',
      "it's",
    ]
    assert.deepEqual(await readText(c, textArray(hostile)), hostile)
    assert.deepEqual(await readText(c, textArray(['a', null, 'NULL', null])), [
      'a',
      null,
      'NULL',
      null,
    ])
    assert.deepEqual(await readText(c, textArray(['ESP32-AABBCCDD', 'heater'])), [
      'ESP32-AABBCCDD',
      'heater',
    ])
    assert.deepEqual(await readText(c, textArray([])), [])
  })

  it('round-trips any string without NUL (which PostgreSQL text cannot hold), in any mix with NULLs', async (t) => {
    const c = await client(t)
    const element = fc.oneof(
      fc.constant(null),
      fc.string({ unit: 'binary' }).map((s) => s.replaceAll('\u0000', '')),
    )
    await fc.assert(
      fc.asyncProperty(fc.array(element, { maxLength: 20 }), async (values) => {
        assert.deepEqual(await readText(c, textArray(values)), values)
      }),
      { numRuns: 200 },
    )
  })

  it('writes integers as they are and anything else as NULL, so PostgreSQL refuses that row as data', async (t) => {
    const c = await client(t)
    const ints = [0, -1, 32767, 2 ** 53 - 1, -(2 ** 53 - 1)]
    const r = await c.query<{ v: string }>('SELECT v::text FROM unnest($1::int8[]) AS v', [
      intArray(ints),
    ])
    assert.deepEqual(
      r.rows.map((x) => Number(x.v)),
      ints,
    )
    assert.equal(intArray([]), '{}')
    const mixed = await c.query<{ v: string | null }>(
      'SELECT v::text FROM unnest($1::int8[]) AS v',
      [intArray([1, Number.NaN, 1.5, Infinity, 2])],
    )
    assert.deepEqual(
      mixed.rows.map((x) => x.v),
      ['1', null, null, null, '2'],
    )
  })
})
