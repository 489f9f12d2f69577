-- Foundation (SQLite twin of migrations/postgres/0001_foundation.sql).
-- UUIDs are 16-byte BLOBs and timestamps RFC 3339 TEXT, both bound from Rust.

CREATE TABLE customers (
    id          BLOB PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE,
    name        TEXT,
    created_at  TEXT NOT NULL
);

CREATE TABLE api_keys (
    id           BLOB PRIMARY KEY,
    customer_id  BLOB NOT NULL REFERENCES customers(id),
    key_hash     BLOB NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    name         TEXT,
    plan         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE INDEX api_keys_customer_idx ON api_keys (customer_id);
CREATE INDEX api_keys_prefix_idx ON api_keys (prefix);

CREATE TABLE key_changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash   BLOB NOT NULL,
    changed_at TEXT NOT NULL
);
