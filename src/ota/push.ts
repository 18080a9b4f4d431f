import type { OtaCounters } from './metrics.js'
import { markNotified, type Rollout } from './rollouts.js'
import type { Db } from './store.js'

/** The broker's publish: cmd/ota goes out with QoS 1. */
export type Publish = (
  topic: string,
  payload: string,
  opts: { qos: 0 | 1; retain: boolean },
) => Promise<void>

/** The links paku hands devices, under ota.publicUrl (or the fallback when that is empty). */
export function createLinks(publicUrl: () => string) {
  return {
    downloadUrl(model: string, version: string): string {
      return `${publicUrl()}/api/firmware/download/${encodeURIComponent(version)}?device_model=${encodeURIComponent(model)}`
    },
    /** The URL a polling device gives httpUpdate.update(): its model, id and pull token in the query. */
    updateUrl(model: string, deviceId: string, token: string): string {
      const q = new URLSearchParams({ device_model: model, device_id: deviceId, token })
      return `${publicUrl()}/api/firmware/update?${q.toString()}`
    },
  }
}

export type Notify = (
  r: Pick<Rollout, 'id' | 'device_model' | 'firmware_version'>,
  checksum: string | null | undefined,
  deviceId: string,
) => Promise<void>

/**
 * Sends the paku-core command (docs/compatibility.md, "The OTA command push"): the device acks on
 * ota/status, downloads the URL and checks the image against `checksum` (the release's SHA-256; an empty
 * one skips its check). The device's action is marked notified once the broker took the command.
 */
export function createNotifier(o: {
  db: () => Db
  publish: Publish
  counters: OtaCounters
  downloadUrl: (model: string, version: string) => string
}): Notify {
  return async (r, checksum, deviceId) => {
    const payload = JSON.stringify({
      url: o.downloadUrl(r.device_model, r.firmware_version),
      version: r.firmware_version,
      checksum: checksum ?? '',
    })
    await o.publish(`paku/edge/${deviceId}/cmd/ota`, payload, { qos: 1, retain: false })
    await markNotified(o.db(), r.id, deviceId)
    o.counters.commandsSent++
  }
}
