-- Named admin API keys with scopes (read, upload, rollout, admin). Only a SHA-256 of each key is kept:
-- the keys are 256-bit random tokens, so a fast hash is enough (no dictionary to protect against).
CREATE TABLE IF NOT EXISTS admin_keys (
  name          TEXT        PRIMARY KEY,
  key_sha256    TEXT        NOT NULL UNIQUE,
  scopes        TEXT[]      NOT NULL,
  created_at    TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  last_used_at  TIMESTAMPTZ,
  revoked_at    TIMESTAMPTZ
);
