-- Upstream calls each request made (retries and `[fallbacks]` included); `provider` and `model`
-- name the one that answered. Records booked before this migration made one.
ALTER TABLE usage_records ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
