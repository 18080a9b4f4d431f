-- ingest_dedup kept a row for every QoS 1/2 message id a client had used: up to 65,535 rows per
-- client, of which paku only ever reads the newest 1,024 (src/ingest/index.ts, RECENT_IDS). And since
-- ids cycle, nearly every message updated a row on a full page, which moved the row and added an index
-- entry: dead rows and index growth for autovacuum at every message.
-- Now a client's ids go into 1,024 slots (message id mod 1,024): the table holds a client's newest
-- 1,024 ids and no more, and pages are left half empty so the update of a slot stays on its page
-- (a HOT update: no index entry, dead versions pruned on the page).
CREATE TABLE ingest_dedup_slots (
  client_id   TEXT        NOT NULL,
  slot        SMALLINT    NOT NULL CHECK (slot BETWEEN 0 AND 1023),
  message_id  INTEGER     NOT NULL,
  digest      TEXT        NOT NULL,
  seen_at     TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  PRIMARY KEY (client_id, slot)
) WITH (fillfactor = 50);

-- The newest id of each slot carries over, so a redelivery right after the upgrade is still recognised.
INSERT INTO ingest_dedup_slots (client_id, slot, message_id, digest, seen_at)
SELECT DISTINCT ON (client_id, message_id % 1024) client_id, message_id % 1024, message_id, digest, seen_at
FROM ingest_dedup
ORDER BY client_id, message_id % 1024, seen_at DESC, message_id DESC;

DROP TABLE ingest_dedup;
ALTER TABLE ingest_dedup_slots RENAME TO ingest_dedup;
ALTER INDEX ingest_dedup_slots_pkey RENAME TO ingest_dedup_pkey;
