-- The idempotency key of a hold attempt whose answer never came (inventory timed out): the retry sends
-- the same key, so a reservation inventory did make is found again instead of made twice.
ALTER TABLE cart_items ADD COLUMN hold_key TEXT;

-- An order whose stock reservation may have been made although inventory's answer never came: the
-- background pass asks again with the same request (the key finds it) and releases it.
ALTER TABLE orders ADD COLUMN release_due BIGINT NOT NULL DEFAULT 0 CHECK (release_due IN (0, 1));
ALTER TABLE orders ADD COLUMN checkout_replaces TEXT;
