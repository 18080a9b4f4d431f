-- Per-device (and bridge/service) MQTT credentials. The password is stored as a scrypt hash
-- (`scrypt$N$r$p$salt$hash`, base64url), never in clear. Managed with `paku device add|list|remove`.
CREATE TABLE IF NOT EXISTS mqtt_credentials (
  username       TEXT        PRIMARY KEY,
  password_hash  TEXT        NOT NULL,
  role           TEXT        NOT NULL DEFAULT 'device' CHECK (role IN ('device', 'bridge', 'service')),
  created_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  last_used_at   TIMESTAMPTZ
);
