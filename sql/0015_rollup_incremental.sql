-- Rollups add each row once (src/rollup): a pass aggregates the rows of the transactions that ended
-- since the last pass and merges them into their buckets, instead of recomputing every bucket that got a
-- row from all of its rows (five times per row, with 5-minute buckets and a pass a minute).
-- last_at is the time of `last`, so a late row is merged in without taking the place of a newer value.
-- Buckets written before this migration have none (NULL): a late row's value replaces theirs.
ALTER TABLE rollup_5m ADD COLUMN IF NOT EXISTS last_at TIMESTAMPTZ;
ALTER TABLE rollup_1h ADD COLUMN IF NOT EXISTS last_at TIMESTAMPTZ;
ALTER TABLE rollup_6h ADD COLUMN IF NOT EXISTS last_at TIMESTAMPTZ;
-- The rows of every transaction with a lower id are counted: the oldest transaction still running at the
-- last pass. NULL until the first pass after this migration, which recomputes the buckets that got rows
-- since the watermark and sets it.
ALTER TABLE rollup_state ADD COLUMN IF NOT EXISTS counted_below XID8;
