// One page per device: its latest values and a chart per metric (24 h, 7 d, 30 d, 1 y from the
// rollups), beside its firmware and rollout history, its commands with their acknowledgements, its
// MQTT connection and session, and (edge devices) its status and configuration history. An EcoFlow
// station also shows its power flow and switches.
import {
  $,
  ago,
  api,
  clock,
  deviceHref,
  el,
  fill,
  fmt,
  head,
  label,
  qs,
  row,
  say,
  when,
} from './util.js'
import { chartCard } from './chart.js'

const DAY = 86_400_000
/** Each range's bucket: about 300–1,500 points, read from rollup_5m, rollup_1h or rollup_6h. */
const RANGES = {
  '24h': { ms: DAY, bucket: '5m', bucketMs: 300_000, text: '24 hours' },
  '7d': { ms: 7 * DAY, bucket: '1h', bucketMs: 3_600_000, text: '7 days' },
  '30d': { ms: 30 * DAY, bucket: '1h', bucketMs: 3_600_000, text: '30 days' },
  '1y': { ms: 365 * DAY, bucket: '6h', bucketMs: 21_600_000, text: 'year' },
}
/** Metrics shown first, in this order; the rest follow by name. */
const FIRST = [
  'temperature_c',
  'humidity_percent',
  'pressure_hpa',
  'coolant_temp_c',
  'core_temp_c',
  'soc_percent',
  'watts_in_sum',
  'watts_out_sum',
  'pv_in_watts',
  'battery_v',
  'battery_mv',
  'signal_strength_dbm',
]
const KINDS = {
  edge: 'Edge device',
  sensor: 'Sensor',
  heater: 'Heater',
  fridge: 'Fridge',
  ecoflow: 'EcoFlow station',
  other: 'Device',
}
const SCENARIOS = ['default', 'heater_active', 'power_save']

let page = {
  generation: 0,
  timer: null,
  chartTimer: null,
  ackTimer: null,
  charts: [],
  device: null,
  range: '24h',
  route: null,
}

/** Stops this page's timers and charts; a late answer of an earlier visit finds its generation stale. */
function reset() {
  page.generation++
  clearInterval(page.timer)
  clearInterval(page.chartTimer)
  clearTimeout(page.ackTimer)
  for (const c of page.charts) c.destroy?.()
  page.charts = []
}

/** The device of a route; a link that guessed the site (a rollout knows only the id) finds a device of another site when the id is unique. */
async function findDevice(r) {
  if (r.name === 'station')
    return (
      (
        await api('GET', `/api/v1/fleet${qs({ device_id: r.parts[0], system: 'ecoflow' })}`)
      ).items.find((d) => d.site_id === null) ?? null
    )
  const [site, id] = r.parts
  const exact = (await api('GET', `/api/v1/fleet${qs({ site_id: site, device_id: id })}`)).items[0]
  if (exact) return exact
  const items = (await api('GET', `/api/v1/fleet${qs({ device_id: id })}`)).items.filter(
    (d) => d.site_id !== null,
  )
  return items.length === 1 ? items[0] : null
}

function renderHeader(d) {
  $('device-h').textContent =
    d.location && d.location !== d.device_id ? `${d.device_id} (${d.location})` : d.device_id
  const state = $('device-state')
  state.replaceChildren(
    el('span', d.online ? 'online' : 'offline', { class: `state ${d.online ? 'on' : 'off'}` }),
    ' last seen ',
    ago(d.last_seen),
  )
  const facts = []
  facts.push(KINDS[d.kind] || d.kind)
  if (d.site_id !== null) facts.push(`site ${d.site_id}`, `system ${d.systems.join(', ')}`)
  if (d.model) facts.push(`model ${d.model}`)
  if (d.firmware) facts.push(`firmware ${d.firmware}`)
  if (d.battery) facts.push(`battery ${fmt(d.battery.value)} ${d.battery.unit}`)
  if (d.signal) facts.push(`signal ${d.signal.value} dBm`)
  const p = $('device-facts')
  p.replaceChildren(facts.join(' · '))
  if (d.via)
    p.append(
      ' · relayed by ',
      el('a', d.via, {
        href: `#device/${encodeURIComponent(d.site_id)}/${encodeURIComponent(d.via)}`,
      }),
    )
}

