-- The Sentinel's findings: prompts judged as injections, and what the output shield removed
-- from answers. A short redacted excerpt is kept; the whole prompt only when the operator
-- sets `sentinel_store_prompts`.

CREATE TABLE findings (
    id                   UUID PRIMARY KEY,
    at                   TIMESTAMPTZ NOT NULL,
    request_id           TEXT NOT NULL,
    customer_id          UUID REFERENCES customers(id),
    key_id               UUID REFERENCES api_keys(id),
    kind                 TEXT NOT NULL CHECK (kind IN ('injection', 'system_prompt_leak', 'secret_leak')),
    severity             TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    score                DOUBLE PRECISION NOT NULL,
    verdict              TEXT NOT NULL,
    rules                TEXT NOT NULL,
    judge_verdict        TEXT,
    judge_reason         TEXT,
    judge_cost_nano_usd  BIGINT,
    excerpt              TEXT NOT NULL,
    prompt               TEXT
);
-- Strike counts: a customer's high-severity findings of one day.
CREATE INDEX findings_customer_idx ON findings (customer_id, at);

ALTER TABLE findings ENABLE ROW LEVEL SECURITY;
