-- Selling prices: each request is booked with what the customer is charged (the upstream cost
-- with the plan's markup at the time), so a later markup change never rewrites history. Before
-- this migration every plan sold at cost: the selling price of older records is their cost.
ALTER TABLE usage_records ADD COLUMN spend_nano BIGINT;
UPDATE usage_records SET spend_nano = cost_nano;
ALTER TABLE usage_daily ADD COLUMN spend_nano BIGINT NOT NULL DEFAULT 0;
UPDATE usage_daily SET spend_nano = cost_nano;