function renderTiles(d) {
  // The charted (numeric) readings in chart order, then states such as heater_state.
  const charted = chartedMetrics(d)
  const names = [
    ...charted,
    ...Object.keys(d.readings)
      .filter((n) => !charted.includes(n))
      .sort(),
  ]
  const tiles = names.map((name) => {
    const r = d.readings[name]
    const tile = el('div', null, { class: 'tile' })
    tile.append(
      el('span', label(name), { class: 'tile-label' }),
      el('strong', fmt(r.value, name)),
      ago(r.at),
    )
    return tile
  })
  $('device-tiles').replaceChildren(...tiles)
}

/** An EcoFlow station's power flow: what comes in, the battery, what goes out. */
function renderFlow(d) {
  const box = $('device-flow')
  box.hidden = d.kind !== 'ecoflow'
  if (box.hidden) return
  const v = (n) => d.readings[n]?.value
  const part = (title, main, sub) => {
    const b = el('div', null, { class: 'flow-part' })
    b.append(
      el('span', title, { class: 'tile-label' }),
      el('strong', main),
      el('span', sub, { class: 'muted' }),
    )
    return b
  }
  const hours = v('remain_time_min')
    ? `${Math.floor(v('remain_time_min') / 60)} h ${v('remain_time_min') % 60} min left`
    : ''
  box.replaceChildren(
    part(
      'In',
      fmt(v('watts_in_sum') ?? 0, 'x_w'),
      v('pv_in_watts') !== undefined ? `solar ${fmt(v('pv_in_watts'), 'x_w')}` : '',
    ),
    el('span', '→', { class: 'flow-arrow', 'aria-hidden': 'true' }),
    part('Battery', fmt(v('soc_percent'), 'soc_percent'), hours),
    el('span', '→', { class: 'flow-arrow', 'aria-hidden': 'true' }),
    part(
      'Out',
      fmt(v('watts_out_sum') ?? 0, 'x_w'),
      [
        v('ac_out_watts') !== undefined ? `AC ${fmt(v('ac_out_watts'), 'x_w')}` : '',
        v('dc_out_watts') !== undefined ? `DC ${fmt(v('dc_out_watts'), 'x_w')}` : '',
      ]
        .filter(Boolean)
        .join(', '),
    ),
  )
  box.setAttribute('aria-label', 'Power flow')
}

function chartedMetrics(d) {
  const names = Object.keys(d.readings).filter((n) => typeof d.readings[n].value === 'number')
  const first = FIRST.filter((n) => names.includes(n))
  return [...first, ...names.filter((n) => !first.includes(n)).sort()]
}

/**
 * Fetches every metric's series for the range, one request per source and system (a device's charts
 * come from one or two), and draws one chart each; resolves when all are drawn.
 */
async function renderCharts(d, generation) {
  const range = RANGES[page.range]
  const to = Date.now()
  const from = to - range.ms
  const metrics = chartedMetrics(d)
  const groups = new Map()
  for (const metric of metrics) {
    const r = d.readings[metric]
    const key = `${r.source}/${r.system}`
    if (!groups.has(key)) groups.set(key, { source: r.source, system: r.system, metrics: [] })
    groups.get(key).metrics.push(metric)
  }
  const points = new Map()
  await Promise.all(
    [...groups.values()].map(async (g) => {
      const q = {
        source: g.source,
        metrics: g.metrics.join(','),
        bucket: range.bucket,
        from: new Date(from).toISOString(),
        to: new Date(to).toISOString(),
        device_id: d.device_id,
      }
      if (g.source !== 'ecoflow') q.site_id = d.site_id
      if (g.source === 'measurements') q.system = g.system
      try {
        const s = await api('GET', `/api/v1/measurements/series${qs(q)}`)
        for (const x of s.series) points.set(x.metric, x.points)
      } catch (err) {
        say('device-status', `Could not load the charts: ${err.message}`, true)
      }
    }),
  )
  if (generation !== page.generation) return
  for (const c of page.charts) c.destroy?.()
  const box = $('device-charts')
  box.replaceChildren()
  page.charts = metrics.map((metric) =>
    chartCard(box, {
      metric,
      points: points.get(metric) ?? [],
      bucketMs: range.bucketMs,
      range: [from, to],
      rangeLabel: range.text,
    }),
  )
  if (metrics.length === 0)
    box.append(
      el('p', 'Nothing to chart: this device has sent no numeric readings.', { class: 'muted' }),
    )
}

