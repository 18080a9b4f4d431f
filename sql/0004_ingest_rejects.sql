-- Messages paku refused to store, with the reason, for inspection (design A4.5).
-- payload holds at most the first few KiB of the raw bytes; payload_bytes is the full size.
CREATE TABLE IF NOT EXISTS ingest_rejects (
  id             BIGSERIAL PRIMARY KEY,
  received_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  topic          TEXT        NOT NULL,
  client_id      TEXT,
  device_id      TEXT,
  reason         TEXT        NOT NULL,
  payload        BYTEA,
  payload_bytes  INTEGER     NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_ingest_rejects_received ON ingest_rejects (received_at DESC);
CREATE INDEX IF NOT EXISTS idx_ingest_rejects_device ON ingest_rejects (device_id, received_at DESC);
COMMENT ON TABLE ingest_rejects IS 'Refused MQTT messages; read payloads with convert_from(payload, ''UTF8'') or encode(payload, ''escape'').';
