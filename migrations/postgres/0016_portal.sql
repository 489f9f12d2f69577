-- The customer portal: one-time sign-in links, customer sessions, the sign-in attempt
-- counters shared by every instance.

-- `email_outbox.kind` (0014) is `portal_link` for a sign-in link: its token travels in
-- `key_plaintext`, erased once the email is sent or has failed for good.

-- When the customer last signed in to the portal (shown on the admin's customer page).
ALTER TABLE customers ADD COLUMN portal_signed_in_at TIMESTAMPTZ;

-- A sign-in link's token, known only by its SHA-256; deleted when used (single use).
CREATE TABLE portal_login_tokens (
    token_hash   BYTEA PRIMARY KEY,
    customer_id  UUID NOT NULL REFERENCES customers(id),
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX portal_login_tokens_expires_idx ON portal_login_tokens (expires_at);

-- A customer's session, known only by the SHA-256 of its cookie.
CREATE TABLE portal_sessions (
    token_hash   BYTEA PRIMARY KEY,
    customer_id  UUID NOT NULL REFERENCES customers(id),
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX portal_sessions_expires_idx ON portal_sessions (expires_at);

-- Sign-in requests per bucket (a client IP or an address's hash) and fixed window.
CREATE TABLE portal_sign_in_attempts (
    bucket        TEXT NOT NULL,
    window_start  TIMESTAMPTZ NOT NULL,
    attempts      BIGINT NOT NULL,
    PRIMARY KEY (bucket, window_start)
);

ALTER TABLE portal_login_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE portal_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE portal_sign_in_attempts ENABLE ROW LEVEL SECURITY;
