import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { toCsv } from './csv.js'

describe('toCsv', () => {
  const cases: Array<{ name: string; cell: unknown; want: string }> = [
    { name: 'keeps plain text', cell: 'ruuvi_cabin', want: 'ruuvi_cabin' },
    { name: 'quotes commas and quotes', cell: 'a,"b"', want: '"a,""b"""' },
    { name: 'quotes newlines', cell: 'a\nb', want: '"a\nb"' },
    { name: 'defuses a formula', cell: '=HYPERLINK("x")', want: `"'=HYPERLINK(""x"")"` },
    { name: 'keeps negative numbers', cell: -3.5, want: '-3.5' },
    { name: 'writes dates as ISO', cell: new Date(0), want: '1970-01-01T00:00:00.000Z' },
    { name: 'writes objects as JSON', cell: { t: 1 }, want: '"{""t"":1}"' },
    { name: 'writes null as empty', cell: null, want: '' },
  ]
  for (const c of cases)
    it(c.name, () => assert.equal(toCsv(['x'], [[c.cell]]), `x\r\n${c.want}\r\n`))
})
