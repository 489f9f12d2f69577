-- SQLite twin of migrations/postgres/0013_key_expiry_rotation.sql: key expiry (`expires_at`,
-- NULL never expires), a trial's end on its purchase, the key a rotation email replaces, and
-- the idempotency records of customer rotations (the new key sealed under the old key's
-- plaintext; deleted after 24 h).
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
ALTER TABLE purchases ADD COLUMN trial_ends_at TEXT;
ALTER TABLE email_outbox ADD COLUMN replaces_prefix TEXT;

CREATE TABLE key_rotations (
    old_key_id       BLOB NOT NULL REFERENCES api_keys(id),
    idempotency_key  TEXT NOT NULL,
    new_key_id       BLOB NOT NULL REFERENCES api_keys(id),
    sealed_key       BLOB NOT NULL,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (old_key_id, idempotency_key)
);
CREATE INDEX key_rotations_created_idx ON key_rotations (created_at);
