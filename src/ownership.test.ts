/**
 * One owner per table: each table paku creates is written (INSERT, UPDATE, DELETE, TRUNCATE, COPY) by
 * the code of one subsystem only. Where another subsystem's work must land in the same transaction,
 * the owner hands it a function (app.ts wires ingest to OTA's device reports). src/db, which migrates
 * and adopts old databases, is the one exception.
 */
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { describe, it } from 'node:test'

const SRC = import.meta.dirname
const SQL = join(SRC, '..', 'sql')

/** Every path below dir (directories too; the callers keep .ts files). */
const files = (dir: string) =>
  readdirSync(dir, { recursive: true, encoding: 'utf8' }).map((f) => join(dir, f))

/** Tables the migrations create. */
const tables = [
  ...new Set(
    readdirSync(SQL).flatMap((f) =>
      [
        ...readFileSync(join(SQL, f), 'utf8').matchAll(/CREATE TABLE (?:IF NOT EXISTS )?(\w+)/g),
      ].map((m) => m[1] as string),
    ),
  ),
]

/** Program code (no tests, no test-support modules): the subsystem is the first folder under src/. */
const program = files(SRC).filter(
  (f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && relative(SRC, f).includes('/'),
)

/** Subsystems whose code writes each table, from the statements in their sources. */
export function writers(
  sources: Array<{ subsystem: string; text: string }>,
  names: readonly string[],
): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>(names.map((t) => [t, new Set()]))
  for (const { subsystem, text } of sources) {
    for (const t of names) {
      if (
        new RegExp(
          `\\b(INSERT INTO|UPDATE|DELETE FROM|TRUNCATE|COPY|insertInto\\(|updateTable\\(|deleteFrom\\()\\s*'?${t}\\b`,
        ).test(text)
      )
        out.get(t)?.add(subsystem)
    }
  }
  return out
}

describe('table ownership', () => {
  it('finds every writer of a table (positive control)', () => {
    const w = writers(
      [
        { subsystem: 'a', text: 'INSERT INTO t (x)' },
        { subsystem: 'b', text: "db.updateTable('t')" },
        { subsystem: 'c', text: 'SELECT * FROM t' },
      ],
      ['t'],
    )
    assert.deepEqual([...(w.get('t') ?? [])], ['a', 'b'])
  })

  it('each table is written by one subsystem (src/db, which migrates and adopts, aside)', () => {
    assert.ok(
      tables.length > 25 && tables.includes('devices'),
      'positive control: the migrations were read',
    )
    const sources = program.map((f) => ({
      subsystem: relative(SRC, f).split('/')[0] as string,
      text: readFileSync(f, 'utf8'),
    }))
    const shared = [...writers(sources, tables)]
      .map(([t, s]) => [t, [...s].filter((x) => x !== 'db').sort()] as const)
      .filter(([, s]) => s.length > 1)
    assert.deepEqual(shared, [])
    const devices = writers(sources, ['devices', 'ota_events', 'device_update_status'])
    assert.deepEqual(
      [...devices.values()].map((s) => [...s]),
      [['ota'], ['ota'], ['ota']],
      "the device registry and OTA history are OTA's",
    )
  })
})

describe('module boundaries', () => {
  const imports = (text: string) =>
    [...text.matchAll(/(?:from|import)\s*\(?\s*'([^']+)'/g)].map((m) => m[1] as string)
  it("reads a module's imports (positive control)", () => {
    assert.deepEqual(
      imports(
        "import a from '../x.js'\nimport type { B } from 'b'\nconst c = await import('../../scripts/y.js')",
      ),
      ['../x.js', 'b', '../../scripts/y.js'],
    )
  })
  it('program code never imports test support (scripts/, test helpers, fakes)', () => {
    const all = files(SRC).filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts'))
    assert.ok(all.length > 80, 'positive control: the program was read')
    const bad = all.flatMap((f) =>
      imports(readFileSync(f, 'utf8'))
        .filter((i) => i.includes('/scripts/') || /test-helpers|test-support/.test(i))
        .map((i) => `${relative(SRC, f)}: ${i}`),
    )
    assert.deepEqual(bad, [])
  })
})
