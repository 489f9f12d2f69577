-- usage_records partitioned by UTC month (declarative, on `at`), so old months can be dropped
-- whole (`usage_retention_days`) while usage_daily keeps their totals, and so the table's
-- indexes grow per month rather than forever. The server creates the partitions of the current
-- and the next two months (src/store/partitions.rs); a DEFAULT partition takes a row whose month
-- has none, and the server moves such rows into their month's partition on its next run.
--
-- A key of a partitioned table must include the partition key: the primary key becomes
-- (id, at). `id` alone stays unique by construction (a UUIDv7 minted once per record, written
-- with its `at` in one all-or-nothing batch), and (id, at) still refuses the same record twice.
--
-- The existing table is renamed, a partitioned one made LIKE it (so every column, default and
-- NOT NULL carries over in the same order), the partitions of the months it holds are created
-- (plus the current and next month), and its rows are moved. One transaction: a failure leaves
-- the table as it was.
ALTER TABLE usage_records RENAME TO usage_records_unpartitioned;
ALTER INDEX usage_records_pkey RENAME TO usage_records_unpartitioned_pkey;
ALTER INDEX usage_records_customer_at_idx RENAME TO usage_records_unpartitioned_customer_at_idx;
ALTER INDEX usage_records_at_idx RENAME TO usage_records_unpartitioned_at_idx;

CREATE TABLE usage_records (LIKE usage_records_unpartitioned INCLUDING DEFAULTS) PARTITION BY RANGE (at);
ALTER TABLE usage_records ADD PRIMARY KEY (id, at);
CREATE INDEX usage_records_customer_at_idx ON usage_records (customer_id, at);
CREATE INDEX usage_records_at_idx ON usage_records (at);
ALTER TABLE usage_records ENABLE ROW LEVEL SECURITY;

-- Partitions are named usage_records_YYYY_MM and bounded by UTC month starts. Row level security
-- is not inherited: each partition turns it on (a partition is a table Supabase would expose).
DO $$
DECLARE
    month_start TIMESTAMP;
    name TEXT;
BEGIN
    FOR month_start IN
        SELECT DISTINCT date_trunc('month', at AT TIME ZONE 'UTC') FROM usage_records_unpartitioned
        UNION
        SELECT date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => ahead)
        FROM generate_series(0, 1) AS ahead
    LOOP
        name := 'usage_records_' || to_char(month_start, 'YYYY_MM');
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF usage_records FOR VALUES FROM (%L) TO (%L)',
            name,
            to_char(month_start, 'YYYY-MM-DD') || ' 00:00:00+00',
            to_char(month_start + INTERVAL '1 month', 'YYYY-MM-DD') || ' 00:00:00+00'
        );
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', name);
    END LOOP;
END
$$;

CREATE TABLE usage_records_default PARTITION OF usage_records DEFAULT;
ALTER TABLE usage_records_default ENABLE ROW LEVEL SECURITY;

INSERT INTO usage_records SELECT * FROM usage_records_unpartitioned;
DROP TABLE usage_records_unpartitioned;
