/** One Prometheus metric family; subsystems describe theirs and http renders them. */
export type Metric = {
  name: string
  help: string
  type: 'counter' | 'gauge' | 'histogram'
  /** A histogram's samples carry the suffix of the series they belong to (_bucket, _sum, _count). */
  samples: Array<{ suffix?: '_bucket' | '_sum' | '_count'; labels?: Record<string, string>; value: number }>
}

/** A counter with one unlabelled sample. */
export const counter = (name: string, help: string, value: number): Metric => ({ name, help, type: 'counter', samples: [{ value }] })

/** A gauge with one unlabelled sample. */
export const gauge = (name: string, help: string, value: number): Metric => ({ name, help, type: 'gauge', samples: [{ value }] })