function renderRanges() {
  for (const b of document.querySelectorAll('#device .ranges button'))
    b.setAttribute('aria-pressed', String(b.dataset.range === page.range))
}

// ---- side panels -----------------------------------------------------------------------------------

const stepsText = (steps) => (steps || []).map((s) => `${s.state} ${clock(s.at)}`).join(' → ')

async function renderOta(d, generation) {
  const box = $('ota-body')
  try {
    const r = await api('GET', `/api/admin/devices/${encodeURIComponent(d.device_id)}/ota`)
    if (generation !== page.generation) return
    const parts = []
    if (r.device)
      parts.push(
        el(
          'p',
          `Running ${r.device.current_firmware_version || 'an unknown version'} (model ${r.device.device_model})${r.device.groups.length ? `; groups ${r.device.groups.join(', ')}` : ''}.`,
        ),
      )
    if (r.actions.length > 0) {
      const table = el('table')
      table.append(el('caption', 'Rollouts that took this device in, newest first'))
      const body = el('tbody')
      for (const a of r.actions)
        body.append(
          row(
            [
              el('a', a.rollout_name, { href: `#rollouts/${a.rollout_id}` }),
              a.firmware_version,
              a.state + (a.detail ? ` (${a.detail})` : ''),
              stepsText(a.steps),
            ],
            ['Rollout', 'Version', 'State', 'Steps'],
          ),
        )
      table.append(head(['Rollout', 'Version', 'State', 'Steps']), body)
      const wrap = el('div', null, { class: 'scroll' })
      wrap.append(table)
      parts.push(wrap)
    }
    if (r.events.length > 0) {
      const list = el('ul', null, { class: 'events' })
      for (const e of r.events.slice(0, 10))
        list.append(
          el(
            'li',
            `${when(e.created_at)} ${e.event_type.replace(/_/g, ' ')}${e.firmware_version ? ` ${e.firmware_version}` : ''}${e.event_data?.reason ? `: ${e.event_data.reason}` : ''}`,
          ),
        )
      parts.push(list)
    }
    if (parts.length === 0)
      parts.push(
        el(
          'p',
          d.kind === 'ecoflow'
            ? 'EcoFlow stations take their firmware from the EcoFlow app, not from paku.'
            : 'No firmware history: this device has reported no model or firmware, and no rollout has taken it in.',
          { class: 'muted' },
        ),
      )
    box.replaceChildren(...parts)
  } catch (err) {
    box.replaceChildren(el('p', `Could not load: ${err.message}`, { class: 'error' }))
  }
}

async function renderCommands(d, generation) {
  if (d.kind === 'ecoflow') return
  try {
    const r = await api('GET', `/api/v1/commands${qs({ device_id: d.device_id, limit: 10 })}`)
    if (generation !== page.generation) return
    const labels = ['Command', 'Status', 'Sent', 'Closed by']
    const what = (c) =>
      c.type === 'control'
        ? `scenario ${c.payload.scenario}`
        : c.type === 'heater'
          ? `heater ${c.payload.cmd}`
          : 'configuration'
    fill(
      'dcmd-body',
      r.items.map((c) =>
        row(
          [
            what(c),
            c.status + (c.error ? ` (${c.error})` : ''),
            when(c.created_at),
            c.closed_by || '',
          ],
          labels,
        ),
      ),
      'No commands sent to this device yet.',
    )
    // While one waits for its acknowledgement, look again every second rather than at the next refresh.
    clearTimeout(page.ackTimer)
    if (r.items.some((c) => c.status === 'pending'))
      page.ackTimer = setTimeout(() => void renderCommands(d, generation), 1000)
  } catch (err) {
    fill('dcmd-body', [], `Could not load: ${err.message}`)
  }
}

