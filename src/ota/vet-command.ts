import type { Enqueue } from './queue.js'
import {
  deviceTarget,
  isTarget,
  liveRollouts,
  markNotified,
  modelsOf,
  takeIn,
  type Rollout,
} from './rollouts.js'
import type { Db } from './store.js'

export type CommandVerdict = { deliver: boolean; reason: string }

/**
 * A cmd/ota that a client published (the old CI workflow's mosquitto_pub, an operator): each device
 * gets one per version. For a version a live rollout delivers to the device's model, only a device the
 * rollout targets gets it, and only the first one (paku may have sent it already, or sends none now
 * that the client did); a version no rollout delivers there passes as it is. Decided in the rollout
 * queue, so a rollout pass and a client's command never both send.
 */
export function createCommandVetting(o: { db: () => Db; enqueue: Enqueue }) {
  return async function vetCommand(deviceId: string, payload: Buffer): Promise<CommandVerdict> {
    const version = commandVersion(payload)
    if (version === undefined) return { deliver: true, reason: 'the command names no version' }
    let verdict: CommandVerdict | undefined
    await o.enqueue(async () => {
      verdict = await judge(o.db(), deviceId, version)
    })
    // Rollout work failing (the database away): the command goes as it would have without paku.
    return verdict ?? { deliver: true, reason: 'rollout state unavailable' }
  }
}

/** The verdict on a client's cmd/ota for `version` to `deviceId`; run inside the rollout queue. */
async function judge(db: Db, deviceId: string, version: string): Promise<CommandVerdict> {
  const target = await deviceTarget(db, deviceId, null)
  const live = (await liveRollouts(db)).filter(
    (r) =>
      r.firmware_version === version &&
      ((target.device_model !== null && modelsOf(r).includes(target.device_model)) ||
        isTarget(r, target)),
  )
  if (live.length === 0)
    return { deliver: true, reason: `no rollout delivers ${version} to ${deviceId}` }
  const r = live.find((x) => isTarget(x, target))
  if (!r)
    return {
      deliver: false,
      reason: `${deviceId} is not targeted by rollout ${(live[0] as Rollout).name}`,
    }
  if (r.status === 'paused') return { deliver: false, reason: `rollout ${r.name} is paused` }
  const row = await takeIn(db, {
    rollout: r,
    deviceId,
    current: target.current_firmware_version,
  })
  if (row.state !== 'pending')
    return {
      deliver: false,
      reason: `${deviceId} is ${row.state} in rollout ${r.name}: its cmd/ota for ${version} went out already`,
    }
  await markNotified(db, r.id, deviceId)
  return { deliver: true, reason: `the first cmd/ota for ${version} in rollout ${r.name}` }
}

/** The version a paku-core cmd/ota names (`{"url","version","checksum"}`), if any. */
function commandVersion(payload: Buffer): string | undefined {
  try {
    const p = JSON.parse(payload.toString('utf8')) as unknown
    const v = typeof p === 'object' && p !== null ? (p as { version?: unknown }).version : undefined
    return typeof v === 'string' && v !== '' ? v : undefined
  } catch {
    return undefined
  }
}
