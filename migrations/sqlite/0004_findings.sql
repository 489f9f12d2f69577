-- SQLite twin of migrations/postgres/0004_findings.sql. The Sentinel's findings: prompts judged
-- as injections, and what the output shield removed from answers.

CREATE TABLE findings (
    id                   BLOB PRIMARY KEY,
    at                   TEXT NOT NULL,
    request_id           TEXT NOT NULL,
    customer_id          BLOB REFERENCES customers(id),
    key_id               BLOB REFERENCES api_keys(id),
    kind                 TEXT NOT NULL CHECK (kind IN ('injection', 'system_prompt_leak', 'secret_leak')),
    severity             TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    score                REAL NOT NULL,
    verdict              TEXT NOT NULL,
    rules                TEXT NOT NULL,
    judge_verdict        TEXT,
    judge_reason         TEXT,
    judge_cost_nano_usd  BIGINT,
    excerpt              TEXT NOT NULL,
    prompt               TEXT
);
CREATE INDEX findings_customer_idx ON findings (customer_id, at);
