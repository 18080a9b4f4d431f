/** Grafana's PostgreSQL macros, expanded the way Grafana does, for tests and the dashboard benchmark. */
export type Expansion = {
  from: string
  to: string
  intervalSeconds: number
  vars: Record<string, string>
}

const UNIT: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 }

export function expandGrafanaSql(sql: string, e: Expansion): string {
  const seconds = (interval: string) => {
    if (interval.trim() === '$__interval') return e.intervalSeconds
    const m = /^'?(\d+)([smhd])'?$/.exec(interval.trim())
    if (!m) throw new Error(`unknown interval ${interval}`)
    return Number(m[1]) * (UNIT[m[2] as string] as number)
  }
  return sql
    .replace(
      /\$__timeGroupAlias\(([^,]+),\s*([^)]+)\)/g,
      (_, col: string, iv: string) =>
        `to_timestamp(floor(extract(epoch from ${col}) / ${seconds(iv)}) * ${seconds(iv)}) AS "time"`,
    )
    .replace(
      /\$__timeGroup\(([^,]+),\s*([^)]+)\)/g,
      (_, col: string, iv: string) =>
        `to_timestamp(floor(extract(epoch from ${col}) / ${seconds(iv)}) * ${seconds(iv)})`,
    )
    .replace(
      /\$__timeFilter\(([^)]+)\)/g,
      (_, col: string) => `${col} BETWEEN '${e.from}' AND '${e.to}'`,
    )
    .replace(/\$__timeFrom\(\)/g, `'${e.from}'`)
    .replace(/\$__timeTo\(\)/g, `'${e.to}'`)
    .replace(/\$__interval_ms/g, String(e.intervalSeconds * 1000))
    .replace(/'\$(\w+)'/g, (_, v: string) => e.vars[v] ?? `'$${v}'`)
    .replace(/\$\{?(\w+)\}?/g, (m, v: string) => e.vars[v] ?? m)
}

/** The interval Grafana picks: the range over ~1,000 points, rounded to its nice steps. */
export function grafanaInterval(rangeMs: number, maxDataPoints = 1000): number {
  const raw = rangeMs / 1000 / maxDataPoints
  const steps = [
    1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200,
    86400, 604800,
  ]
  return steps.find((s) => s >= raw) ?? 604800
}
