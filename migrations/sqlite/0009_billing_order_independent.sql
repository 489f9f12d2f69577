-- SQLite twin of migrations/postgres/0009_billing_order_independent.sql. Lemon Squeezy does not
-- promise delivery order, so every lifecycle fact must count whenever it arrives. `ended`: a
-- subscription event said the term is over (expired, or cancelled past its end); like
-- `refunded` it is final, whatever the age of the event that said it.
ALTER TABLE purchases ADD COLUMN ended INTEGER NOT NULL DEFAULT 0;

-- Deliveries that arrived before the purchase they belong to (a refund before its order, an
-- invoice before its subscription): applied, and deleted, in the transaction that makes the
-- purchase (or links the subscription) appear.
CREATE TABLE waiting_webhook_events (
    event_id         BLOB PRIMARY KEY REFERENCES webhook_events(id),
    order_id         BIGINT,
    subscription_id  BIGINT,
    CHECK ((order_id IS NULL) <> (subscription_id IS NULL))
);
CREATE INDEX waiting_webhook_events_order_idx ON waiting_webhook_events (order_id);
CREATE INDEX waiting_webhook_events_subscription_idx ON waiting_webhook_events (subscription_id);
