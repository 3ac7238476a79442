-- Payments the merchant created, one row each; `status` follows PaymentStatus::as_str.
CREATE TABLE payments (
    id              TEXT PRIMARY KEY,
    caller          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 128),
    request_hash    TEXT NOT NULL,
    reference       TEXT NOT NULL CHECK (length(reference) BETWEEN 1 AND 128),
    amount_minor    BIGINT NOT NULL CHECK (amount_minor > 0),
    currency        TEXT NOT NULL CHECK (length(currency) = 3),
    description     TEXT NOT NULL CHECK (length(description) <= 200),
    return_url      TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('requires_payment_method', 'requires_action', 'succeeded', 'refunded', 'canceled')),
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL,
    UNIQUE (caller, idempotency_key)
);

-- Every card the shopper tried, and what happened (only the last four digits are kept).
CREATE TABLE attempts (
    payment_id TEXT NOT NULL REFERENCES payments (id),
    card_last4 TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    at_ms      BIGINT NOT NULL
);
CREATE INDEX attempts_by_payment ON attempts (payment_id, at_ms);

-- Transactional outbox of webhooks to the merchant: written with the state change, sent by the deliverer.
CREATE TABLE webhook_deliveries (
    event_id        TEXT PRIMARY KEY,
    payment_id      TEXT NOT NULL REFERENCES payments (id),
    body            TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    delivered_at_ms BIGINT,
    last_error      TEXT,
    created_at_ms   BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_ms) WHERE delivered_at_ms IS NULL;
