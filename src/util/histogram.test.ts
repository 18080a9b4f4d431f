import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { createHistogram } from './histogram.js'

describe('histogram', () => {
  it('counts each value in the first bucket whose bound it does not exceed; above the last only in sum and count', () => {
    const h = createHistogram([0.1, 1])
    for (const v of [0.05, 0.1, 0.5, 1, 7]) h.observe(v)
    assert.deepEqual(h.snapshot(), { bounds: [0.1, 1], counts: [2, 2], sum: 8.65, count: 5 })
  })

  it('hands out a copy: a snapshot does not change with later observations', () => {
    const h = createHistogram([1])
    const before = h.snapshot()
    h.observe(0.5)
    assert.deepEqual(before.counts, [0])
    assert.deepEqual(h.snapshot().counts, [1])
  })
})
