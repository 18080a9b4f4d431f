-- OTA subsystem: firmware images in PostgreSQL, rollouts with stages and thresholds, per-device
-- actions, device groups. The old stack's OTA tables and columns stay as they are (docs/compatibility.md,
-- "Tables kept"); this only adds.

-- The image bytes live beside their release, so the binary stays stateless. STORAGE EXTERNAL keeps
-- them uncompressed in TOAST, which lets substring() read just the chunks a Range request asks for.
CREATE TABLE IF NOT EXISTS firmware_images (
  release_id  BIGINT PRIMARY KEY REFERENCES firmware_releases (id) ON DELETE CASCADE,
  data        BYTEA  NOT NULL
);
ALTER TABLE firmware_images ALTER COLUMN data SET STORAGE EXTERNAL;

ALTER TABLE firmware_releases ADD COLUMN IF NOT EXISTS checksum_md5 TEXT;

-- Rollout state. Rows adopted from the old OTA service were informational only (the CI workflow pushed
-- the commands itself): they come in paused, so a migration never starts pushing updates to devices.
ALTER TABLE rollout_configurations
  ADD COLUMN IF NOT EXISTS status TEXT,
  ADD COLUMN IF NOT EXISTS status_reason TEXT,
  ADD COLUMN IF NOT EXISTS stages INTEGER[],
  ADD COLUMN IF NOT EXISTS stage_index INTEGER NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS auto_advance BOOLEAN NOT NULL DEFAULT false,
  ADD COLUMN IF NOT EXISTS success_threshold_percent INTEGER NOT NULL DEFAULT 100,
  ADD COLUMN IF NOT EXISTS error_threshold_count INTEGER,
  ADD COLUMN IF NOT EXISTS error_threshold_percent INTEGER,
  ADD COLUMN IF NOT EXISTS error_threshold_min_executed INTEGER NOT NULL DEFAULT 1,
  ADD COLUMN IF NOT EXISTS allow_downgrade BOOLEAN NOT NULL DEFAULT false,
  -- The error threshold counts failures since the last resume, so resuming is not undone at once.
  ADD COLUMN IF NOT EXISTS errors_since TIMESTAMPTZ;
UPDATE rollout_configurations
  SET status = CASE WHEN is_active IS NOT FALSE THEN 'paused' ELSE 'cancelled' END,
      status_reason = 'adopted from the old OTA service; resume it to let paku deliver it'
  WHERE status IS NULL;
ALTER TABLE rollout_configurations ALTER COLUMN status SET DEFAULT 'running';
ALTER TABLE rollout_configurations ALTER COLUMN status SET NOT NULL;
ALTER TABLE rollout_configurations ADD CONSTRAINT rollout_configurations_status_check
  CHECK (status IN ('running', 'paused', 'completed', 'cancelled'));
CREATE INDEX IF NOT EXISTS idx_rollout_configurations_status ON rollout_configurations (status);

-- One row per device a rollout has taken in: the per-device action and its state machine.
CREATE TABLE IF NOT EXISTS rollout_devices (
  rollout_id        BIGINT      NOT NULL REFERENCES rollout_configurations (id) ON DELETE CASCADE,
  device_id         TEXT        NOT NULL,
  state             TEXT        NOT NULL CHECK (state IN
                      ('pending', 'notified', 'accepted', 'downloading', 'installing', 'installed',
                       'succeeded', 'failed', 'cancelled', 'skipped')),
  stage             INTEGER     NOT NULL,
  from_version      TEXT,
  progress_percent  INTEGER,
  detail            TEXT,
  attempts          INTEGER     NOT NULL DEFAULT 0,
  notified_at       TIMESTAMPTZ,
  created_at        TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  updated_at        TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  PRIMARY KEY (rollout_id, device_id)
);
CREATE INDEX IF NOT EXISTS idx_rollout_devices_device ON rollout_devices (device_id);

CREATE TABLE IF NOT EXISTS device_groups (
  name         TEXT        PRIMARY KEY,
  description  TEXT,
  created_at   TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE TABLE IF NOT EXISTS device_group_members (
  group_name  TEXT        NOT NULL REFERENCES device_groups (name) ON DELETE CASCADE,
  device_id   TEXT        NOT NULL,
  added_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  PRIMARY KEY (group_name, device_id)
);
CREATE INDEX IF NOT EXISTS idx_device_group_members_device ON device_group_members (device_id);
