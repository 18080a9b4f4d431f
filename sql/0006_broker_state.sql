-- The broker's durable state (design A4.3): retained messages, persistent sessions' subscriptions,
-- queued QoS 1/2 deliveries for their clients, inbound QoS 2 messages awaiting PUBREL, and wills.
-- Written behind by src/broker/pg-persistence.ts, loaded at start-up.
CREATE TABLE IF NOT EXISTS mqtt_retained (
  topic       TEXT        PRIMARY KEY,
  payload     BYTEA       NOT NULL,
  packet      JSONB       NOT NULL,
  updated_at  TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS mqtt_subscriptions (
  client_id  TEXT    NOT NULL,
  topic      TEXT    NOT NULL,
  options    JSONB   NOT NULL,
  PRIMARY KEY (client_id, topic)
);

CREATE TABLE IF NOT EXISTS mqtt_outgoing (
  seq             BIGSERIAL PRIMARY KEY,
  client_id       TEXT    NOT NULL,
  broker_id       TEXT,
  broker_counter  BIGINT,
  message_id      INTEGER,
  payload         BYTEA,
  packet          JSONB   NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_mqtt_outgoing_client ON mqtt_outgoing (client_id, seq);
CREATE INDEX IF NOT EXISTS idx_mqtt_outgoing_message ON mqtt_outgoing (client_id, message_id);

CREATE TABLE IF NOT EXISTS mqtt_incoming (
  client_id   TEXT    NOT NULL,
  message_id  INTEGER NOT NULL,
  payload     BYTEA,
  packet      JSONB   NOT NULL,
  PRIMARY KEY (client_id, message_id)
);

CREATE TABLE IF NOT EXISTS mqtt_wills (
  client_id  TEXT  PRIMARY KEY,
  payload    BYTEA,
  packet     JSONB NOT NULL
);