function field(form, labelText, control) {
  form.append(el('label', labelText, { for: control.id }), control)
  return control
}

function select(id, values) {
  const s = el('select', null, { id })
  for (const [value, text] of values) s.append(el('option', text, { value }))
  return s
}

/** The command form that fits the device: heater commands, scenario and configuration, or EcoFlow switches. */
function renderCommandForm(d) {
  const form = $('dcmd-form')
  form.replaceChildren()
  form.onsubmit = null
  $('dcmd-status').textContent = ''
  const heater = d.systems.includes('heater')
  const edge = d.systems.includes('edge')
  $('dcmd-body').closest('.scroll').hidden = d.kind === 'ecoflow' || (!heater && !edge)
  if (d.kind === 'ecoflow') {
    form.append(ecoflowControls(d.device_id, (text, isError) => say('dcmd-status', text, isError)))
    return
  }
  if (!heater && !edge) {
    form.append(
      el('p', 'This device takes no commands: it only sends readings.', { class: 'muted' }),
    )
    return
  }
  let build
  if (heater) {
    const cmd = field(
      form,
      'Heater command',
      select('dc-heater', [
        ['start', 'start'],
        ['stop', 'stop'],
        ['vent', 'vent'],
        ['reset', 'reset'],
      ]),
    )
    const power = field(
      form,
      'Power (0–9)',
      el('input', null, { id: 'dc-power', type: 'number', min: '0', max: '9', value: '5' }),
    )
    build = () => ({
      type: 'heater',
      cmd: cmd.value,
      ...(cmd.value === 'start' || cmd.value === 'vent' ? { power: Number(power.value) } : {}),
    })
  } else {
    const type = field(
      form,
      'Command',
      select('dc-type', [
        ['control', 'Scenario'],
        ['config', 'Configuration'],
      ]),
    )
    const scenario = field(
      form,
      'Scenario',
      select(
        'dc-scenario',
        SCENARIOS.map((s) => [s, s]),
      ),
    )
    const config = field(
      form,
      'Configuration (JSON)',
      el('textarea', '{"timing": {"wake_interval_s": 60}}', { id: 'dc-config', rows: '3' }),
    )
    // Only the field of the chosen command is shown.
    const pick = () => {
      for (const [c, on] of [
        [scenario, type.value === 'control'],
        [config, type.value === 'config'],
      ]) {
        c.hidden = !on
        c.labels[0].hidden = !on
      }
    }
    type.addEventListener('change', pick)
    pick()
    build = () =>
      type.value === 'control'
        ? { type: 'control', scenario: scenario.value }
        : { type: 'config', config: JSON.parse(config.value) }
  }
  form.append(el('button', 'Send', { type: 'submit' }))
  form.onsubmit = async (e) => {
    e.preventDefault()
    try {
      const r = await api('POST', '/api/v1/commands', {
        device_id: d.device_id,
        site_id: d.site_id,
        ...build(),
      })
      say('dcmd-status', `Sent ${r.command.id}: pending until the device acknowledges it.`)
    } catch (err) {
      say('dcmd-status', `Not sent: ${err.message}`, true)
    }
    await renderCommands(d, page.generation)
  }
}

