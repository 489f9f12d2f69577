-- SQLite twin of migrations/postgres/0012_usage_attempts.sql: upstream calls each request made
-- (retries and `[fallbacks]` included); one before it.
ALTER TABLE usage_records ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
