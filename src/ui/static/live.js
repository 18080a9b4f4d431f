// Live messages: the server-sent event stream of /api/v1/live read with fetch(), so the key travels
// in a header and never in a URL (EventSource cannot send headers). Pause holds new messages back
// (at most LIVE_MAX) without dropping the stream; each message opens to its pretty-printed payload.
import { $, el, key, pretty, say } from './util.js'

const LIVE_MAX = 200
let abort = null
let paused = false
let held = []

function item(d) {
  const li = el('li')
  const det = el('details')
  det.open = $('live-pretty').checked
  const sum = el('summary')
  sum.append(
    el('time', new Date(d.receivedAt).toLocaleTimeString(), { datetime: d.receivedAt }),
    ' ',
    el('code', d.topic, { class: 'topic' }),
    ' ',
    el('span', d.payload, { class: 'payload' }),
  )
  const meta = `${d.bytes} bytes · QoS ${d.qos}${d.retain ? ' · retained' : ''} · from ${d.clientId || 'paku'} (${d.via})${d.bytes > 2048 ? ' · first 2 KiB shown' : ''}`
  det.append(sum, el('p', meta, { class: 'muted' }), el('pre', pretty(d.payload)))
  li.append(det)
  return li
}

function show(d) {
  const list = $('live-list')
  list.prepend(item(d))
  while (list.children.length > LIVE_MAX) list.lastElementChild.remove()
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
  else if (event === 'dropped')
    say('live-status', `${d.dropped} messages skipped: this page fell behind.`, true)
  else if (event === 'message') {
    if (!paused) return show(d)
    held.push(d)
    if (held.length > LIVE_MAX) held.shift()
    say(
      'live-status',
      `Paused: ${held.length} new message${held.length === 1 ? '' : 's'} held back.`,
    )
  }
}

async function start(topic) {
  stop()
  const a = new AbortController()
  abort = a
  $('live-toggle').textContent = 'Stop'
  $('live-pause').disabled = false
  say('live-status', `Connecting to ${topic}…`)
  try {
    const res = await fetch(`/api/v1/live?topic=${encodeURIComponent(topic)}`, {
      headers: { 'x-api-key': key(), accept: 'text/event-stream' },
      signal: a.signal,
    })
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
    if (abort === a) say('live-status', 'Stream ended.')
  } catch (err) {
    if (err.name !== 'AbortError') say('live-status', `Live view failed: ${err.message}`, true)
  } finally {
    if (abort === a) {
      abort = null
      $('live-toggle').textContent = 'Start'
      $('live-pause').disabled = true
    }
  }
}

function setPaused(p) {
  paused = p
  $('live-pause').textContent = p ? 'Resume' : 'Pause'
  $('live-pause').setAttribute('aria-pressed', String(p))
  if (p) return say('live-status', 'Paused: new messages are held back.')
  for (const d of held) show(d)
  held = []
  say('live-status', 'Resumed.')
}

function stop() {
  if (abort) abort.abort()
  abort = null
  held = []
  if (paused) setPaused(false)
  $('live-toggle').textContent = 'Start'
  $('live-pause').disabled = true
}

$('live-form').addEventListener('submit', (e) => {
  e.preventDefault()
  if (abort) stop()
  else void start($('live-topic').value || '#')
})
$('live-pause').addEventListener('click', () => setPaused(!paused))
$('live-pretty').addEventListener('change', () => {
  for (const d of document.querySelectorAll('#live-list details')) d.open = $('live-pretty').checked
})

// The stream keeps running while another page is shown, as before; logging out ends it.
export const livePage = { enter() {}, leave() {}, refresh() {}, stop }
