import * as v from 'valibot'
import { SEGMENT } from './params.js'

/**
 * paku-core's HTTP telemetry transport (`PakuIotClient`; docs/compatibility.md, "Telemetry over HTTP"): one reading
 * `{device_id, timestamp, metric, value, unit?}` or a batch `{device_id, batch_timestamp, readings[]}`.
 * Readings become `{site}/{system}/{device}/data` messages, one per distinct timestamp, which then take
 * the MQTT path (same payload schema, batching, spool and durability).
 */

export const MAX_READINGS = 1000

const name = (field: string, description: string) =>
  v.pipe(
    v.string(`${field} must be a string`),
    v.regex(SEGMENT, `${field} must be 1–128 characters without / + # or control characters`),
    v.description(description),
  )
// Epoch numbers are accepted besides ISO strings: an ESP without an RTC library has only time().
const stamp = (field: string) =>
  v.optional(
    v.nullable(
      v.pipe(
        v.union(
          [
            v.pipe(v.string(), v.maxLength(64, `${field} is too long`)),
            v.pipe(
              v.number(),
              v.finite(),
              v.minValue(0, `${field} must not be negative`),
              v.maxValue(253_402_300_799_999, `${field} is after the year 9999`),
            ),
          ],
          `${field} must be an ISO 8601 string or epoch seconds`,
        ),
        v.description('ISO 8601 or epoch seconds; missing, null or "" = receive time'),
      ),
    ),
  )
const value = v.union(
  [
    v.pipe(v.number(), v.finite('value must be finite')),
    v.boolean(),
    v.pipe(v.string(), v.maxLength(1024, 'value is too long')),
  ],
  'value must be a number, a string or true/false',
)
const unit = v.optional(
  v.nullable(
    v.pipe(
      v.string('unit must be a string'),
      v.maxLength(32, 'unit is too long'),
      v.description('accepted, not stored'),
    ),
  ),
)
const where = {
  site_id: v.optional(name('site_id', 'default paku')),
  system: v.optional(name('system', 'default edge')),
}

export const SingleReading = v.strictObject({
  device_id: name('device_id', 'Device id'),
  timestamp: stamp('timestamp'),
  metric: name('metric', 'Metric, e.g. temperature_c'),
  value,
  unit,
  ...where,
})
export const BatchReadings = v.strictObject({
  device_id: name('device_id', 'Device id'),
  batch_timestamp: stamp('batch_timestamp'),
  readings: v.pipe(
    v.array(
      v.strictObject({
        metric: name('metric', 'Metric, e.g. temperature_c'),
        value,
        unit,
        timestamp: stamp('timestamp'),
      }),
      'readings must be an array',
    ),
    v.minLength(1, 'readings must not be empty'),
    v.maxLength(MAX_READINGS, `at most ${MAX_READINGS} readings per request`),
  ),
  ...where,
})
export const TelemetryBody = v.union([SingleReading, BatchReadings])

export type TelemetryMessage = { topic: string; payload: Buffer; readings: number }

/** Epoch seconds (or milliseconds, when the number is that large) → ISO; strings pass through for ingest to check. */
function iso(t: string | number | null | undefined): string | null {
  if (t === undefined || t === null) return null
  if (typeof t === 'string') return t
  return new Date(t > 1e11 ? t : t * 1000).toISOString()
}

/**
 * Groups readings by timestamp into data payloads (docs/compatibility.md, "Sensor data"). Units are not stored:
 * measurements has no unit column.
 */
export function toMessages(
  body: v.InferOutput<typeof TelemetryBody>,
  defaults: { siteId: string; system: string },
): TelemetryMessage[] {
  const readings =
    'readings' in body
      ? body.readings.map((r) => ({
          metric: r.metric,
          value: r.value,
          ts: iso(r.timestamp ?? body.batch_timestamp),
        }))
      : [{ metric: body.metric, value: body.value, ts: iso(body.timestamp) }]
  const byTs = new Map<string, { metrics: Record<string, unknown>; n: number }>()
  for (const r of readings) {
    const key = r.ts ?? ''
    const g = byTs.get(key) ?? { metrics: {}, n: 0 }
    // Two values of one metric at one instant: the later one in the request wins.
    g.metrics[r.metric] = r.value
    g.n++
    byTs.set(key, g)
  }
  const topic = `${body.site_id ?? defaults.siteId}/${body.system ?? defaults.system}/${body.device_id}/data`
  return [...byTs].map(([ts, g]) => ({
    topic,
    payload: Buffer.from(
      JSON.stringify({
        device_id: body.device_id,
        ...(ts ? { timestamp: ts } : {}),
        metrics: g.metrics,
      }),
    ),
    readings: g.n,
  }))
}
