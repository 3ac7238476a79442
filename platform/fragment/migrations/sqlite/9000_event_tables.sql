-- The event tables of every fragment, owned by the runtime (tessera_kit::events): a fragment declares
-- what it publishes and consumes and gets these with its database. Version 9000 keeps them apart from the
-- fragments' own migrations; IF NOT EXISTS, because fragments created before the runtime owned them made
-- the same tables in their own migrations.

-- The transactional outbox: events written in the same transaction as the change they describe.
CREATE TABLE IF NOT EXISTS outbox (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    event_type     TEXT NOT NULL,
    version        BIGINT NOT NULL CHECK (version > 0),
    aggregate_type TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    payload        TEXT NOT NULL,
    occurred_at_ms BIGINT NOT NULL
);

-- One row per event and subscriber: pending until delivered, dead after too many failed attempts.
CREATE TABLE IF NOT EXISTS outbox_deliveries (
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
CREATE INDEX IF NOT EXISTS outbox_deliveries_due ON outbox_deliveries (status, next_attempt_at_ms);
CREATE INDEX IF NOT EXISTS outbox_deliveries_order ON outbox_deliveries (subscriber, aggregate_key, status, seq);

-- The inbox: every event applied here, by id, so a redelivered event has its effect once.
CREATE TABLE IF NOT EXISTS inbox (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT NOT NULL UNIQUE,
    producer       TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    sequence       BIGINT NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL
);

-- Who receives which event type, as consumers subscribed (never written by the producer's code): kept so
-- a restarted producer addresses events to a subscriber that is down at the moment.
CREATE TABLE IF NOT EXISTS subscriptions (
    subscriber       TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    subscribed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (subscriber, event_type)
);
