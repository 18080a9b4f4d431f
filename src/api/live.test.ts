import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createLiveHub, topicMatches, validFilter } from './live.js'

describe('live hub', () => {
  const matches: Array<[string, string, boolean]> = [
    ['#', 'paku/edge/x/status', true],
    ['paku/+/+/data', 'paku/sensors/ruuvi/data', true],
    ['paku/+/+/data', 'paku/edge/x/status', false],
    ['paku/edge/#', 'paku/edge', true],
    ['paku/edge/+', 'paku/edge/x/status', false],
    ['paku/edge/x/status', 'paku/edge/x/status', true],
  ]
  for (const [f, topic, want] of matches)
    it(`${f} ${want ? 'matches' : 'does not match'} ${topic}`, () =>
      assert.equal(topicMatches(f, topic), want))

  it('rejects malformed filters', () => {
    for (const f of ['', 'a/#/b', 'a/b#', 'a/+b', 'x'.repeat(300)])
      assert.equal(validFilter(f), false, f)
    for (const f of ['#', '+', 'a/+/c/#']) assert.equal(validFilter(f), true, f)
  })

  it('drops for a full listener, counts, and tells it once there is room again', () => {
    const hub = createLiveHub()
    const got: string[] = []
    let room = 2
    hub.listen(
      '#',
      (e) => (room-- > 0 ? (got.push(e), true) : false),
      () => undefined,
    )
    for (let i = 0; i < 5; i++) hub.push({ topic: `t/${i}`, payload: Buffer.from(String(i)) })
    assert.equal(got.length, 2)
    room = 10
    hub.push({ topic: 't/5', payload: Buffer.from('5') })
    assert.match(got[2] ?? '', /^event: dropped\ndata: \{"dropped":3\}/)
    assert.match(got[3] ?? '', /"topic":"t\/5"/)
  })

  it('truncates large payloads and closes every listener on closeAll', () => {
    const hub = createLiveHub()
    const got: string[] = []
    let closed = 0
    hub.listen(
      '#',
      (e) => (got.push(e), true),
      () => closed++,
    )
    hub.push({ topic: 'big', payload: Buffer.alloc(100_000, 'a') })
    assert.ok((got[0] ?? '').length < 3000)
    hub.closeAll()
    assert.equal(closed, 1)
    assert.equal(hub.stats().listeners, 0)
  })
})
