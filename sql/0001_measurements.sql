-- Generic telemetry, exactly as the old stack's init.sql (docs/compatibility.md, "Tables kept"), so existing
-- dashboards keep working.
-- IF NOT EXISTS everywhere: paku can be pointed at an existing paku-iot database and adopts its tables.
CREATE TABLE IF NOT EXISTS measurements (
  id          BIGSERIAL PRIMARY KEY,
  site_id     TEXT        NOT NULL,
  system      TEXT        NOT NULL,
  device_id   TEXT        NOT NULL,
  location    TEXT,
  mac         TEXT,
  ts          TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  metrics     JSONB       NOT NULL,
  created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
-- Production databases migrated by hand in 2025-12 may lack mac and created_at (docs/compatibility.md,
-- "Adopting an existing database"), and the old EcoFlow table paku's raw, model and created_at:
-- src/db/adopt.ts adds them after the migrations, each in a short transaction of its own, so that an
-- adopted table is never locked (and its writers never blocked) for as long as this whole migration takes.
-- Its indexes are built after the migrations too, concurrently (src/db/indexes.ts): an adopted table may
-- hold millions of rows.

COMMENT ON TABLE measurements IS 'One row per {site}/{system}/{device}/data message; identity comes from the topic.';
COMMENT ON COLUMN measurements.metrics IS 'The payload''s metrics object, verbatim.';

-- One row per EcoFlow poll (docs/compatibility.md, "Tables kept" and "Quota columns and units"): watts,
-- percent and minutes, whatever unit a device family reports them in (docs/ecoflow.md, "Units and quirks").
CREATE TABLE IF NOT EXISTS ecoflow_measurements (
  id                 BIGSERIAL PRIMARY KEY,
  device_sn          TEXT        NOT NULL,
  ts                 TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  soc_percent        INTEGER,
  remain_time_min    INTEGER,
  watts_in_sum       INTEGER,
  watts_out_sum      INTEGER,
  ac_out_watts       INTEGER,
  dc_out_watts       INTEGER,
  typec_out_watts    INTEGER,
  usb_out_watts      INTEGER,
  pv_in_watts        INTEGER,
  car_watts          INTEGER,
  usb1_watts         INTEGER,
  usb2_watts         INTEGER,
  qcusb1_watts       INTEGER,
  qcusb2_watts       INTEGER,
  typec1_watts       INTEGER,
  typec2_watts       INTEGER,
  inv_out_temp       NUMERIC,
  bms_temp           NUMERIC,
  bms_max_cell_temp  NUMERIC,
  bms_min_cell_temp  NUMERIC,
  mppt_temp          NUMERIC,
  inv_input_watts    NUMERIC,
  inv_ac_in_vol      NUMERIC,
  inv_out_vol        NUMERIC,
  inv_ac_in_amp      NUMERIC,
  inv_out_amp        NUMERIC,
  bms_amp            NUMERIC,
  bms_vol            NUMERIC,
  bms_min_cell_vol   NUMERIC,
  bms_max_cell_vol   NUMERIC,
  bms_remain_cap     NUMERIC,
  bms_full_cap       NUMERIC,
  bms_cycles         INTEGER,
  wifi_rssi          INTEGER,
  raw                JSONB,
  model              TEXT,
  created_at         TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
