// Time-series charts with uPlot (served from node_modules as /ui/uplot.js; global `uPlot`). One chart
// per metric: the bucket averages as a line, with a gap where buckets are missing (a device that was
// off is not drawn as a straight line across the outage).
import { el, fmt, label, unitOf } from './util.js'

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim()

/** Points [{t, value}] as uPlot's columns, with a null after every gap longer than 1.5 buckets. */
export function columns(points, bucketMs) {
  const xs = []
  const ys = []
  let prev = null
  for (const p of points) {
    const t = Date.parse(p.t)
    const v = typeof p.value === 'number' ? p.value : null
    if (prev !== null && t - prev > 1.5 * bucketMs) {
      xs.push((prev + bucketMs) / 1000)
      ys.push(null)
    }
    xs.push(t / 1000)
    ys.push(v)
    prev = t
  }
  return [xs, ys]
}

/**
 * Draws one metric's chart into a new card appended to `parent`; returns the card. `range` is
 * [from, to] in ms, so every chart of a page spans the same time even where data is missing.
 */
export function chartCard(parent, o) {
  const { metric, points, bucketMs, range, rangeLabel } = o
  const card = el('figure', null, { class: 'chart' })
  const unit = unitOf(metric)
  const cap = el('figcaption')
  cap.append(
    el('span', label(metric), { class: 'chart-title' }),
    el('span', unit, { class: 'muted' }),
  )
  card.append(cap)
  const plot = el('div', null, { class: 'plot' })
  card.append(plot)
  parent.append(card)
  const [xs, ys] = columns(points, bucketMs)
  const numbers = ys.filter((v) => v !== null)
  // The canvas is an image to a screen reader: it gets the numbers it shows.
  plot.setAttribute('role', 'img')
  plot.setAttribute(
    'aria-label',
    numbers.length === 0
      ? `${label(metric)}: no data in the last ${rangeLabel}`
      : `${label(metric)} over the last ${rangeLabel}: ${numbers.length} points, from ${fmt(Math.min(...numbers), metric)} to ${fmt(Math.max(...numbers), metric)}, latest ${fmt(numbers[numbers.length - 1], metric)}`,
  )
  if (numbers.length === 0) {
    plot.append(el('p', `No data in the last ${rangeLabel}.`, { class: 'muted nodata' }))
    return card
  }
  const accent = css('--accent') || '#0a58ca'
  const muted = css('--muted') || '#57606a'
  const line = css('--line') || '#d0d7de'
  const width = Math.max(200, plot.clientWidth || parent.clientWidth || 300)
  const opts = {
    width,
    height: 170,
    scales: { x: { time: true, range: () => [range[0] / 1000, range[1] / 1000] } },
    series: [
      {},
      // Dots only where there are few points (a device that just started): a lone bucket has no line.
      {
        label: label(metric),
        stroke: accent,
        width: 1.5,
        fill: `${accent}1f`,
        spanGaps: false,
        points: { show: numbers.length < 60, size: 5, fill: accent },
        value: (_u, v) => (v === null || v === undefined ? '–' : fmt(v, metric)),
      },
    ],
    axes: [
      { stroke: muted, grid: { stroke: line, width: 1 }, ticks: { stroke: line } },
      {
        stroke: muted,
        grid: { stroke: line, width: 1 },
        ticks: { stroke: line },
        size: 48,
        space: 24,
        values: (_u, vals) =>
          vals.map((v) =>
            Math.abs(v) >= 10000 ? `${Math.round(v / 1000)}k` : String(+v.toPrecision(4)),
          ),
      },
    ],
    legend: { show: true, live: true },
    cursor: { drag: { x: false, y: false } },
  }
  const u = new uPlot(opts, [xs, ys], plot)
  // Charts follow their card's width (phones rotate, sidebars open).
  const ro = new ResizeObserver(() => {
    const w = plot.clientWidth
    if (w > 0 && Math.abs(w - u.width) > 4) u.setSize({ width: w, height: 170 })
  })
  ro.observe(plot)
  card.destroy = () => {
    ro.disconnect()
    u.destroy()
  }
  return card
}
