/**
 * What the polling dialects are answered: Arduino HTTPUpdate's check-in and the old /check, both decided
 * by the rollout the device belongs to (docs/compatibility.md, "The old routes").
 */
import type { Kysely } from 'kysely'
import type { DB } from '../db/index.js'
import type { OtaContext } from './context.js'
import { recordOutcome } from './outcomes.js'
import {
  advanceDevice,
  initialState,
  markNotified,
  rolloutFor,
  takeIn,
  TERMINAL,
  unverifiedMark,
  type DeviceState,
  type Rollout,
} from './rollouts.js'
import { getRelease, insertEvent, recordUpdateStatus, type Release } from './store.js'

/** A pull (HTTPUpdate) check-in; `verified`: it carried the device's pull token. */
export type PullRequest = {
  deviceId: string
  model: string
  version: string | null
  sha256?: string | undefined
  md5?: string | undefined
  freeSpace?: number | undefined
  verified: boolean
}
/** An old-style /check; `verified`: it carried the device's pull token. */
export type CheckRequest = { deviceId: string; model: string; current: string; verified: boolean }

/** The end of a polling device's action: its rollout, its row, and how it ended. */
type PolledOutcome = {
  rollout: Rollout
  row: { state: DeviceState }
  deviceId: string
  to: 'succeeded' | 'failed'
  detail: string
}

/** A polling device's update begins: its rollout row moves on, it counts as notified, the event is logged. */
async function startPolled(
  db: Kysely<DB>,
  p: {
    rollout: Rollout
    row: { state: DeviceState; verified: boolean }
    deviceId: string
    to: 'downloading' | 'notified'
    detail: string
    from: string | null
    via: 'http-update' | 'check'
  },
): Promise<void> {
  const r = p.rollout
  await advanceDevice(db, {
    action: {
      rollout_id: r.id,
      device_id: p.deviceId,
      state: p.row.state,
      firmware_version: r.firmware_version,
    },
    to: p.to,
    detail: p.detail,
  })
  await markNotified(db, r.id, p.deviceId)
  await insertEvent(db, {
    type: 'update_started',
    deviceId: p.deviceId,
    version: r.firmware_version,
    rolloutId: r.id,
    data: { from_version: p.from, via: p.via, ...unverifiedMark(p.row.verified) },
  })
}

/** The decisions for polling devices; both run outside the rollout queue and end actions through it. */
export function createPullDecisions(o: OtaContext) {
  /** Ends a polling device's action (and its device_update_status row) through the queue, then re-judges the rollout. */
  function finishPolled({ rollout: r, row, deviceId, to, detail }: PolledOutcome): Promise<void> {
    const action = {
      rollout_id: r.id,
      device_id: deviceId,
      state: row.state,
      firmware_version: r.firmware_version,
    }
    return o.enqueue(async () => {
      if (await recordOutcome(o.db(), o.counters, { action, to, detail }))
        await recordUpdateStatus(o.db(), {
          deviceId,
          version: r.firmware_version,
          status: to === 'succeeded' ? 'success' : 'failed',
          message: to === 'failed' ? detail : null,
        })
      await o.tick([r.id])
    })
  }

  /**
   * A polling (Arduino HTTPUpdate) device asks for an update: the rollout it belongs to decides.
   * Success is inferred from the next check-in reporting the new image; a device that was served the
   * image and still runs the old one has failed and is not offered it again (no update loops).
   * `verified` says the request carried the device's pull token: only then does its outcome count
   * toward the rollout's thresholds (an unauthenticated one moves an unverified row).
   */
  async function pullDecision(d: PullRequest): Promise<{ release: Release } | { reason: string }> {
    const db = o.db()
    const r = await rolloutFor(db, d.deviceId, d.model)
    if (!r) return { reason: 'no running rollout targets this device' }
    const release = await getRelease(db, r.device_model, r.firmware_version)
    if (!release) return { reason: `release ${r.firmware_version} is gone` }
    const runsTarget =
      d.version === r.firmware_version ||
      (d.sha256 !== undefined && d.sha256 === release.checksum_sha256) ||
      (d.md5 !== undefined && d.md5 === release.checksum_md5)
    const row = await takeIn(db, {
      rollout: r,
      deviceId: d.deviceId,
      current: runsTarget ? r.firmware_version : d.version,
      verified: d.verified,
    })
    if (!d.verified && row.verified)
      return { reason: `rollout ${r.name} counts this device's outcome: pull with its token` }
    const polled = { rollout: r, row, deviceId: d.deviceId }
    if (runsTarget) {
      if (!TERMINAL.includes(row.state))
        await finishPolled({ ...polled, to: 'succeeded', detail: 'checked in with the new image' })
      return { reason: `up to date (${r.firmware_version})` }
    }
    if (TERMINAL.includes(row.state))
      return { reason: `${row.state} in rollout ${r.name}${row.detail ? `: ${row.detail}` : ''}` }
    if (row.state === 'downloading') {
      const detail = `still runs ${d.version ?? 'the old image'} after the image was served`
      await finishPolled({ ...polled, to: 'failed', detail })
      return { reason: `failed in rollout ${r.name}: ${detail}` }
    }
    if (d.freeSpace !== undefined && release.file_size > d.freeSpace) {
      const detail = `image is ${release.file_size} bytes, the device has ${d.freeSpace} free`
      await finishPolled({ ...polled, to: 'failed', detail })
      return { reason: detail }
    }
    await startPolled(db, {
      ...polled,
      to: 'downloading',
      detail: 'image served to the polling device',
      from: d.version,
      via: 'http-update',
    })
    await recordUpdateStatus(db, {
      deviceId: d.deviceId,
      version: r.firmware_version,
      status: 'downloading',
    })
    return { release }
  }

  /**
   * The old GET /api/firmware/check (docs/compatibility.md, "The old routes"), answered from the same
   * rollouts. A check-in that reports the rollout's version ends the device's action as succeeded (counted
   * only when `verified`).
   */
  async function checkDecision(
    c: CheckRequest,
  ): Promise<{ rollout: Rollout; release: Release } | undefined> {
    const db = o.db()
    const r = await rolloutFor(db, c.deviceId, c.model)
    if (!r) return undefined
    const row = await takeIn(db, {
      rollout: r,
      deviceId: c.deviceId,
      current: c.current,
      verified: c.verified,
    })
    if (!c.verified && row.verified) return undefined
    if (TERMINAL.includes(row.state)) return undefined
    if (initialState(r, c.current).state === 'succeeded') {
      await finishPolled({
        rollout: r,
        row,
        deviceId: c.deviceId,
        to: 'succeeded',
        detail: 'checked in with the new version',
      })
      return undefined
    }
    const release = await getRelease(db, r.device_model, r.firmware_version)
    if (!release) return undefined
    if (row.state === 'pending') {
      // Once per device and rollout, not on every poll as the old service did.
      await startPolled(db, {
        rollout: r,
        row,
        deviceId: c.deviceId,
        to: 'notified',
        detail: 'offered by /api/firmware/check',
        from: c.current,
        via: 'check',
      })
    }
    return { rollout: r, release }
  }

  return { pullDecision, checkDecision }
}
