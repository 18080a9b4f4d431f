-- Who owns what in the broker, so that one login cannot take over another's session or fill the
-- broker's memory (src/broker/ledger.ts, src/broker/sensors.ts).

-- The owner of each persistent MQTT session: another principal may neither resume it nor take over
-- its client id, and it expires when its client stays away too long. principal NULL marks sessions
-- stored before owners were recorded; the next login with that client id claims them.
CREATE TABLE IF NOT EXISTS mqtt_sessions (
  client_id  TEXT        PRIMARY KEY,
  principal  TEXT,
  kind       TEXT,
  last_seen  TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
INSERT INTO mqtt_sessions (client_id)
  SELECT client_id FROM mqtt_subscriptions UNION SELECT client_id FROM mqtt_outgoing
ON CONFLICT DO NOTHING;

-- Whose retained message each is, for the per-login retained quotas (NULL: the broker's own, or
-- stored before owners were recorded).
ALTER TABLE mqtt_retained ADD COLUMN IF NOT EXISTS owner TEXT;

-- Relayed sensors (`{site}/sensors/{id}/data`, `{site}/fridge/{id}/data`) belong to the gateway that
-- published them first; another device publishing them is refused. assigned_by names the admin key
-- that moved a claim (NULL: claimed by the first publish).
CREATE TABLE IF NOT EXISTS mqtt_sensor_claims (
  site_id      TEXT        NOT NULL,
  system       TEXT        NOT NULL,
  sensor_id    TEXT        NOT NULL,
  device_id    TEXT        NOT NULL,
  claimed_at   TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  assigned_by  TEXT,
  PRIMARY KEY (site_id, system, sensor_id)
);
CREATE INDEX IF NOT EXISTS idx_mqtt_sensor_claims_device ON mqtt_sensor_claims (device_id);
