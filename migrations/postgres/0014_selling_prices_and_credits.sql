-- Selling prices: each request is booked with what the customer is charged (the upstream cost
-- with the plan's markup at the time), so a later markup change never rewrites history. Before
-- this migration every plan sold at cost: the selling price of older records is their cost.
ALTER TABLE usage_records ADD COLUMN spend_nano BIGINT;
UPDATE usage_records SET spend_nano = cost_nano;
ALTER TABLE usage_daily ADD COLUMN spend_nano BIGINT NOT NULL DEFAULT 0;
UPDATE usage_daily SET spend_nano = cost_nano;

-- Prepaid credit. The ledger holds every movement (a pack bought, a refund taking back what is
-- left of it, an operator's grant, a request's draw), each once per `source`; the balance row
-- is added to in the same transaction as each ledger row, so it always equals the ledger's sum.
CREATE TABLE credit_ledger (
    id           UUID PRIMARY KEY,
    customer_id  UUID NOT NULL REFERENCES customers (id),
    kind         TEXT NOT NULL,
    amount_nano  BIGINT NOT NULL,
    source       TEXT NOT NULL UNIQUE,
    note         TEXT,
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX credit_ledger_customer_idx ON credit_ledger (customer_id, created_at);

-- `low_balance_nano` is the low-balance threshold (a share of the last pack); `notified` the last
-- notice sent (`credit_low`, `credit_exhausted`), cleared when the balance rises above the threshold,
-- so each crossing is told once.
CREATE TABLE credit_balances (
    customer_id       UUID PRIMARY KEY REFERENCES customers (id),
    balance_nano      BIGINT NOT NULL,
    low_balance_nano  BIGINT NOT NULL DEFAULT 0,
    notified          TEXT
);

-- A request in flight on a prepaid plan holds an estimate of its price until it is settled;
-- a hold past `expires_at` (its settlement was lost) no longer counts.
CREATE TABLE credit_holds (
    id           UUID PRIMARY KEY,
    customer_id  UUID NOT NULL,
    amount_nano  BIGINT NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX credit_holds_customer_idx ON credit_holds (customer_id, expires_at);

-- The credit a pack purchase granted (NULL for a plan purchase): its refund takes back what is
-- left of it, and never changes the key, which may hold other packs' credit.
ALTER TABLE purchases ADD COLUMN credit_nano BIGINT;

-- The outbox also carries credit notices (`kind` credit_low / credit_exhausted, with the balance).
ALTER TABLE email_outbox ADD COLUMN kind TEXT NOT NULL DEFAULT 'key';
ALTER TABLE email_outbox ADD COLUMN credit_nano BIGINT;

ALTER TABLE credit_ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE credit_balances ENABLE ROW LEVEL SECURITY;
ALTER TABLE credit_holds ENABLE ROW LEVEL SECURITY;
