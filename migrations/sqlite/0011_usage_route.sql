-- SQLite twin of migrations/postgres/0011_usage_route.sql: which API a request spoke
-- (`chat`, `embeddings`, `completions`, `responses`, `messages`, `models`); none before it.
ALTER TABLE usage_records ADD COLUMN route TEXT;
