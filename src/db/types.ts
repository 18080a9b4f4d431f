import type { ColumnType, Generated, JSONColumnType } from 'kysely'

/** Kysely table types mirror SQL's snake_case: sql/ is the source of truth, mapping happens at the edges. */
type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>
type Json = JSONColumnType<Record<string, unknown>, string, string>

export type MeasurementsTable = {
  id: Generated<string>
  site_id: string
  system: string
  device_id: string
  location: string | null
  mac: string | null
  ts: Timestamp
  metrics: Json
  created_at: Generated<Date>
}

export type EdgeDeviceStatusTable = {
  id: Generated<string>
  site_id: string
  device_id: string
  status: Json
  ts: Timestamp
  created_at: Generated<Date>
}

export type EdgeDeviceConfigsTable = {
  id: Generated<string>
  site_id: string
  device_id: string
  config: Json
  updated_at: Timestamp
}

export type DevicesTable = {
  id: Generated<string>
  device_id: string
  mac_address: string | null
  device_model: string
  current_firmware_version: string | null
  last_seen: Date | null
  created_at: Generated<Date>
  metadata: Json | null
  online: boolean | null
  site_id: string | null
}

export type DeviceUpdateStatusTable = {
  id: Generated<string>
  device_id: string
  firmware_version: string
  status: string
  error_message: string | null
  progress_percent: number | null
  started_at: Date | null
  completed_at: Date | null
  reported_at: Timestamp
  metadata: Json | null
}

export type OtaEventsTable = {
  id: Generated<string>
  event_type: string
  device_id: string | null
  firmware_version: string | null
  rollout_id: string | null
  event_data: Json | null
  created_at: Generated<Date>
  created_by: string | null
}

export type IngestRejectsTable = {
  id: Generated<string>
  received_at: Timestamp
  topic: string
  client_id: string | null
  device_id: string | null
  reason: string
  payload: Buffer | null
  payload_bytes: number
}

export type DB = {
  measurements: MeasurementsTable
  edge_device_status: EdgeDeviceStatusTable
  edge_device_configs: EdgeDeviceConfigsTable
  devices: DevicesTable
  device_update_status: DeviceUpdateStatusTable
  ota_events: OtaEventsTable
  ingest_rejects: IngestRejectsTable
}
