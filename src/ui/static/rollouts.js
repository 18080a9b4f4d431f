// Firmware releases (with what paku read from each image) and rollouts as they happen: each rollout's
// stage against its thresholds, and each device's state with the time of every step.
import { $, api, clock, el, fill, qs, route, row, say, when } from './util.js'

// ---- firmware ----------------------------------------------------------------------------------------

const kib = (n) =>
  n >= 1048576 ? `${(n / 1048576).toFixed(2)} MiB` : `${Math.round(n / 1024)} KiB`

/** What the image header said: chip, the app's own version and project, the ESP-IDF it was built with. */
function imageFacts(x) {
  const facts = []
  if (x.chip) facts.push(x.chip)
  if (x.app) {
    if (x.app.projectName) facts.push(`project ${x.app.projectName}`)
    if (x.app.version) facts.push(`app ${x.app.version}`)
    if (x.app.idfVersion) facts.push(`IDF ${x.app.idfVersion}`)
    if (x.app.compiledAt) facts.push(`built ${x.app.compiledAt}`)
  }
  return facts.join(' · ')
}

async function loadFirmware() {
  try {
    const r = await api('GET', '/api/admin/firmware/releases?limit=100')
    const labels = ['Model', 'Version', 'Size', 'Image', 'SHA-256', 'Uploaded']
    fill(
      'releases-body',
      r.releases.map((x) =>
        row(
          [
            x.device_model,
            x.version,
            kib(x.file_size),
            imageFacts(x),
            el('code', String(x.checksum_sha256 || '').slice(0, 16), { title: x.checksum_sha256 }),
            when(x.created_at),
          ],
          labels,
        ),
      ),
      'No releases yet.',
    )
  } catch (err) {
    say('upload-status', `Could not load: ${err.message}`, true)
  }
}

$('upload-form').addEventListener('submit', async (e) => {
  e.preventDefault()
  const f = e.target
  const file = f.file.files[0]
  if (!file) return
  say('upload-status', `Uploading ${file.name}…`)
  try {
    const notes = f.notes.value ? `?release_notes=${encodeURIComponent(f.notes.value)}` : ''
    const r = await api(
      'PUT',
      `/api/admin/firmware/${encodeURIComponent(f.model.value)}/${encodeURIComponent(f.version.value)}${notes}`,
      undefined,
      file,
    )
    say('upload-status', `Uploaded ${f.model.value} ${r.version} (${r.file_size} bytes).`)
    f.reset()
  } catch (err) {
    say('upload-status', `Upload failed: ${err.message}`, true)
  }
  await loadFirmware()
})

export const firmwarePage = { enter: () => void loadFirmware(), leave() {}, refresh: loadFirmware }

// ---- rollouts ----------------------------------------------------------------------------------------

const FINISHED = ['succeeded', 'failed', 'skipped', 'cancelled']
let timer = null
let selected = null

function stageText(r) {
  const stages = r.stages || [r.current_percentage]
  return stages.length > 1
    ? `${r.stage_index + 1} of ${stages.length}: ${r.current_percentage} %`
    : `${r.current_percentage} %`
}

function progress(r) {
  const c = r.counts || {}
  const done = FINISHED.reduce((n, s) => n + (c[s] || 0), 0)
  const box = el('span', null, { class: 'progress' })
  box.append(
    el('progress', null, {
      max: String(Math.max(1, c.total || 0)),
      value: String(done),
      'aria-label': `${r.name} progress`,
    }),
    ` ${c.succeeded || 0} succeeded, ${c.failed || 0} failed, ${done}/${c.total || 0} done`,
  )
  return box
}

async function act(r, action) {
  try {
    await api('POST', `/api/admin/rollouts/${r.id}/${action}`)
    say('rollout-status', `Rollout ${r.name}: ${action} done.`)
  } catch (err) {
    say('rollout-status', `Rollout ${r.name}: ${err.message}`, true)
  }
  await loadRollouts()
}

/** Pause, resume and cancel always (disabled when the state forbids them); advance and retry when they apply. */
function actions(r) {
  const box = el('span', null, { class: 'actions' })
  const allowed =
    { running: ['pause', 'cancel', 'advance'], paused: ['resume', 'cancel'] }[r.status] ?? []
  if ((r.counts?.failed || 0) > 0 && r.status !== 'cancelled') allowed.push('retry')
  for (const action of ['pause', 'resume', 'cancel', 'advance', 'retry']) {
    const always = ['pause', 'resume', 'cancel'].includes(action)
    if (!always && !allowed.includes(action)) continue
    const b = el('button', action[0].toUpperCase() + action.slice(1), {
      type: 'button',
      'aria-label': `${action} ${r.name}`,
      disabled: !allowed.includes(action),
    })
    b.addEventListener('click', () => void act(r, action))
    box.append(b)
  }
  return box
}

