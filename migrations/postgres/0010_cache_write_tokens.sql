-- Prompt tokens written to the provider's prompt cache (Anthropic bills them above the input
-- price; part of prompt_tokens, like cached_tokens). Records from before this migration wrote none.
ALTER TABLE usage_records ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0;
