-- Which API a request spoke (`chat`, `embeddings`, `completions`, `responses`, `messages`,
-- `models`): one pipeline serves them all, and the books tell them apart. Records booked before
-- this migration have none.
ALTER TABLE usage_records ADD COLUMN route TEXT;