/** An EcoFlow station's switches (outputs, charge limit); also on the EcoFlow page. */
export function ecoflowControls(sn, report) {
  const controls = el('div', null, { class: 'actions' })
  const send = async (action, value) => {
    try {
      await api('POST', `/api/admin/ecoflow/devices/${encodeURIComponent(sn)}/control`, {
        action,
        value,
      })
      report(`${sn}: ${action} = ${value} sent.`)
    } catch (err) {
      report(`${sn}: ${err.message}`, true)
    }
  }
  for (const [action, text] of [
    ['ac_output', 'AC output'],
    ['dc_output', 'DC output'],
    ['usb_output', 'USB output'],
  ]) {
    for (const value of [true, false]) {
      const b = el('button', `${text} ${value ? 'on' : 'off'}`, { type: 'button' })
      b.addEventListener('click', () => void send(action, value))
      controls.append(b)
    }
  }
  const limit = el('input', null, {
    type: 'number',
    min: '50',
    max: '100',
    value: '100',
    id: `limit-${sn}`,
  })
  const set = el('button', 'Set limit', { type: 'button' })
  set.addEventListener('click', () => void send('charge_limit', Number(limit.value)))
  controls.append(el('label', 'Charge limit %', { for: `limit-${sn}` }), limit, set)
  return controls
}

async function renderBroker(d, generation) {
  const box = $('broker-body')
  try {
    const r = await api('GET', `/api/admin/mqtt/clients${qs({ device_id: d.device_id, limit: 5 })}`)
    if (generation !== page.generation) return
    const cards = r.clients.map((c) => {
      const card = el('div', null, { class: 'client' })
      const head = c.connected
        ? `Connected ${c.connected_at ? `since ${when(c.connected_at)}` : ''}${c.address ? ` from ${c.address}` : ''}`
        : `Away; persistent session kept (last seen ${when(c.session?.last_seen)})`
      card.append(el('p', head, { class: c.connected ? 'ok' : 'muted' }))
      const facts = [`client id ${c.client_id}`]
      if (c.principal) facts.push(`login ${c.principal}${c.rights ? ` (${c.rights})` : ''}`)
      if (c.clean !== null) facts.push(c.clean ? 'clean session' : 'persistent session')
      if (c.keepalive_seconds) facts.push(`keep-alive ${c.keepalive_seconds} s`)
      if (c.protocol_version)
        facts.push(
          `MQTT ${c.protocol_version === 4 ? '3.1.1' : c.protocol_version === 3 ? '3.1' : c.protocol_version}`,
        )
      if (c.bridge) facts.push('bridge')
      facts.push(`${c.queued.messages} queued (${c.queued.bytes} bytes)`)
      card.append(el('p', facts.join(' · ')))
      const subs = el('ul', null, {
        class: 'subs',
        'aria-label': `Subscriptions of ${c.client_id}`,
      })
      for (const s of c.subscriptions) subs.append(el('li', `${s.topic} (QoS ${s.qos})`))
      card.append(c.subscriptions.length ? subs : el('p', 'No subscriptions.', { class: 'muted' }))
      return card
    })
    if (cards.length === 0) {
      const p = el(
        'p',
        'No MQTT client of this device is connected, and it has no persistent session.',
        { class: 'muted' },
      )
      if (d.via)
        p.append(
          ' Its readings come through ',
          el('a', d.via, {
            href: deviceHref({ site_id: d.site_id, device_id: d.via, kind: 'edge' }),
          }),
          '.',
        )
      if (d.kind === 'ecoflow')
        p.textContent = 'EcoFlow stations are polled over the EcoFlow cloud API, not MQTT.'
      cards.push(p)
    }
    box.replaceChildren(...cards)
  } catch (err) {
    box.replaceChildren(el('p', `Could not load: ${err.message}`, { class: 'error' }))
  }
}

