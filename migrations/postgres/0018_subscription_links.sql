-- Lemon Squeezy's links for the subscriber (`urls.customer_portal`, `urls.update_payment_method` of
-- subscription events), stored as the newest subscription state carried them: the customer portal's
-- billing page links to them.
ALTER TABLE purchases ADD COLUMN customer_portal_url TEXT;
ALTER TABLE purchases ADD COLUMN update_payment_url TEXT;
