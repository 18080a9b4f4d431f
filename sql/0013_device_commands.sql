-- Commands sent to devices over the API (src/commands): published to the device's control, config/set
-- or heater cmd topic, then closed by the device's acknowledgement, an error, or their TTL.
CREATE TABLE IF NOT EXISTS device_commands (
  id          TEXT        PRIMARY KEY,                 -- cmd_<random>; also sent to the device as command_id
  site_id     TEXT        NOT NULL,
  device_id   TEXT        NOT NULL,
  type        TEXT        NOT NULL,                    -- control | config | heater
  topic       TEXT        NOT NULL,
  payload     JSONB       NOT NULL,
  qos         SMALLINT    NOT NULL,
  retain      BOOLEAN     NOT NULL,
  status      TEXT        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'acknowledged', 'failed', 'expired')),
  created_at  TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  expires_at  TIMESTAMPTZ NOT NULL,
  closed_at   TIMESTAMPTZ,
  closed_by   TEXT,                                    -- the topic whose message closed it, 'ttl' or 'publish'
  ack         JSONB,                                   -- that message's payload (when JSON)
  error       TEXT,
  created_by  TEXT
);
CREATE INDEX IF NOT EXISTS idx_device_commands_device_created ON device_commands (device_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_device_commands_created ON device_commands (created_at DESC);
-- The expiry sweep and the start-up load read only the open ones.
CREATE INDEX IF NOT EXISTS idx_device_commands_pending ON device_commands (expires_at) WHERE status = 'pending';
