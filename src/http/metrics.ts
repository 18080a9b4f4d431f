import type { Metric } from '../util/metric.js'

export { histogramMetric, type Metric } from '../util/metric.js'

/** Prometheus text exposition format 0.0.4 (what every Prometheus, VictoriaMetrics and Telegraf scrape). */
export function renderMetrics(metrics: readonly Metric[]): string {
  const lines: string[] = []
  for (const m of metrics) {
    lines.push(`# HELP ${m.name} ${m.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`)
    lines.push(`# TYPE ${m.name} ${m.type}`)
    for (const s of m.samples)
      lines.push(
        `${m.name}${s.suffix ?? ''}${labels(s.labels)} ${Number.isFinite(s.value) ? s.value : 'NaN'}`,
      )
  }
  return `${lines.join('\n')}\n`
}

function labels(l: Record<string, string> | undefined): string {
  if (!l || Object.keys(l).length === 0) return ''
  const parts = Object.entries(l).map(
    ([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}"`,
  )
  return `{${parts.join(',')}}`
}
