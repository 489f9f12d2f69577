-- SQLite twin of migrations/postgres/0005_alerts.sql: the Hawk's alerts, one row per
-- firing episode of an alert key (rule + subject).

CREATE TABLE alerts (
    id                  BLOB PRIMARY KEY,
    alert_key           TEXT NOT NULL,
    rule                TEXT NOT NULL,
    subject             TEXT NOT NULL,
    severity            TEXT NOT NULL CHECK (severity IN ('warning', 'critical')),
    state               TEXT NOT NULL CHECK (state IN ('firing', 'resolved')),
    detail              TEXT,
    first_seen          TEXT NOT NULL,
    last_seen           TEXT NOT NULL,
    resolved_at         TEXT,
    occurrences         BIGINT NOT NULL,
    sample_request_ids  TEXT NOT NULL,
    notifications_sent  INTEGER NOT NULL,
    updated_at          TEXT NOT NULL
);
CREATE INDEX alerts_state_seen_idx ON alerts (state, last_seen);
