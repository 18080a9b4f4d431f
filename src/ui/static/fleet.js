// The fleet overview: every device paku knows (edge devices, sensors, heaters, fridges, EcoFlow
// stations) with online state, last seen, firmware, battery, signal and its key readings. Filters and
// sorting run in the page, on the list the server sent; the list refreshes every 5 s.
import { $, ago, api, deviceHref, el, fill, fmt, label, row, say } from './util.js'

const COLUMNS = [
  'Device',
  'State',
  'Firmware',
  'Kind',
  'Site',
  'Battery',
  'Signal',
  'Readings',
  'Last seen',
]
/** Readings worth a glance, in order; a device without any of them shows its first numeric ones. */
const KEY_READINGS = [
  'temperature_c',
  'humidity_percent',
  'coolant_temp_c',
  'heater_state',
  'soc_percent',
  'watts_in_sum',
  'watts_out_sum',
  'pressure_hpa',
  'active_scenario',
  'flow_lpm',
]
const HIDDEN = new Set([
  'battery_mv',
  'battery_v',
  'battery_percent',
  'signal_strength_dbm',
  'rssi',
  'wifi_rssi',
  'uptime_seconds',
  'error',
])
const KINDS = {
  edge: 'edge device',
  sensor: 'sensor',
  heater: 'heater',
  fridge: 'fridge',
  ecoflow: 'EcoFlow station',
  other: 'device',
}

let items = []
let timer = null

function keyReadings(d) {
  const names = Object.keys(d.readings)
  const chosen = KEY_READINGS.filter((n) => n in d.readings)
  for (const n of names)
    if (
      chosen.length < 3 &&
      !chosen.includes(n) &&
      !HIDDEN.has(n) &&
      typeof d.readings[n].value === 'number'
    )
      chosen.push(n)
  return chosen
    .slice(0, 3)
    .map((n) => `${label(n)} ${fmt(d.readings[n].value, n)}`)
    .join(' · ')
}

const withUnit = (r) => (r ? `${fmt(r.value)} ${r.unit}` : '')

function render() {
  const q = $('fleet-q').value.trim().toLowerCase()
  const site = $('fleet-site').value
  const system = $('fleet-system').value
  const sort = $('fleet-sort').value
  let list = items.filter((d) => {
    if (site && (d.site_id ?? '(EcoFlow account)') !== site) return false
    if (system && !d.systems.includes(system)) return false
    if (!q) return true
    return [d.device_id, d.location, d.model, d.kind, d.site_id, d.via, ...d.systems].some(
      (x) => x && x.toLowerCase().includes(q),
    )
  })
  const seen = (d) => (d.last_seen ? Date.parse(d.last_seen) : 0)
  if (sort === 'name') list = [...list].sort((a, b) => a.device_id.localeCompare(b.device_id))
  else if (sort === 'seen-asc') list = [...list].sort((a, b) => seen(a) - seen(b))
  else list = [...list].sort((a, b) => seen(b) - seen(a))
  const now = Date.now()
  const rows = list.map((d) => {
    const name = el('a', d.device_id, { href: deviceHref(d) })
    const state = el('span', d.online ? 'online' : 'offline', {
      class: `state ${d.online ? 'on' : 'off'}`,
    })
    const kind = d.via ? `${KINDS[d.kind] || d.kind} via ${d.via}` : KINDS[d.kind] || d.kind
    const site = d.site_id === null ? '–' : `${d.site_id} / ${d.systems.join(', ')}`
    return row(
      [
        name,
        state,
        d.firmware || '',
        kind,
        site,
        withUnit(d.battery),
        withUnit(d.signal),
        keyReadings(d),
        ago(d.last_seen, now),
      ],
      COLUMNS,
    )
  })
  fill(
    'devices-body',
    rows,
    items.length === 0
      ? 'No devices yet. Make some talk: npm run paku -- emulate ruuvi'
      : 'No device matches the filters.',
  )
  const online = list.filter((d) => d.online).length
  say('fleet-summary', `${list.length} of ${items.length} devices, ${online} online`)
}

/** Keeps a select's options in step with the values present, without losing the choice. */
function options(select, values, all) {
  const chosen = select.value
  select.replaceChildren(
    el('option', all, { value: '' }),
    ...values.map((v) => el('option', v, { value: v })),
  )
  select.value = values.includes(chosen) ? chosen : ''
}

async function load() {
  try {
    const r = await api('GET', '/api/v1/fleet')
    items = r.items
    options(
      $('fleet-site'),
      [...new Set(items.map((d) => d.site_id ?? '(EcoFlow account)'))].sort(),
      'All sites',
    )
    options($('fleet-system'), [...new Set(items.flatMap((d) => d.systems))].sort(), 'All systems')
    render()
    if (r.truncated)
      say('fleet-summary', `Showing the first ${r.max} devices: filter to see the rest.`, true)
  } catch (err) {
    fill('devices-body', [], `Could not load: ${err.message}`)
  }
}

for (const id of ['fleet-q', 'fleet-site', 'fleet-system', 'fleet-sort'])
  $(id).addEventListener('input', render)
$('fleet-filters').addEventListener('submit', (e) => e.preventDefault())

export const fleetPage = {
  enter() {
    void load()
    // Online state and readings change on their own.
    timer = setInterval(() => void load(), 5000)
  },
  leave() {
    clearInterval(timer)
  },
  refresh: load,
}