/** The stages as a strip (done, current, to come) and the thresholds that move or stop the rollout. */
function renderStages(r) {
  const stages = r.stages || [r.current_percentage]
  const strip = $('rd-stages')
  strip.replaceChildren(
    ...stages.map((p, i) =>
      el('span', `${p} %`, {
        class: `stage ${i < r.stage_index ? 'done' : i === r.stage_index ? 'current' : 'todo'}`,
        'aria-current': i === r.stage_index ? 'step' : undefined,
      }),
    ),
  )
  strip.setAttribute('aria-label', `Stages: ${stages.join(' %, ')} %; now ${stageText(r)}`)
  const c = r.counts || {}
  const taken = c.total || 0
  const finished = FINISHED.reduce((n, s) => n + (c[s] || 0), 0)
  const okShare = taken ? Math.round(((c.succeeded || 0) / taken) * 100) : 0
  const parts = [`${c.succeeded || 0} of ${taken} devices taken in have updated (${okShare} %)`]
  parts.push(
    r.auto_advance
      ? `the next stage starts at ${r.success_threshold_percent} %`
      : 'stages advance by hand',
  )
  const limits = []
  if (r.error_threshold_count) limits.push(`${r.error_threshold_count} failed`)
  if (r.error_threshold_percent)
    limits.push(
      `${r.error_threshold_percent} % of at least ${r.error_threshold_min_executed} finished`,
    )
  parts.push(
    `${c.failed || 0} failed of ${finished} finished; it pauses at ${limits.length ? limits.join(' or ') : 'no error threshold'}`,
  )
  const u = r.unverified_counts || {}
  if (u.total) parts.push(`${u.total} unverified pull devices not counted`)
  $('rd-thresholds').textContent =
    `${parts.join('; ')}.${r.status_reason ? ` ${r.status}: ${r.status_reason}` : ''}`
}

async function loadDetail(id) {
  const box = $('rollout-detail')
  if (!id) {
    box.hidden = true
    return
  }
  try {
    const [one, devices] = await Promise.all([
      api('GET', `/api/admin/rollouts/${encodeURIComponent(id)}`),
      api('GET', `/api/admin/rollouts/${encodeURIComponent(id)}/devices`),
    ])
    const r = one.rollout
    box.hidden = false
    $('rd-h').textContent = `${r.name}: ${r.device_model} ${r.firmware_version}, ${r.status}`
    renderStages(r)
    const labels = ['Device', 'State', 'Stage', 'From', 'Steps', 'Detail']
    fill(
      'rd-body',
      devices.devices.map((d) => {
        const link = el('a', d.device_id, {
          href: `#device/paku/${encodeURIComponent(d.device_id)}`,
        })
        const steps = el('ol', null, { class: 'steps' })
        for (const s of d.steps || [])
          steps.append(el('li', `${s.state} ${clock(s.at)}`, { title: when(s.at) }))
        const state = `${d.state}${d.progress_percent !== null && !FINISHED.includes(d.state) ? ` ${d.progress_percent} %` : ''}${d.verified ? '' : ' (unverified)'}`
        return row(
          [
            link,
            state,
            (r.stages || [])[d.stage] !== undefined ? `${r.stages[d.stage]} %` : String(d.stage),
            d.from_version || '',
            steps,
            d.detail || '',
          ],
          labels,
        )
      }),
      'No device taken in yet.',
    )
  } catch (err) {
    box.hidden = false
    $('rd-h').textContent = `Rollout ${id}`
    fill('rd-body', [], `Could not load: ${err.message}`)
  }
}

async function loadRollouts() {
  try {
    const r = await api('GET', `/api/admin/rollouts${qs({ limit: 50 })}`)
    const labels = ['Name', 'Firmware', 'Status', 'Stage', 'Progress', 'Actions']
    fill(
      'rollouts-body',
      r.rollouts.map((x) =>
        row(
          [
            el('a', x.name, {
              href: `#rollouts/${x.id}`,
              'aria-current': String(x.id) === selected ? 'true' : undefined,
            }),
            `${x.device_model} ${x.firmware_version}`,
            x.status,
            stageText(x),
            progress(x),
            actions(x),
          ],
          labels,
        ),
      ),
      'No rollouts yet.',
    )
  } catch (err) {
    say('rollout-status', `Could not load: ${err.message}`, true)
  }
  await loadDetail(selected)
}

$('rollout-form').addEventListener('submit', async (e) => {
  e.preventDefault()
  const f = e.target
  const body = {
    name: f.rname.value,
    device_model: f.model.value,
    firmware_version: f.version.value,
    target_type: f.rtarget.value,
    rollout_percentage: Number(f.percent.value),
  }
  const stages = f.stages.value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number)
  if (stages.length > 0) Object.assign(body, { stages, auto_advance: true })
  const ids = f.devices.value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  if (ids.length > 0) body.target_filter = { device_ids: ids }
  try {
    const r = await api('POST', '/api/admin/rollouts', body)
    say('rollout-status', `Rollout ${r.rollout.name} started.`)
    f.reset()
  } catch (err) {
    say('rollout-status', `Rollout not started: ${err.message}`, true)
  }
  await loadRollouts()
})

export const rolloutsPage = {
  enter(r = route()) {
    selected = r.parts[0] || null
    void loadRollouts()
    // Devices move through their steps on their own: the page follows every 3 s.
    timer = setInterval(() => void loadRollouts(), 3000)
  },
  leave() {
    clearInterval(timer)
  },
  refresh: loadRollouts,
}
