-- The key vending machine: purchases (one per Lemon Squeezy order), every webhook received,
-- the revenue ledger, and the transactional outbox of key emails.

ALTER TABLE customers ADD COLUMN ls_customer_id BIGINT;
ALTER TABLE customers ADD COLUMN custom_data JSONB;

CREATE TABLE purchases (
    order_id             BIGINT PRIMARY KEY,
    subscription_id      BIGINT UNIQUE,
    customer_id          UUID NOT NULL REFERENCES customers(id),
    key_id               UUID UNIQUE REFERENCES api_keys(id),
    plan                 TEXT NOT NULL,
    variant_id           BIGINT,
    subscription_status  TEXT,
    status_updated_at    TIMESTAMPTZ,
    ends_at              TIMESTAMPTZ,
    grace_until          TIMESTAMPTZ,
    payment_updated_at   TIMESTAMPTZ,
    refunded             BOOLEAN NOT NULL DEFAULT FALSE,
    test_mode            BOOLEAN NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX purchases_customer_idx ON purchases (customer_id);

CREATE TABLE webhook_events (
    id                   UUID PRIMARY KEY,
    dedupe_key           TEXT NOT NULL UNIQUE,
    event_name           TEXT NOT NULL,
    resource_type        TEXT,
    resource_id          TEXT,
    resource_updated_at  TEXT,
    test_mode            BOOLEAN NOT NULL,
    body                 TEXT NOT NULL,
    received_at          TIMESTAMPTZ NOT NULL,
    outcome              TEXT NOT NULL,
    detail               TEXT
);
CREATE INDEX webhook_events_received_idx ON webhook_events (received_at);

CREATE TABLE revenue_ledger (
    id            UUID PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('payment', 'refund')),
    source        TEXT NOT NULL CHECK (source IN ('order', 'invoice')),
    source_id     BIGINT NOT NULL,
    customer_id   UUID NOT NULL REFERENCES customers(id),
    amount_cents  BIGINT NOT NULL CHECK (amount_cents >= 0),
    currency      TEXT NOT NULL,
    test_mode     BOOLEAN NOT NULL,
    occurred_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (kind, source, source_id)
);
CREATE INDEX revenue_ledger_time_idx ON revenue_ledger (occurred_at, customer_id);

CREATE TABLE email_outbox (
    id               UUID PRIMARY KEY,
    customer_id      UUID NOT NULL REFERENCES customers(id),
    key_id           UUID REFERENCES api_keys(id),
    to_email         TEXT NOT NULL,
    plan             TEXT NOT NULL,
    key_plaintext    TEXT,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    locked_until     TIMESTAMPTZ,
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    sent_at          TIMESTAMPTZ
);
CREATE INDEX email_outbox_due_idx ON email_outbox (status, next_attempt_at);

ALTER TABLE purchases ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE revenue_ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE email_outbox ENABLE ROW LEVEL SECURITY;
