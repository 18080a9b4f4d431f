import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createFailureLimiter } from './failure-limiter.js'

describe('failure limiter', () => {
  it('blocks an address after maxFailures within the window, for blockMs, and forgets it afterwards', () => {
    let t = 0
    const l = createFailureLimiter({ maxFailures: 3, windowMs: 1000, blockMs: 5000, now: () => t })
    l.fail('a')
    l.fail('a')
    assert.equal(l.blockedFor('a'), 0)
    l.fail('a')
    assert.equal(l.blockedFor('a'), 5000)
    assert.equal(l.blockedFor('b'), 0, 'other addresses are unaffected')
    t = 5001
    assert.equal(l.blockedFor('a'), 0)
  })
  it('only counts failures inside the window', () => {
    let t = 0
    const l = createFailureLimiter({ maxFailures: 3, windowMs: 1000, now: () => t })
    l.fail('a')
    t = 600
    l.fail('a')
    t = 1200
    l.fail('a')
    assert.equal(l.blockedFor('a'), 0)
  })
  it('a success clears the count', () => {
    const l = createFailureLimiter({ maxFailures: 2 })
    l.fail('a')
    l.succeed('a')
    l.fail('a')
    assert.equal(l.blockedFor('a'), 0)
  })
})
