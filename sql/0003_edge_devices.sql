-- Edge device config and status history (old edge_devices_schema.sql; docs/compatibility.md, "Tables kept").
CREATE TABLE IF NOT EXISTS edge_device_configs (
  id          BIGSERIAL PRIMARY KEY,
  site_id     TEXT        NOT NULL,
  device_id   TEXT        NOT NULL,
  config      JSONB       NOT NULL,
  updated_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  UNIQUE (site_id, device_id)
);
CREATE INDEX IF NOT EXISTS idx_edge_configs_site_device ON edge_device_configs (site_id, device_id);
CREATE INDEX IF NOT EXISTS idx_edge_configs_config ON edge_device_configs USING GIN (config);

CREATE TABLE IF NOT EXISTS edge_device_status (
  id          BIGSERIAL PRIMARY KEY,
  site_id     TEXT        NOT NULL,
  device_id   TEXT        NOT NULL,
  status      JSONB       NOT NULL,
  ts          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
-- Its indexes are built after the migrations, concurrently (src/db/indexes.ts), as for measurements.

-- paku additions (a superset; no dashboard of the old stack reads them):
-- the LWT {"online":false} marks a device offline instead of being ignored (docs/compatibility.md, "Old bugs
-- and what paku does instead").
ALTER TABLE devices ADD COLUMN IF NOT EXISTS online BOOLEAN;
ALTER TABLE devices ADD COLUMN IF NOT EXISTS site_id TEXT;
