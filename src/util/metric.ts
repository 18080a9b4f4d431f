import type { HistogramSnapshot } from './histogram.js'

/** One Prometheus metric family; subsystems describe theirs and http renders them. */
export type Metric = {
  name: string
  help: string
  type: 'counter' | 'gauge' | 'histogram'
  /** A histogram's samples carry the suffix of the series they belong to (_bucket, _sum, _count). */
  samples: Array<{
    suffix?: '_bucket' | '_sum' | '_count'
    labels?: Record<string, string>
    value: number
  }>
}

/** A counter with one unlabelled sample. */
export const counter = (name: string, help: string, value: number): Metric => ({
  name,
  help,
  type: 'counter',
  samples: [{ value }],
})

/** A gauge with one unlabelled sample. */
export const gauge = (name: string, help: string, value: number): Metric => ({
  name,
  help,
  type: 'gauge',
  samples: [{ value }],
})

/** A histogram as Prometheus wants it: cumulative buckets, le="+Inf" equal to the count, then sum and count. */
export function histogramMetric(name: string, help: string, h: HistogramSnapshot): Metric {
  let cumulative = 0
  const buckets = h.bounds.map((le, i) => {
    cumulative += h.counts[i] ?? 0
    return { suffix: '_bucket' as const, labels: { le: String(le) }, value: cumulative }
  })
  return {
    name,
    help,
    type: 'histogram',
    samples: [
      ...buckets,
      { suffix: '_bucket', labels: { le: '+Inf' }, value: h.count },
      { suffix: '_sum', value: h.sum },
      { suffix: '_count', value: h.count },
    ],
  }
}
