-- Spooled batches already written, so a replay interrupted by a crash never writes a batch twice
-- (the id is inserted in the same transaction as the batch's rows).
CREATE TABLE IF NOT EXISTS ingest_spool_batches (
  id          UUID        PRIMARY KEY,
  written_at  TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_ingest_spool_batches_written ON ingest_spool_batches (written_at);

-- The last QoS 1/2 message id per MQTT client that reached the database, so a redelivery (DUP)
-- of a message whose PUBACK was lost is recognised and not stored twice (design A4.4).
CREATE TABLE IF NOT EXISTS ingest_dedup (
  client_id   TEXT        NOT NULL,
  message_id  INTEGER     NOT NULL,
  digest      TEXT        NOT NULL,
  seen_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  PRIMARY KEY (client_id, message_id)
);
