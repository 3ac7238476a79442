-- The transactional outbox: events written in the same transaction as the stock change they describe.
CREATE TABLE outbox (
    seq            BIGSERIAL PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    event_type     TEXT NOT NULL,
    version        BIGINT NOT NULL CHECK (version > 0),
    aggregate_type TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    payload        TEXT NOT NULL,
    occurred_at_ms BIGINT NOT NULL
);

-- One row per event and subscriber: pending until delivered, dead after too many failed attempts.
CREATE TABLE outbox_deliveries (
    seq                BIGINT NOT NULL REFERENCES outbox (seq),
    subscriber         TEXT NOT NULL,
    aggregate_key      TEXT NOT NULL,
    status             TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts           BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at_ms BIGINT NOT NULL,
    last_error         TEXT,
    delivered_at_ms    BIGINT,
    PRIMARY KEY (seq, subscriber)
);
CREATE INDEX outbox_deliveries_due ON outbox_deliveries (status, next_attempt_at_ms);
CREATE INDEX outbox_deliveries_order ON outbox_deliveries (subscriber, aggregate_key, status, seq);
