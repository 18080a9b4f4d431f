import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { addressKey } from '../util/address.js'
import { createRateLimiter } from './rate-limit.js'

describe('device route rate limiter', () => {
  it('allows limit requests per window, then says how long to wait, then allows again in the next window', () => {
    let t = 1000
    const l = createRateLimiter({ limit: 3, windowMs: 60_000, now: () => t })
    assert.deepEqual([l.hit('a'), l.hit('a'), l.hit('a')], [0, 0, 0])
    t += 15_000
    assert.equal(l.hit('a'), 45_000, 'the fourth waits for the window to end')
    assert.equal(l.hit('a'), 45_000)
    t += 45_000
    assert.equal(l.hit('a'), 0, 'a new window')
  })

  it('counts each key on its own', () => {
    const l = createRateLimiter({ limit: 1, now: () => 0 })
    assert.equal(l.hit('a'), 0)
    assert.ok(l.hit('a') > 0)
    assert.equal(l.hit('b'), 0, 'another address is unaffected')
  })

  it('shares one budget across a /64 and between an IPv4 address and its mapped IPv6 form', () => {
    const l = createRateLimiter({ limit: 2, now: () => 0 })
    const hit = (ip: string) => l.hit(addressKey(ip))
    assert.equal(hit('2001:db8:1:2::1'), 0)
    assert.equal(hit('2001:db8:1:2::2'), 0)
    assert.ok(hit('2001:db8:1:2:abcd::9') > 0, 'a third address of the same /64 is over the limit')
    assert.equal(hit('2001:db8:1:3::1'), 0, 'the next /64 is not')
    assert.equal(hit('192.0.2.7'), 0)
    assert.equal(hit('::ffff:192.0.2.7'), 0)
    assert.ok(hit('192.0.2.7') > 0, 'the mapped form spent the same budget')
    assert.equal(hit('192.0.2.8'), 0)
  })

  it('holds at most maxKeys keys: ended windows are swept, and a flood evicts the oldest', () => {
    let t = 0
    const l = createRateLimiter({ limit: 1, windowMs: 1000, maxKeys: 100, now: () => t })
    for (let i = 0; i < 100; i++) l.hit(`old-${i}`)
    assert.equal(l.size(), 100)
    t = 2000
    l.hit('fresh')
    assert.equal(l.size(), 1, 'ended windows went at the first insert after a full window')
    for (let i = 0; i < 1000; i++) l.hit(`flood-${i}`)
    assert.ok(l.size() <= 100, `size ${l.size()}`)
    assert.ok(l.hit('flood-999') > 0, 'the newest keys are still counted')
  })
})
