import { decodePayload, LEGACY_RUUVI_METRICS, parseTimestamp } from './payloads.js'
import type { Route } from './topic.js'

/** Identifies a QoS 1/2 message so its redelivery (DUP) is not stored twice. */
export type DedupKey = { clientId: string; messageId: number; digest: string }

/** One pending database write. JSON columns are carried as text, ready for a jsonb cast. */
export type Row = (
  | {
      kind: 'measurement'
      siteId: string
      system: string
      deviceId: string
      location: string | null
      mac: string | null
      ts: Date
      metrics: string
    }
  | {
      kind: 'status'
      siteId: string
      deviceId: string
      status: string
      ts: Date
      receivedAt: Date
      /** False only for an explicit `"online": false` (the LWT); any other status is a sign of life. */
      online: boolean
      model: string | null
      firmware: string | null
    }
  | { kind: 'config'; siteId: string; deviceId: string; config: string; receivedAt: Date }
  | {
      kind: 'ota'
      sub: 'status' | 'progress' | 'result'
      deviceId: string
      payload: Record<string, unknown>
      receivedAt: Date
    }
  | {
      /** One EcoFlow poll (src/ecoflow), written through the same durable batch path. */
      kind: 'ecoflow'
      deviceSn: string
      ts: Date
      model: string
      columns: Record<string, number | null>
      raw: string
    }
  | Reject
) & { dedup?: DedupKey }

export type Reject = {
  kind: 'reject'
  topic: string
  clientId: string | null
  deviceId: string | null
  reason: string
  payload: Buffer
  payloadBytes: number
  receivedAt: Date
}

export type RowResult = { ok: true; row: Row } | { ok: false; reason: string }

/** Decodes a payload that carries an optional `timestamp`, and resolves that timestamp. */
function decodeTimed<T extends 'data' | 'legacy_ruuvi' | 'status'>(
  type: T,
  payload: Uint8Array,
  receivedAt: Date,
) {
  const d = decodePayload(type, payload)
  if (!d.ok) return d
  const ts = parseTimestamp((d.value as { timestamp?: string | null }).timestamp, receivedAt)
  return ts.ok ? { ok: true as const, value: d.value, ts: ts.ts } : ts
}

/** Validates one message for its route and turns it into the row to write (docs/compatibility.md, "Topics and payloads"). */
export function toRow(route: Route, payload: Uint8Array, receivedAt: Date): RowResult {
  switch (route.type) {
    case 'data': {
      const d = decodeTimed('data', payload, receivedAt)
      if (!d.ok) return d
      return {
        ok: true,
        row: {
          kind: 'measurement',
          siteId: route.siteId,
          system: route.system,
          deviceId: route.deviceId,
          location: d.value.location ?? null,
          mac: d.value.mac ?? null,
          ts: d.ts,
          metrics: JSON.stringify(d.value.metrics),
        },
      }
    }
    case 'legacy_ruuvi': {
      const d = decodeTimed('legacy_ruuvi', payload, receivedAt)
      if (!d.ok) return d
      // The old one-off migration's mapping (docs/compatibility.md, "Legacy flat Ruuvi payloads"): nulls
      // stripped, `mac` into metrics.
      const metrics: Record<string, unknown> = {}
      const p = d.value as Record<string, unknown>
      for (const key of [...LEGACY_RUUVI_METRICS, 'mac'] as const) {
        if (p[key] !== undefined && p[key] !== null) metrics[key] = p[key]
      }
      return {
        ok: true,
        row: {
          kind: 'measurement',
          siteId: route.siteId,
          system: 'sensors',
          deviceId: d.value.sensor_id || route.sensorId,
          location: null,
          mac: null,
          ts: d.ts,
          metrics: JSON.stringify(metrics),
        },
      }
    }
    case 'status': {
      const d = decodeTimed('status', payload, receivedAt)
      if (!d.ok) return d
      return {
        ok: true,
        row: {
          kind: 'status',
          siteId: route.siteId,
          deviceId: route.deviceId,
          status: JSON.stringify(d.value),
          ts: d.ts,
          receivedAt,
          online: d.value.online !== false,
          model: d.value.device_model || null,
          firmware: d.value.firmware_version || null,
        },
      }
    }
    case 'config': {
      const d = decodePayload('config', payload)
      if (!d.ok) return d
      const row: Row = {
        kind: 'config',
        siteId: route.siteId,
        deviceId: route.deviceId,
        config: JSON.stringify(d.value),
        receivedAt,
      }
      return { ok: true, row }
    }
    case 'ota_status':
    case 'ota_progress':
    case 'ota_result': {
      const d = decodePayload(route.type, payload)
      if (!d.ok) return d
      const sub =
        route.type === 'ota_status'
          ? 'status'
          : route.type === 'ota_progress'
            ? 'progress'
            : 'result'
      return {
        ok: true,
        row: { kind: 'ota', sub, deviceId: route.deviceId, payload: d.value, receivedAt },
      }
    }
  }
}
