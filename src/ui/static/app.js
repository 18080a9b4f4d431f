// paku admin UI: vanilla JS, no dependencies. Every value from the server goes into the page through
// textContent (never innerHTML): device ids and payloads come from devices, not from us.
'use strict'

const SECTIONS = ['devices', 'firmware', 'rollouts', 'ecoflow', 'commands', 'live']
const KEY = 'paku.adminKey'
const LIVE_MAX = 200
const $ = (id) => document.getElementById(id)

let liveAbort = null
let timer = null

function key() {
  return sessionStorage.getItem(KEY) || ''
}

/** fetch() with the admin key; resolves to parsed JSON, throws Error(message) on a non-2xx answer. */
async function api(method, path, body, raw) {
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
  if (res.status === 401) logout('Your key was refused; log in again.')
  if (!res.ok) throw new Error(json.message || `HTTP ${res.status}`)
  return json
}

function el(tag, text, attrs) {
  const e = document.createElement(tag)
  if (text !== undefined && text !== null) e.textContent = String(text)
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v)
  return e
}

function row(cells) {
  const tr = el('tr')
  for (const c of cells) {
    const td = el('td')
    if (c instanceof Node) td.append(c)
    else td.textContent = c === null || c === undefined ? '' : String(c)
    tr.append(td)
  }
  return tr
}

function fill(tbodyId, rows, empty) {
  const body = $(tbodyId)
  body.replaceChildren(...rows)
  if (rows.length === 0) {
    const tr = el('tr')
    const td = el('td', empty, { colspan: String(body.closest('table').querySelectorAll('th').length) })
    tr.append(td)
    body.append(tr)
  }
}

const when = (t) => (t ? new Date(t).toLocaleString() : '')

function say(id, text, isError) {
  const p = $(id)
  p.textContent = text
  p.classList.toggle('error', Boolean(isError))
}

// ---- sections -----------------------------------------------------------------------------------

const loaders = {
  async devices() {
    const r = await api('GET', '/api/v1/devices?limit=500')
    fill('devices-body', r.items.map((d) => row([d.device_id, d.online === false ? 'offline' : d.online ? 'online' : 'unknown', d.firmware, d.device_model, d.status && d.status.active_scenario, when(d.last_seen)])), 'No devices yet.')
  },
  async firmware() {
    const r = await api('GET', '/api/admin/firmware/releases?limit=100')
    fill('releases-body', r.releases.map((x) => row([x.device_model, x.version, x.file_size, String(x.checksum_sha256 || '').slice(0, 16), when(x.created_at)])), 'No releases yet.')
  },
  async rollouts() {
    const r = await api('GET', '/api/admin/rollouts?limit=50')
    fill('rollouts-body', r.rollouts.map(rolloutRow), 'No rollouts yet.')
  },
  async ecoflow() {
    const r = await api('GET', '/api/admin/ecoflow/devices')
    say('ecoflow-state', r.enabled ? `Polling: ${r.state}${r.lastError ? ` (last error: ${r.lastError})` : ''}` : 'EcoFlow is not configured (PAKU_ECOFLOW_ACCESS_KEY, PAKU_ECOFLOW_SECRET_KEY).')
    $('ecoflow-poll').disabled = !r.enabled
    $('ecoflow-devices').replaceChildren(...r.devices.map(ecoflowCard))
  },
  async commands() {
    const r = await api('GET', '/api/v1/commands?limit=50')
    fill('commands-body', r.items.map((c) => row([c.id, c.device_id, c.type, c.status + (c.error ? ` (${c.error})` : ''), when(c.created_at), c.closed_by])), 'No commands yet.')
  },
  async live() {},
}

function rolloutRow(r) {
  const c = r.counts || {}
  const done = (c.succeeded || 0) + (c.failed || 0) + (c.skipped || 0) + (c.cancelled || 0)
  const progress = el('span')
  const bar = el('progress', null, { max: String(Math.max(1, c.total || 0)), value: String(done), 'aria-label': `${r.name} progress` })
  progress.append(bar, ` ${c.succeeded || 0} succeeded, ${c.failed || 0} failed, ${done}/${c.total || 0} done`)
  const actions = el('span', null, { class: 'actions' })
  for (const action of ['pause', 'resume', 'cancel']) {
    const b = el('button', action[0].toUpperCase() + action.slice(1), { type: 'button', 'aria-label': `${action} ${r.name}` })
    b.addEventListener('click', async () => {
      try {
        await api('POST', `/api/admin/rollouts/${r.id}/${action}`)
        say('rollout-status', `Rollout ${r.name}: ${action} done.`)
      } catch (err) {
        say('rollout-status', `Rollout ${r.name}: ${err.message}`, true)
      }
      await refresh('rollouts')
    })
    actions.append(b)
  }
  return row([r.name, `${r.device_model} ${r.firmware_version}`, r.status, progress, actions])
}

