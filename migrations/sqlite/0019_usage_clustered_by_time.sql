-- SQLite only: usage_records stored in the order of `at` (a WITHOUT ROWID table keyed by
-- (at, id)) instead of a rowid table with a separate index on `id` and another on `at`. Every
-- request writes one record, and each index a record goes into is work on every request (the
-- `at` index was 5k instructions of a one-row insert's 24k); keyed by time, the table itself
-- serves what the `at` index did (retention's deletes of whole old months, the admin's
-- newest-first list), and the records of a batch, minted in time order, go to the table's end.
-- `id` stays unique by construction (a UUIDv7 minted once per record), as on PostgreSQL, whose
-- key is (id, at) since 0017.
--
-- The table is rebuilt: a new one made, the rows copied, the old one dropped, the new one
-- renamed. sqlx runs a migration in one transaction, so a failure leaves the table as it was.
CREATE TABLE usage_records_by_time (
    id                 BLOB NOT NULL,
    request_id         TEXT NOT NULL,
    at                 TEXT NOT NULL,
    key_id             BLOB NOT NULL,
    customer_id        BLOB NOT NULL,
    plan               TEXT NOT NULL,
    model              TEXT,
    provider           TEXT,
    prompt_tokens      BIGINT NOT NULL,
    cached_tokens      BIGINT NOT NULL,
    completion_tokens  BIGINT NOT NULL,
    -- Nano-dollars; NULL when the model has no price (unknown, never silently $0); 0 for BYOK.
    cost_nano          BIGINT,
    status             INTEGER NOT NULL,
    latency_us         BIGINT NOT NULL,
    upstream_us        BIGINT,
    streamed           INTEGER NOT NULL,
    byok               INTEGER NOT NULL,
    usage_estimated    INTEGER NOT NULL,
    aborted            INTEGER NOT NULL,
    cache_write_tokens BIGINT NOT NULL DEFAULT 0,
    route              TEXT,
    attempts           INTEGER NOT NULL DEFAULT 1,
    spend_nano         BIGINT,
    PRIMARY KEY (at, id)
) WITHOUT ROWID;

INSERT INTO usage_records_by_time (id, request_id, at, key_id, customer_id, plan, model, provider, prompt_tokens,
    cached_tokens, completion_tokens, cost_nano, status, latency_us, upstream_us, streamed, byok, usage_estimated,
    aborted, cache_write_tokens, route, attempts, spend_nano)
SELECT id, request_id, at, key_id, customer_id, plan, model, provider, prompt_tokens,
    cached_tokens, completion_tokens, cost_nano, status, latency_us, upstream_us, streamed, byok, usage_estimated,
    aborted, cache_write_tokens, route, attempts, spend_nano
FROM usage_records;

DROP TABLE usage_records;
ALTER TABLE usage_records_by_time RENAME TO usage_records;
CREATE INDEX usage_records_customer_at_idx ON usage_records (customer_id, at);
