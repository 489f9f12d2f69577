-- Key expiry and rotation. `api_keys.expires_at`: after it the key is refused (401
-- `key_expired`); NULL never expires. A subscription on trial carries its `trial_ends_at` to its
-- key. A rotation's email names the key it replaces (`email_outbox.replaces_prefix`).
-- `key_rotations` makes a customer's retried rotate (same `Idempotency-Key` from the same key,
-- within 24 h) return the same new key: it keeps the new key sealed under the OLD key's plaintext,
-- which the database never holds, and the lifecycle sweep deletes rows after 24 h.
ALTER TABLE api_keys ADD COLUMN expires_at TIMESTAMPTZ;
ALTER TABLE purchases ADD COLUMN trial_ends_at TIMESTAMPTZ;
ALTER TABLE email_outbox ADD COLUMN replaces_prefix TEXT;

CREATE TABLE key_rotations (
    old_key_id       UUID NOT NULL REFERENCES api_keys(id),
    idempotency_key  TEXT NOT NULL,
    new_key_id       UUID NOT NULL REFERENCES api_keys(id),
    sealed_key       BYTEA NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (old_key_id, idempotency_key)
);
CREATE INDEX key_rotations_created_idx ON key_rotations (created_at);

ALTER TABLE key_rotations ENABLE ROW LEVEL SECURITY;