function ecoflowCard(d) {
  const box = el('article', null, { 'aria-label': `EcoFlow ${d.sn}` })
  box.append(el('h3', `${d.productName || 'EcoFlow'} ${d.sn}`))
  const s = d.summary
  box.append(el('p', s ? `Battery ${s.soc} %, in ${s.watts_in} W (solar ${s.solar_w} W), out ${s.watts_out} W; polled ${when(d.lastPollAt)}` : 'Not polled yet.'))
  const controls = el('div', null, { class: 'actions' })
  for (const [action, label] of [['ac_output', 'AC output'], ['dc_output', 'DC output'], ['usb_output', 'USB output']]) {
    for (const value of [true, false]) {
      const b = el('button', `${label} ${value ? 'on' : 'off'}`, { type: 'button' })
      b.addEventListener('click', () => ecoflowControl(d.sn, action, value))
      controls.append(b)
    }
  }
  const limit = el('input', null, { type: 'number', min: '50', max: '100', value: '100', id: `limit-${d.sn}` })
  const lab = el('label', 'Charge limit %', { for: `limit-${d.sn}` })
  const set = el('button', 'Set limit', { type: 'button' })
  set.addEventListener('click', () => ecoflowControl(d.sn, 'charge_limit', Number(limit.value)))
  controls.append(lab, limit, set)
  box.append(controls)
  return box
}

async function ecoflowControl(sn, action, value) {
  try {
    await api('POST', `/api/admin/ecoflow/devices/${encodeURIComponent(sn)}/control`, { action, value })
    say('ecoflow-state', `${sn}: ${action} = ${value} sent.`)
  } catch (err) {
    say('ecoflow-state', `${sn}: ${err.message}`, true)
  }
}

async function refresh(name) {
  try {
    await loaders[name]()
  } catch (err) {
    const target = { devices: 'devices-body', firmware: 'upload-status', rollouts: 'rollout-status', ecoflow: 'ecoflow-state', commands: 'command-status' }[name]
    if (target && target.endsWith('-body')) fill(target, [], `Could not load: ${err.message}`)
    else if (target) say(target, `Could not load: ${err.message}`, true)
  }
}

function show() {
  const loggedIn = Boolean(key())
  $('login').hidden = loggedIn
  $('nav').hidden = !loggedIn
  const current = SECTIONS.includes(location.hash.slice(1)) ? location.hash.slice(1) : 'devices'
  for (const s of SECTIONS) $(s).hidden = !loggedIn || s !== current
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.getAttribute('href') === `#${current}`) a.setAttribute('aria-current', 'page')
    else a.removeAttribute('aria-current')
  }
  clearInterval(timer)
  if (!loggedIn) return
  void refresh(current)
  // Progress and device state change on their own; sections that show them refresh every 5 s.
  if (['devices', 'rollouts', 'commands'].includes(current)) timer = setInterval(() => void refresh(current), 5000)
}

function logout(message) {
  sessionStorage.removeItem(KEY)
  stopLive()
  show()
  if (message) $('login-error').textContent = message
}

// ---- live view: fetch() streaming, so the key travels in a header, never in a URL -----------------

async function startLive(topic) {
  stopLive()
  const abort = new AbortController()
  liveAbort = abort
  $('live-toggle').textContent = 'Stop'
  say('live-status', `Connecting to ${topic}…`)
  try {
    const res = await fetch(`/api/v1/live?topic=${encodeURIComponent(topic)}`, { headers: { 'x-api-key': key(), accept: 'text/event-stream' }, signal: abort.signal })
    if (!res.ok) {
      const j = await res.json().catch(() => ({}))
      throw new Error(j.message || `HTTP ${res.status}`)
    }
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader()
    let buf = ''
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      buf += value
      let i
      while ((i = buf.indexOf('\n\n')) >= 0) {
        handleEvent(buf.slice(0, i))
        buf = buf.slice(i + 2)
      }
    }
    if (liveAbort === abort) say('live-status', 'Stream ended.')
  } catch (err) {
    if (err.name !== 'AbortError') say('live-status', `Live view failed: ${err.message}`, true)
  } finally {
    if (liveAbort === abort) {
      liveAbort = null
      $('live-toggle').textContent = 'Start'
    }
  }
}

