// paku console: vanilla JS modules, no build step. This file is the shell: the hash router, log in,
// first-run setup, and the small pages (EcoFlow, commands); the larger pages have modules of their own.
import { $, api, el, fill, key, row, say, setKey, when, whenRefused, route } from './util.js'
import { fleetPage } from './fleet.js'
import { devicePage, ecoflowControls } from './device.js'
import { firmwarePage, rolloutsPage } from './rollouts.js'
import { livePage } from './live.js'

const SECTIONS = ['devices', 'device', 'firmware', 'rollouts', 'ecoflow', 'commands', 'live']

// ---- small pages -----------------------------------------------------------------------------------

/** A page that loads once on entry and, with `everyMs`, again while it is shown. */
function simplePage(load, everyMs) {
  let timer = null
  return {
    enter() {
      void load()
      if (everyMs) timer = setInterval(() => void load(), everyMs)
    },
    leave() {
      clearInterval(timer)
    },
    refresh: load,
  }
}

const ecoflowPage = simplePage(async () => {
  try {
    const r = await api('GET', '/api/admin/ecoflow/devices')
    say(
      'ecoflow-state',
      r.enabled
        ? `Polling: ${r.state}${r.lastError ? ` (last error: ${r.lastError})` : ''}`
        : 'EcoFlow is not configured (PAKU_ECOFLOW_ACCESS_KEY, PAKU_ECOFLOW_SECRET_KEY).',
    )
    $('ecoflow-poll').disabled = !r.enabled
    $('ecoflow-devices').replaceChildren(...r.devices.map(ecoflowCard))
  } catch (err) {
    say('ecoflow-state', `Could not load: ${err.message}`, true)
  }
})

/** One station's summary and its switches; the station page shows the same controls. */
function ecoflowCard(d) {
  const box = el('article', null, { 'aria-label': `EcoFlow ${d.sn}` })
  const h = el('h3')
  h.append(
    el('a', `${d.productName || 'EcoFlow'} ${d.sn}`, {
      href: `#station/${encodeURIComponent(d.sn)}`,
    }),
  )
  box.append(h)
  const s = d.summary
  box.append(
    el(
      'p',
      s
        ? `Battery ${s.soc} %, in ${s.watts_in} W (solar ${s.solar_w} W), out ${s.watts_out} W; polled ${when(d.lastPollAt)}`
        : 'Not polled yet.',
    ),
  )
  box.append(ecoflowControls(d.sn, (text, isError) => say('ecoflow-state', text, isError)))
  return box
}

const commandsPage = simplePage(async () => {
  try {
    const r = await api('GET', '/api/v1/commands?limit=50')
    fill(
      'commands-body',
      r.items.map((c) =>
        row([
          c.id,
          c.device_id,
          c.type,
          c.status + (c.error ? ` (${c.error})` : ''),
          when(c.created_at),
          c.closed_by,
        ]),
      ),
      'No commands yet.',
    )
  } catch (err) {
    fill('commands-body', [], `Could not load: ${err.message}`)
  }
}, 5000)

const PAGES = {
  devices: fleetPage,
  device: devicePage,
  firmware: firmwarePage,
  rollouts: rolloutsPage,
  ecoflow: ecoflowPage,
  commands: commandsPage,
  live: livePage,
}

// ---- first run: the setup link ----------------------------------------------------------------------

// The token arrives in the link's fragment (#setup=…), which the browser never sends anywhere. It is
// taken out of the address bar and the history at once and kept in memory until it is used.
let setupToken = null
if (location.hash.startsWith('#setup=')) {
  setupToken = location.hash.slice('#setup='.length)
  history.replaceState(null, '', `${location.pathname}${location.search}#setup`)
}

async function createFirstKey(e) {
  e.preventDefault()
  if (!setupToken) {
    say(
      'setup-status',
      'This page has no setup token: open the link paku logged at start again (it works once).',
      true,
    )
    return
  }
  say('setup-status', 'Creating…')
  try {
    const res = await fetch('/api/setup', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: setupToken, name: $('setup-name').value.trim() }),
    })
    const j = await res.json().catch(() => ({}))
    if (!res.ok) {
      // A used or expired link cannot be retried; a taken name can.
      if (res.status !== 409 && res.status !== 400) setupToken = null
      throw new Error(j.message || `HTTP ${res.status}`)
    }
    setupToken = null
    setKey(j.key)
    $('setup-key').value = j.key
    $('setup-done').hidden = false
    $('setup-form').hidden = true
    say(
      'setup-status',
      `Created the admin key ${j.name} with every scope (${j.scopes.join(', ')}).`,
    )
    $('setup-key').focus()
    $('setup-key').select()
  } catch (err) {
    say('setup-status', `Not created: ${err.message}`, true)
  }
}

async function copyKey() {
  const input = $('setup-key')
  input.select()
  try {
    await navigator.clipboard.writeText(input.value)
    say('setup-status', 'Copied to the clipboard.')
  } catch {
    // No clipboard without a secure context (plain HTTP to another host): the key is selected instead.
    say('setup-status', 'Selected: copy it with Ctrl-C (or ⌘-C).')
  }
}

// ---- router ---------------------------------------------------------------------------------------

let current = null

function show() {
  const r = route()
  const loggedIn = Boolean(key())
  const setup = r.name === 'setup'
  $('setup').hidden = !setup
  $('login').hidden = loggedIn || setup
  $('nav').hidden = !loggedIn || setup
  let name = r.name === 'station' ? 'device' : r.name
  if (!SECTIONS.includes(name)) name = 'devices'
  for (const s of SECTIONS) $(s).hidden = !loggedIn || setup || s !== name
  for (const a of document.querySelectorAll('#nav a')) {
    const target = a.getAttribute('href').slice(1)
    if (target === name || (name === 'device' && target === 'devices'))
      a.setAttribute('aria-current', 'page')
    else a.removeAttribute('aria-current')
  }
  current?.leave()
  current = null
  if (!loggedIn || setup) return
  current = PAGES[name]
  current.enter(r)
}

function logout(message) {
  setKey('')
  livePage.stop()
  current?.leave()
  current = null
  show()
  if (message) $('login-error').textContent = message
}
whenRefused(logout)

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault()
  const k = $('key').value.trim()
  const res = await fetch('/api/v1/devices?limit=1', { headers: { 'x-api-key': k } })
  if (!res.ok) {
    const j = await res.json().catch(() => ({}))
    $('login-error').textContent = j.message || `HTTP ${res.status}`
    return
  }
  setKey(k)
  $('key').value = ''
  $('login-error').textContent = ''
  if (!location.hash || location.hash === '#setup') location.hash = '#devices'
  show()
  $('main').focus()
})
$('logout').addEventListener('click', () => logout())
$('setup-form').addEventListener('submit', createFirstKey)
$('setup-copy').addEventListener('click', () => void copyKey())
$('setup-continue').addEventListener('click', () => {
  $('setup-key').value = ''
  location.hash = '#devices'
})
$('ecoflow-poll').addEventListener('click', async () => {
  try {
    await api('POST', '/api/admin/ecoflow/poll')
  } catch (err) {
    say('ecoflow-state', err.message, true)
  }
  await ecoflowPage.refresh()
})
for (const b of document.querySelectorAll('[data-refresh]'))
  b.addEventListener('click', () => void PAGES[b.dataset.refresh].refresh())

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
  await commandsPage.refresh()
})

window.addEventListener('hashchange', show)
show()
