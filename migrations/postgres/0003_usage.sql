-- The Accountant: one usage record per request that reached the gateway with a valid key,
-- month-to-date counters for budgets, and the once-a-day summary claim.

CREATE TABLE usage_records (
    id                 UUID PRIMARY KEY,
    request_id         TEXT NOT NULL,
    at                 TIMESTAMPTZ NOT NULL,
    key_id             UUID NOT NULL,
    customer_id        UUID NOT NULL,
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
    streamed           BOOLEAN NOT NULL,
    byok               BOOLEAN NOT NULL,
    usage_estimated    BOOLEAN NOT NULL,
    aborted            BOOLEAN NOT NULL
);
CREATE INDEX usage_records_customer_at_idx ON usage_records (customer_id, at);
CREATE INDEX usage_records_at_idx ON usage_records (at);

CREATE TABLE usage_counters (
    customer_id  UUID NOT NULL,
    month        TEXT NOT NULL,
    cost_nano    BIGINT NOT NULL,
    tokens       BIGINT NOT NULL,
    PRIMARY KEY (customer_id, month)
);

CREATE TABLE daily_summaries (
    day          TEXT PRIMARY KEY,
    created_at   TIMESTAMPTZ NOT NULL
);

ALTER TABLE usage_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE daily_summaries ENABLE ROW LEVEL SECURITY;