function handleEvent(block) {
  let event = 'message'
  let data = ''
  for (const line of block.split('\n')) {
    if (line.startsWith('event: ')) event = line.slice(7)
    else if (line.startsWith('data: ')) data += line.slice(6)
  }
  if (!data) return
  const d = JSON.parse(data)
  if (event === 'ready') say('live-status', `Listening on ${d.topic}`)
  else if (event === 'dropped') say('live-status', `${d.dropped} messages skipped: this page fell behind.`, true)
  else if (event === 'message') {
    const li = el('li')
    li.append(el('time', new Date(d.receivedAt).toLocaleTimeString(), { datetime: d.receivedAt }), ' ', el('code', d.topic, { class: 'topic' }), ' ', el('span', d.payload, { class: 'payload' }))
    const list = $('live-list')
    list.prepend(li)
    while (list.children.length > LIVE_MAX) list.lastElementChild.remove()
  }
}

function stopLive() {
  if (liveAbort) liveAbort.abort()
  liveAbort = null
  $('live-toggle').textContent = 'Start'
}

// ---- forms ----------------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault()
    const k = $('key').value.trim()
    const res = await fetch('/api/v1/devices?limit=1', { headers: { 'x-api-key': k } })
    if (!res.ok) {
      const j = await res.json().catch(() => ({}))
      $('login-error').textContent = j.message || `HTTP ${res.status}`
      return
    }
    sessionStorage.setItem(KEY, k)
    $('key').value = ''
    $('login-error').textContent = ''
    if (!location.hash) location.hash = '#devices'
    show()
    $('main').focus()
  })
  $('logout').addEventListener('click', () => logout())

  $('upload-form').addEventListener('submit', async (e) => {
    e.preventDefault()
    const f = e.target
    const file = f.file.files[0]
    if (!file) return
    say('upload-status', `Uploading ${file.name}…`)
    try {
      const notes = f.notes.value ? `?release_notes=${encodeURIComponent(f.notes.value)}` : ''
      const r = await api('PUT', `/api/admin/firmware/${encodeURIComponent(f.model.value)}/${encodeURIComponent(f.version.value)}${notes}`, undefined, file)
      say('upload-status', `Uploaded ${f.model.value} ${r.version} (${r.file_size} bytes).`)
      f.reset()
    } catch (err) {
      say('upload-status', `Upload failed: ${err.message}`, true)
    }
    await refresh('firmware')
  })

  $('rollout-form').addEventListener('submit', async (e) => {
    e.preventDefault()
    const f = e.target
    const body = { name: f.rname.value, device_model: f.model.value, firmware_version: f.version.value, target_type: f.rtarget.value, rollout_percentage: Number(f.percent.value) }
    const ids = f.devices.value.split(',').map((s) => s.trim()).filter(Boolean)
    if (ids.length > 0) body.target_filter = { device_ids: ids }
    try {
      const r = await api('POST', '/api/admin/rollouts', body)
      say('rollout-status', `Rollout ${r.rollout.name} started.`)
      f.reset()
    } catch (err) {
      say('rollout-status', `Rollout not started: ${err.message}`, true)
    }
    await refresh('rollouts')
  })

  $('command-form').addEventListener('submit', async (e) => {
    e.preventDefault()
    const f = e.target
    const body = { device_id: f.device.value, type: f.type.value }
    try {
      if (body.type === 'control') body.scenario = f.scenario.value
      else if (body.type === 'config') body.config = JSON.parse(f.config.value)
      else {
        body.cmd = f.heater.value
        if (body.cmd === 'start' || body.cmd === 'vent') body.power = Number(f.power.value)
      }
      const r = await api('POST', '/api/v1/commands', body)
      say('command-status', `Sent ${r.command.id}: pending until the device acknowledges it.`)
    } catch (err) {
      say('command-status', `Not sent: ${err.message}`, true)
    }
    await refresh('commands')
  })

  $('live-form').addEventListener('submit', (e) => {
    e.preventDefault()
    if (liveAbort) stopLive()
    else void startLive($('live-topic').value || '#')
  })

  $('ecoflow-poll').addEventListener('click', async () => {
    try {
      await api('POST', '/api/admin/ecoflow/poll')
    } catch (err) {
      say('ecoflow-state', err.message, true)
    }
    await refresh('ecoflow')
  })

  for (const b of document.querySelectorAll('[data-refresh]')) b.addEventListener('click', () => void refresh(b.dataset.refresh))
  window.addEventListener('hashchange', show)
  show()
})