async function renderHistory(d, generation) {
  const box = $('hist-body')
  // Only edge devices report a status and a configuration.
  $('device-history').hidden = !d.systems.includes('edge')
  if ($('device-history').hidden) return
  try {
    const r = await api(
      'GET',
      `/api/v1/devices/${encodeURIComponent(d.device_id)}/history${qs({ site_id: d.site_id, limit: 10 })}`,
    )
    if (generation !== page.generation) return
    const parts = []
    if (r.config) {
      const det = el('details')
      det.append(
        el('summary', `Configuration it last reported (${when(r.config.updated_at)})`),
        el('pre', JSON.stringify(r.config.config, null, 2)),
      )
      parts.push(det)
    } else parts.push(el('p', 'It has reported no configuration.', { class: 'muted' }))
    const list = el('ol', null, { class: 'history' })
    for (const s of r.status) {
      const det = el('details')
      const st = s.status
      const bits = [
        st.online === false ? 'offline' : 'online',
        st.active_scenario,
        st.signal_strength_dbm !== undefined ? `${st.signal_strength_dbm} dBm` : null,
        st.firmware_version,
      ].filter(Boolean)
      det.append(
        el('summary', `${when(s.ts)}: ${bits.join(' · ')}`),
        el('pre', JSON.stringify(st, null, 2)),
      )
      const li = el('li')
      li.append(det)
      list.append(li)
    }
    parts.push(el('p', `Status messages, newest first (${r.status.length}):`), list)
    box.replaceChildren(...parts)
  } catch (err) {
    box.replaceChildren(el('p', `Could not load: ${err.message}`, { class: 'error' }))
  }
}

// ---- the page --------------------------------------------------------------------------------------

async function refreshSummary(generation) {
  const d = await findDevice(page.route).catch(() => null)
  if (!d || generation !== page.generation) return
  page.device = d
  renderHeader(d)
  renderTiles(d)
  renderFlow(d)
  await Promise.all([renderCommands(d, generation), renderBroker(d, generation)])
}

async function enter(r) {
  reset()
  const generation = page.generation
  const t0 = performance.now()
  page.route = r
  page.range = RANGES[r.params.get('range')] ? r.params.get('range') : '24h'
  renderRanges()
  delete document.documentElement.dataset.renderMs
  delete document.documentElement.dataset.panelsMs
  for (const id of [
    'device-tiles',
    'device-charts',
    'ota-body',
    'broker-body',
    'hist-body',
    'dcmd-form',
  ])
    $(id).replaceChildren()
  $('device-h').textContent = r.parts.at(-1) || 'Device'
  $('device-facts').textContent = ''
  $('device-state').textContent = ''
  say('device-status', 'Loading…')
  let d
  try {
    d = await findDevice(r)
  } catch (err) {
    say('device-status', `Could not load: ${err.message}`, true)
    return
  }
  if (generation !== page.generation) return
  if (!d) {
    say(
      'device-status',
      r.name === 'station'
        ? `paku has no readings of EcoFlow station ${r.parts[0]}.`
        : `paku knows no device ${r.parts[1]} at site ${r.parts[0]}.`,
      true,
    )
    return
  }
  say('device-status', '')
  page.device = d
  renderHeader(d)
  renderTiles(d)
  renderFlow(d)
  renderCommandForm(d)
  // The charts' request goes first: a browser opens at most six connections to one server.
  const charts = renderCharts(d, generation)
  const panels = Promise.all([
    renderOta(d, generation),
    renderCommands(d, generation),
    renderBroker(d, generation),
    renderHistory(d, generation),
  ])
  await charts
  if (generation !== page.generation) return
  // How long the page took to show its values and charts, for scripts/ui-bench.ts: from navigation
  // start and from entering the page; then the same once the side panels are in too.
  const html = document.documentElement
  html.dataset.renderMs = String(Math.round(performance.now()))
  html.dataset.pageMs = String(Math.round(performance.now() - t0))
  await panels
  if (generation !== page.generation) return
  html.dataset.panelsMs = String(Math.round(performance.now()))
  // Latest values, commands and the connection change by the second; the charts every minute.
  page.timer = setInterval(() => void refreshSummary(generation), 5000)
  page.chartTimer = setInterval(() => void renderCharts(page.device, generation), 60_000)
}

for (const b of document.querySelectorAll('#device .ranges button')) {
  b.addEventListener('click', () => {
    const r = page.route
    if (!r) return
    const base =
      r.name === 'station'
        ? `#station/${encodeURIComponent(r.parts[0])}`
        : `#device/${encodeURIComponent(r.parts[0])}/${encodeURIComponent(r.parts[1])}`
    location.hash = `${base}?range=${b.dataset.range}`
  })
}

export const devicePage = { enter, leave: reset, refresh: () => page.route && enter(page.route) }
