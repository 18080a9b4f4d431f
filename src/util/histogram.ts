/** A histogram's state: observations counted per upper bound (not cumulative), their sum and count. */
export type HistogramSnapshot = {
  bounds: readonly number[]
  counts: readonly number[]
  sum: number
  count: number
}

/**
 * Counts observations per upper bound, for a Prometheus histogram (http's histogramMetric makes the
 * buckets cumulative). What falls above the last bound only adds to the sum and the count.
 */
export function createHistogram(bounds: readonly number[]) {
  const counts = bounds.map(() => 0)
  let sum = 0
  let count = 0
  return {
    observe(value: number): void {
      const i = bounds.findIndex((le) => value <= le)
      if (i >= 0) counts[i] = (counts[i] ?? 0) + 1
      sum += value
      count++
    },
    snapshot(): HistogramSnapshot {
      return { bounds, counts: [...counts], sum, count }
    },
  }
}
