-- The admin dashboard: login sessions, and the daily usage rollup that keeps the money page
-- and the margins report fast over millions of usage records.

-- A session is known by a keyed hash of its token (HMAC-SHA256 under the admin key): the
-- database never holds a usable cookie, and changing OMI_ADMIN_KEY ends every session.
CREATE TABLE admin_sessions (
    token_hash  BYTEA PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX admin_sessions_expires_idx ON admin_sessions (expires_at);

-- One row per customer and UTC day, added to in the same transaction as the usage records
-- themselves, so it always equals the sum of usage_records.
CREATE TABLE usage_daily (
    day                TEXT NOT NULL,
    customer_id        UUID NOT NULL,
    requests           BIGINT NOT NULL,
    errors             BIGINT NOT NULL,
    byok_requests      BIGINT NOT NULL,
    prompt_tokens      BIGINT NOT NULL,
    completion_tokens  BIGINT NOT NULL,
    cost_nano          BIGINT NOT NULL,
    unpriced_requests  BIGINT NOT NULL,
    PRIMARY KEY (day, customer_id)
);
CREATE INDEX usage_daily_customer_idx ON usage_daily (customer_id, day);

-- Records written before this migration.
INSERT INTO usage_daily (day, customer_id, requests, errors, byok_requests, prompt_tokens, completion_tokens,
                         cost_nano, unpriced_requests)
SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), customer_id, COUNT(*),
       SUM(CASE WHEN status >= 500 THEN 1 ELSE 0 END), SUM(CASE WHEN byok THEN 1 ELSE 0 END),
       SUM(prompt_tokens), SUM(completion_tokens), COALESCE(SUM(cost_nano), 0),
       SUM(CASE WHEN cost_nano IS NULL THEN 1 ELSE 0 END)
FROM usage_records GROUP BY 1, 2;

ALTER TABLE admin_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_daily ENABLE ROW LEVEL SECURITY;
