-- SQLite twin of migrations/postgres/0006_dashboard.sql. The admin dashboard: login sessions,
-- and the daily usage rollup that keeps the money page and the margins report fast.

CREATE TABLE admin_sessions (
    token_hash  BLOB PRIMARY KEY,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX admin_sessions_expires_idx ON admin_sessions (expires_at);

CREATE TABLE usage_daily (
    day                TEXT NOT NULL,
    customer_id        BLOB NOT NULL,
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

-- Records written before this migration (`at` is RFC 3339 in UTC: its first 10 characters are the day).
INSERT INTO usage_daily (day, customer_id, requests, errors, byok_requests, prompt_tokens, completion_tokens,
                         cost_nano, unpriced_requests)
SELECT substr(at, 1, 10), customer_id, COUNT(*),
       SUM(CASE WHEN status >= 500 THEN 1 ELSE 0 END), SUM(CASE WHEN byok THEN 1 ELSE 0 END),
       SUM(prompt_tokens), SUM(completion_tokens), COALESCE(SUM(cost_nano), 0),
       SUM(CASE WHEN cost_nano IS NULL THEN 1 ELSE 0 END)
FROM usage_records GROUP BY 1, 2;
