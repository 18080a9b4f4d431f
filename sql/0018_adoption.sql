-- One-time rewrites of data adopted from the old stack (src/db/adopt.ts): which ran, over which rows
-- (ids up to upto_id, present when the step first ran), how far they got, and when they finished.
CREATE TABLE IF NOT EXISTS adoption_steps (
  step      TEXT        PRIMARY KEY,
  upto_id   BIGINT      NOT NULL,
  done_id   BIGINT      NOT NULL,
  rows      BIGINT,
  started_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  done_at   TIMESTAMPTZ
);
