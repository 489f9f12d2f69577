-- SQLite twin of migrations/postgres/0014_selling_prices_and_credits.sql. Selling prices: each
-- request is booked with what the customer is charged; older records sold at cost.
ALTER TABLE usage_records ADD COLUMN spend_nano BIGINT;
UPDATE usage_records SET spend_nano = cost_nano;
ALTER TABLE usage_daily ADD COLUMN spend_nano BIGINT NOT NULL DEFAULT 0;
UPDATE usage_daily SET spend_nano = cost_nano;

-- Prepaid credit: the ledger (each movement once per `source`), the balance kept equal to its
-- sum, the holds of requests in flight, and the credit a pack purchase granted.
CREATE TABLE credit_ledger (
    id           BLOB PRIMARY KEY,
    customer_id  BLOB NOT NULL REFERENCES customers (id),
    kind         TEXT NOT NULL,
    amount_nano  BIGINT NOT NULL,
    source       TEXT NOT NULL UNIQUE,
    note         TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX credit_ledger_customer_idx ON credit_ledger (customer_id, created_at);

CREATE TABLE credit_balances (
    customer_id       BLOB PRIMARY KEY REFERENCES customers (id),
    balance_nano      BIGINT NOT NULL,
    low_balance_nano  BIGINT NOT NULL DEFAULT 0,
    notified          TEXT
);

CREATE TABLE credit_holds (
    id           BLOB PRIMARY KEY,
    customer_id  BLOB NOT NULL,
    amount_nano  BIGINT NOT NULL,
    expires_at   TEXT NOT NULL
);
CREATE INDEX credit_holds_customer_idx ON credit_holds (customer_id, expires_at);

ALTER TABLE purchases ADD COLUMN credit_nano BIGINT;

-- The outbox also carries credit notices (`kind` credit_low / credit_exhausted, with the balance).
ALTER TABLE email_outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'key';
ALTER TABLE email_outbox ADD COLUMN credit_nano BIGINT;
