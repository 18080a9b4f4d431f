-- The open device routes (/api/firmware/check and /api/firmware/update) trust nobody by default: a pull
-- request may register a new polled device, but may change a known device or count toward a rollout's
-- thresholds only when it proves to be that device.

-- Per-device pull tokens. Only a SHA-256 of each token is kept: the tokens are 256-bit random strings,
-- so a fast hash is enough (as for admin_keys); the token itself is shown once, when it is created.
CREATE TABLE IF NOT EXISTS device_pull_tokens (
  device_id     TEXT        PRIMARY KEY REFERENCES devices (device_id) ON DELETE CASCADE,
  token_sha256  TEXT        NOT NULL UNIQUE,
  created_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  last_used_at  TIMESTAMPTZ
);

-- A rollout row taken in through an unauthenticated pull or check still moves through its states (so a
-- polling device that failed is not offered the image again), but never counts when the rollout is judged.
ALTER TABLE rollout_devices ADD COLUMN IF NOT EXISTS verified BOOLEAN NOT NULL DEFAULT true;

-- Devices paku registered from a pull or check before this file: recorded as registered over HTTP, so a
-- check-in with the same MAC may still refresh them. A device that has sent an MQTT status has a site_id
-- and stays managed over MQTT, whatever an earlier unauthenticated request wrote into its protocol.
UPDATE devices SET metadata = metadata || '{"registered_via": "http"}'::jsonb
  WHERE metadata->>'protocol' = 'http' AND metadata->>'registered_via' IS NULL AND site_id IS NULL;

-- Their rollout rows came from unauthenticated requests too (no device has a token yet).
UPDATE rollout_devices rd SET verified = false FROM devices d
  WHERE d.device_id = rd.device_id AND d.metadata->>'registered_via' = 'http' AND d.site_id IS NULL;
