-- The Hawk's alerts: one row per firing episode of an alert key (rule + subject), written
-- when it fires, while it holds, and when it resolves.

CREATE TABLE alerts (
    id                  UUID PRIMARY KEY,
    alert_key           TEXT NOT NULL,
    rule                TEXT NOT NULL,
    subject             TEXT NOT NULL,
    severity            TEXT NOT NULL CHECK (severity IN ('warning', 'critical')),
    state               TEXT NOT NULL CHECK (state IN ('firing', 'resolved')),
    detail              TEXT,
    first_seen          TIMESTAMPTZ NOT NULL,
    last_seen           TIMESTAMPTZ NOT NULL,
    resolved_at         TIMESTAMPTZ,
    occurrences         BIGINT NOT NULL,
    sample_request_ids  JSONB NOT NULL,
    notifications_sent  INTEGER NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX alerts_state_seen_idx ON alerts (state, last_seen);

ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
