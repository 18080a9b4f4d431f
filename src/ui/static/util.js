// Shared by the console's pages: the API client, DOM helpers and formatting. Every value from the
// server goes into the page through textContent or attributes (never innerHTML): device ids, metric
// names and payloads come from devices, not from us.

const KEY = 'paku.adminKey'
export const $ = (id) => document.getElementById(id)

export function key() {
  return sessionStorage.getItem(KEY) || ''
}
export function setKey(k) {
  if (k) sessionStorage.setItem(KEY, k)
  else sessionStorage.removeItem(KEY)
}

/** Called when the server refuses the key (set by app.js: back to the login page). */
let onRefused = () => {}
export function whenRefused(fn) {
  onRefused = fn
}

/** fetch() with the admin key in a header (never in the URL); resolves to JSON, throws Error(message) on a non-2xx answer. */
export async function api(method, path, body, raw) {
  const headers = { 'x-api-key': key() }
  let payload
  if (raw !== undefined) {
    payload = raw
    headers['content-type'] = 'application/octet-stream'
  } else if (body !== undefined) {
    payload = JSON.stringify(body)
    headers['content-type'] = 'application/json'
  }
  const res = await fetch(path, { method, headers, body: payload })
  const text = await res.text()
  let json = {}
  try {
    json = text ? JSON.parse(text) : {}
  } catch {
    json = { message: text }
  }
  if (res.status === 401) onRefused('Your key was refused; log in again.')
  if (!res.ok)
    throw Object.assign(new Error(json.message || `HTTP ${res.status}`), { status: res.status })
  return json
}

/** A query string from an object, leaving out undefined and empty values. */
export function qs(o) {
  const p = new URLSearchParams()
  for (const [k, v] of Object.entries(o))
    if (v !== undefined && v !== null && v !== '') p.set(k, String(v))
  const s = p.toString()
  return s ? `?${s}` : ''
}

export function el(tag, text, attrs) {
  const e = document.createElement(tag)
  if (text !== undefined && text !== null) e.textContent = String(text)
  for (const [k, v] of Object.entries(attrs || {}))
    if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : String(v))
  return e
}

/** A table row; `labels` (the column names) let narrow screens show each cell as a labelled line. */
export function row(cells, labels) {
  const tr = el('tr')
  cells.forEach((c, i) => {
    const td = el('td', null, labels ? { 'data-label': labels[i] } : undefined)
    if (c instanceof Node) td.append(c)
    else td.textContent = c === null || c === undefined ? '' : String(c)
    tr.append(td)
  })
  return tr
}

/** A table head of column names. */
export function head(labels) {
  const thead = el('thead')
  const tr = el('tr')
  for (const l of labels) tr.append(el('th', l, { scope: 'col' }))
  thead.append(tr)
  return thead
}

export function fill(tbodyId, rows, empty) {
  const body = typeof tbodyId === 'string' ? $(tbodyId) : tbodyId
  body.replaceChildren(...rows)
  if (rows.length === 0) {
    const tr = el('tr', null, { class: 'empty' })
    tr.append(
      el('td', empty, {
        colspan: String(body.closest('table').querySelectorAll('thead th').length),
      }),
    )
    body.append(tr)
  }
}

export function say(id, text, isError) {
  const p = $(id)
  p.textContent = text
  p.classList.toggle('error', Boolean(isError))
}

export const when = (t) => (t ? new Date(t).toLocaleString() : '')
export const clock = (t) => (t ? new Date(t).toLocaleTimeString() : '')

/** "3 min ago", "2 h ago", "5 d ago", with the exact time as a title. */
export function ago(t, now = Date.now()) {
  if (!t) return el('span', 'never')
  const s = Math.max(0, Math.round((now - new Date(t).getTime()) / 1000))
  const text =
    s < 60
      ? `${s} s ago`
      : s < 3600
        ? `${Math.floor(s / 60)} min ago`
        : s < 86400
          ? `${Math.floor(s / 3600)} h ago`
          : `${Math.floor(s / 86400)} d ago`
  return el('time', text, { datetime: new Date(t).toISOString(), title: when(t) })
}

/** Units by metric name suffix (paku-core's names carry their unit: temperature_c, pressure_hpa, …). */
const UNITS = [
  [/_c$|_temp$|^temp(erature)?$/, '°C'],
  [/_percent$|_pct$|_soc$/, '%'],
  [/_hpa$/, 'hPa'],
  [/_mv$/, 'mV'],
  [/_v$|_vol$|_voltage$/, 'V'],
  [/_ma$/, 'mA'],
  [/_amp$|_a$/, 'A'],
  [/_w$|_watts$|watts_in_sum$|watts_out_sum$/, 'W'],
  [/_lpm$/, 'l/min'],
  [/_dbm$|rssi$/, 'dBm'],
  [/_seconds$|_s$/, 's'],
  [/_min$/, 'min'],
  [/_mg$/, 'mg'],
]
export function unitOf(metric) {
  for (const [re, unit] of UNITS) if (re.test(metric)) return unit
  return ''
}

/** Names of the readings that are not obvious from their key. */
const LABELS = {
  soc_percent: 'State of charge',
  watts_in_sum: 'Power in',
  watts_out_sum: 'Power out',
  pv_in_watts: 'Solar in',
  ac_out_watts: 'AC out',
  dc_out_watts: 'DC out',
  remain_time_min: 'Time left',
  bms_temp: 'Battery temperature',
  wifi_rssi: 'Wi-Fi signal',
  signal_strength_dbm: 'Wi-Fi signal',
  uptime_seconds: 'Uptime',
  battery_mv: 'Battery',
  battery_v: 'Battery',
  safety_ok: 'Safety OK',
  uart_online: 'UART online',
}

/** A metric name for people: temperature_c → Temperature, coolant_temp_c → Coolant temp. */
export function label(metric) {
  if (LABELS[metric]) return LABELS[metric]
  const base = metric.replace(/_(c|percent|pct|hpa|mv|v|w|lpm|dbm|seconds|s|min|mg|ma)$/, '')
  const words = base.replace(/_/g, ' ').trim()
  return words.charAt(0).toUpperCase() + words.slice(1)
}

export function fmt(value, metric) {
  if (value === null || value === undefined) return '–'
  if (typeof value === 'number') {
    const unit = unitOf(metric || '')
    const abs = Math.abs(value)
    const n =
      abs >= 1000 || Number.isInteger(value)
        ? Math.round(value).toLocaleString()
        : abs >= 100
          ? value.toFixed(1)
          : abs >= 10
            ? value.toFixed(1)
            : value.toFixed(2)
    return unit ? `${n} ${unit}` : n
  }
  if (typeof value === 'boolean') return value ? 'yes' : 'no'
  return String(value)
}

/** Pretty JSON if the text is JSON, else the text. */
export function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2)
  } catch {
    return text
  }
}

/** The hash route: `#device/paku/ruuvi_cabin?range=7d` → { name: 'device', parts: ['paku', 'ruuvi_cabin'], params }. */
export function route() {
  const raw = location.hash.slice(1)
  const [path, query] = raw.split('?')
  const [name, ...parts] = path.split('/')
  return {
    name: name || 'devices',
    parts: parts.map((p) => decodeURIComponent(p)),
    params: new URLSearchParams(query || ''),
  }
}

export function deviceHref(d) {
  return d.kind === 'ecoflow' || d.site_id === null
    ? `#station/${encodeURIComponent(d.device_id)}`
    : `#device/${encodeURIComponent(d.site_id)}/${encodeURIComponent(d.device_id)}`
}
