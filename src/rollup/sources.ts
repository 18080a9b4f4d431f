import { sql, type RawBuilder } from 'kysely'

/**
 * The tables rolled up, each as a SELECT of (ts, site_id, system, device_id, location, metric, value)
 * with `value` a jsonb scalar: numbers are aggregated, anything else keeps its last value.
 */
export type Source = { name: 'measurements' | 'ecoflow' | 'status'; table: string; samples: (from: Date, to: Date) => RawBuilder<unknown> }

export const SOURCES: readonly Source[] = [
  {
    name: 'measurements',
    table: 'measurements',
    samples: (from, to) => sql`
      SELECT m.ts, m.site_id, m.system, m.device_id, m.location, kv.key AS metric, kv.value
      FROM measurements m CROSS JOIN LATERAL jsonb_each(m.metrics) kv
      WHERE m.ts >= ${from} AND m.ts < ${to}`,
  },
  {
    name: 'ecoflow',
    table: 'ecoflow_measurements',
    // Every numeric column: the row as JSON, less what is not a reading.
    samples: (from, to) => sql`
      SELECT e.ts, '' AS site_id, 'ecoflow' AS system, e.device_sn AS device_id, NULL::text AS location, kv.key AS metric, kv.value
      FROM ecoflow_measurements e
      CROSS JOIN LATERAL jsonb_each(to_jsonb(e) - 'id' - 'device_sn' - 'ts' - 'raw' - 'model' - 'created_at') kv
      WHERE e.ts >= ${from} AND e.ts < ${to}`,
  },
  {
    name: 'status',
    table: 'edge_device_status',
    samples: (from, to) => sql`
      SELECT s.ts, s.site_id, 'edge' AS system, s.device_id, NULL::text AS location, kv.key AS metric, kv.value
      FROM edge_device_status s CROSS JOIN LATERAL jsonb_each(s.status) kv
      WHERE s.ts >= ${from} AND s.ts < ${to} AND kv.key IN ('signal_strength_dbm', 'uptime_seconds', 'heater_status', 'online')`,
  },
]
