-- One row per alert key: the incident every instance shares. Each instance's Hawk claims a
-- notification here before Slack hears it (fire, escalate, remind, resolve), so one message
-- goes out per incident however many instances see the trouble.

CREATE TABLE alert_incidents (
    alert_key    TEXT PRIMARY KEY,
    state        TEXT NOT NULL CHECK (state IN ('firing', 'resolved')),
    severity     TEXT NOT NULL CHECK (severity IN ('warning', 'critical')),
    -- Instances whose own episode of it is firing; the one that brings it to 0 resolves it.
    watchers     INTEGER NOT NULL,
    fired_at     TIMESTAMPTZ NOT NULL,
    notified_at  TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

ALTER TABLE alert_incidents ENABLE ROW LEVEL SECURITY;
