import assert from 'node:assert/strict'
import { createRequire } from 'node:module'
import { describe, it } from 'node:test'

type Debug = ((...args: unknown[]) => void) & {
  enabled: boolean
  namespace: string
  extend(ns: string): Debug
}
type Factory = ((namespace: string) => Debug) & {
  enable(namespaces: string): void
  disable(): string
  enabled(namespace: string): boolean
  names: string[]
  default: unknown
  debug: unknown
}
const debug = createRequire(import.meta.url)('./debug-when-enabled.cjs') as Factory

describe("the executable's stand-in for debug", () => {
  it("gives a namespace DEBUG does not enable a function that does nothing, and an enabled one debug's own", (t) => {
    t.after(() => debug.disable())
    debug.disable()
    const off = debug('paku-test:off')
    assert.equal(off.enabled, false)
    assert.equal(off('ignored %o', { a: 1 }), undefined)
    assert.equal(off.extend('sub'), off)
    assert.equal(
      debug('paku-test:other'),
      off,
      'one shared function: nothing is made per namespace',
    )

    debug.enable('paku-test:on*')
    assert.equal(debug.enabled('paku-test:on'), true)
    const on = debug('paku-test:on')
    assert.equal(on.enabled, true)
    assert.equal(on.namespace, 'paku-test:on')
    const lines: string[] = []
    const write = process.stderr.write
    process.stderr.write = ((chunk: string) => (
      lines.push(String(chunk)),
      true
    )) as typeof process.stderr.write
    try {
      on('hello %s', 'there')
    } finally {
      process.stderr.write = write
    }
    assert.match(lines.join(''), /paku-test:on hello there/)
    assert.equal(debug('paku-test:off').enabled, false)
  })

  it("reads debug's state through instead of a copy taken at load", (t) => {
    t.after(() => debug.disable())
    debug.enable('paku-test:first')
    assert.deepEqual(debug.names, ['paku-test:first'])
    // enable() replaces debug's arrays: a copy of them would still say 'paku-test:first'.
    debug.enable('paku-test:second')
    assert.deepEqual(debug.names, ['paku-test:second'])
    assert.equal(debug.default, debug)
    assert.equal(debug.debug, debug)
  })
})
