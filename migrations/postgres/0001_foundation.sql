-- Foundation: customers, their API keys (hashes only) and the key-change log that
-- every instance polls to drop revoked keys from its cache within 2 s.

CREATE TABLE customers (
    id          UUID PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE,
    name        TEXT,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_keys (
    id           UUID PRIMARY KEY,
    customer_id  UUID NOT NULL REFERENCES customers(id),
    key_hash     BYTEA NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    name         TEXT,
    plan         TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
    created_at   TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
CREATE INDEX api_keys_customer_idx ON api_keys (customer_id);
CREATE INDEX api_keys_prefix_idx ON api_keys (prefix);

CREATE TABLE key_changes (
    seq        BIGSERIAL PRIMARY KEY,
    key_hash   BYTEA NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL
);

-- Supabase exposes the public schema through its Data API: RLS with no policies keeps
-- every row away from anon/authenticated; the service role and direct connections bypass it.
ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE key_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE _sqlx_migrations ENABLE ROW LEVEL SECURITY;
