import { HTTPException } from 'hono/http-exception'
import { pullTrust, type PullTrust } from './pull-tokens.js'
import {
  refreshPolledDevice,
  registerCheckedDevice,
  registerPolledDevice,
  type CheckedDevice,
  type Db,
  type PolledDevice,
} from './store.js'

/*
 * Who may do what on the open device routes. With its pull token a request is that device (routes.ts).
 * Without one it may register a device paku does not know, and refresh a device it registered over
 * HTTP only with the MAC stored for it; a device known over MQTT, through the admin API, or holding a
 * token is refused (403) and nothing is written.
 */

/** The pull token a request carries: `?token=` (an HTTPUpdate client can only set a URL) or `Authorization: Bearer`. */
export function requestToken(
  query: string | undefined,
  authorization: string | undefined,
): string | undefined {
  if (query !== undefined && query !== '') return query
  return authorization?.match(/^Bearer\s+(\S+)\s*$/i)?.[1]
}

/** Registers an unknown polling device, or refreshes one registered over HTTP whose stored MAC the request has; else 403. */
export async function admitPolled(db: Db, d: PolledDevice): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const trust = await pullTrust(db, d.deviceId)
    // Lost a race with another request registering the same id: judge the row it wrote.
    if (!trust.exists) {
      if (await registerPolledDevice(db, d)) return
      continue
    }
    refuseManaged(d.deviceId, trust)
    if (trust.mac === null || trust.mac.toUpperCase() !== d.mac.toUpperCase()) {
      throw new HTTPException(403, {
        message: `MAC does not match the one device ${d.deviceId} registered with; pull requests for it from another MAC need its pull token (POST /api/admin/devices/${d.deviceId}/pull-token)`,
      })
    }
    await refreshPolledDevice(db, d, { claimMac: false })
    return
  }
  throw new Error(`device ${d.deviceId} appeared and vanished while it was being registered`)
}

/**
 * Registers an unknown device for the old /check. A known one registered over HTTP is answered but not
 * changed (a check names no MAC, so nothing proves who asks); any other known device is a 403.
 */
export async function admitChecked(db: Db, d: CheckedDevice): Promise<void> {
  const { deviceId } = d
  for (let attempt = 0; attempt < 2; attempt++) {
    const trust = await pullTrust(db, deviceId)
    if (!trust.exists) {
      if (await registerCheckedDevice(db, d)) return
      continue
    }
    refuseManaged(deviceId, trust)
    return
  }
  throw new Error(`device ${deviceId} appeared and vanished while it was being registered`)
}

function refuseManaged(deviceId: string, trust: Extract<PullTrust, { exists: true }>): void {
  if (trust.hasToken)
    throw new HTTPException(403, {
      message: `device ${deviceId} has a pull token: send it as ?token= or Authorization: Bearer`,
    })
  if (!trust.viaHttp) {
    throw new HTTPException(403, {
      message: `device ${deviceId} is managed over MQTT or by an admin; pull requests for it need its pull token (POST /api/admin/devices/${deviceId}/pull-token)`,
    })
  }
}
