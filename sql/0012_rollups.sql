-- Downsampled history so Grafana (and the API) stay fast on a year of data without dropping any raw
-- row: every numeric value of measurements.metrics, of the ecoflow_measurements columns and of the
-- edge_device_status JSON, per device, metric and 5-minute / 1-hour / 6-hour bucket. paku keeps them current
-- (src/rollup): it recomputes each bucket that received rows, so late rows (a replayed spool) count.
CREATE TABLE IF NOT EXISTS rollup_5m (
  source     TEXT             NOT NULL,  -- measurements | ecoflow | status
  site_id    TEXT             NOT NULL,
  system     TEXT             NOT NULL,
  device_id  TEXT             NOT NULL,
  metric     TEXT             NOT NULL,
  bucket     TIMESTAMPTZ      NOT NULL,
  location   TEXT,
  n          INTEGER          NOT NULL,  -- numeric samples in the bucket
  sum        DOUBLE PRECISION,
  min        DOUBLE PRECISION,
  max        DOUBLE PRECISION,
  last       TEXT,                       -- the bucket's last value as text (strings like heater_state too)
  PRIMARY KEY (source, site_id, system, device_id, metric, bucket)
);
CREATE TABLE IF NOT EXISTS rollup_1h (LIKE rollup_5m INCLUDING ALL);
-- Six-hour buckets for ranges beyond 90 days: a year is 1,460 points per series, finer than a pixel.
CREATE TABLE IF NOT EXISTS rollup_6h (LIKE rollup_5m INCLUDING ALL);
CREATE INDEX IF NOT EXISTS idx_rollup_5m_source_bucket ON rollup_5m (source, bucket);
CREATE INDEX IF NOT EXISTS idx_rollup_1h_source_bucket ON rollup_1h (source, bucket);
CREATE INDEX IF NOT EXISTS idx_rollup_6h_source_bucket ON rollup_6h (source, bucket);

-- Which rows are new since the last pass: created_at, indexed with BRIN (a few pages for a year of an
-- append-only table, nearly free on insert, unlike a b-tree on the ingest hot path).
-- The BRIN indexes are built after the migrations, concurrently (src/db/indexes.ts); an adopted
-- EcoFlow table gets its created_at from src/db/adopt.ts.

CREATE TABLE IF NOT EXISTS rollup_state (
  source     TEXT        PRIMARY KEY,
  watermark  TIMESTAMPTZ NOT NULL,       -- rows created before this (less a margin) are rolled up
  updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- Which devices each source has, for dashboard variables and device lists: a DISTINCT over a year of
-- raw rows takes seconds, this takes microseconds. Kept by the same passes.
CREATE TABLE IF NOT EXISTS rollup_series (
  source     TEXT        NOT NULL,
  site_id    TEXT        NOT NULL,
  system     TEXT        NOT NULL,
  device_id  TEXT        NOT NULL,
  first_at   TIMESTAMPTZ NOT NULL,
  last_at    TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (source, site_id, system, device_id)
);
