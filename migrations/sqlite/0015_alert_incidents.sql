-- SQLite twin of migrations/postgres/0015_alert_incidents.sql: the incident every instance
-- shares, one row per alert key, where each notification is claimed before Slack hears it.

CREATE TABLE alert_incidents (
    alert_key    TEXT PRIMARY KEY,
    state        TEXT NOT NULL CHECK (state IN ('firing', 'resolved')),
    severity     TEXT NOT NULL CHECK (severity IN ('warning', 'critical')),
    watchers     INTEGER NOT NULL,
    fired_at     TEXT NOT NULL,
    notified_at  TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
