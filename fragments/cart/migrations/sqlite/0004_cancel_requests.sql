-- A paid order the shopper asked to cancel: it stays paid, and nothing is refunded, until inventory
-- confirms that its stock was released (so it cannot ship) or refuses because it already shipped.
ALTER TABLE orders ADD COLUMN cancel_requested_at_ms BIGINT;
