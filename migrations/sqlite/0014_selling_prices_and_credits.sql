-- SQLite twin of migrations/postgres/0014_selling_prices_and_credits.sql. Selling prices: each
-- request is booked with what the customer is charged; older records sold at cost.
ALTER TABLE usage_records ADD COLUMN spend_nano BIGINT;
UPDATE usage_records SET spend_nano = cost_nano;
ALTER TABLE usage_daily ADD COLUMN spend_nano BIGINT NOT NULL DEFAULT 0;
UPDATE usage_daily SET spend_nano = cost_nano;
