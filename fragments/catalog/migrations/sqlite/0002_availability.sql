-- The inbox: every event applied here, by id, so a redelivered event has its effect once.
CREATE TABLE inbox (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT NOT NULL UNIQUE,
    producer       TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    sequence       BIGINT NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL
);

-- Availability per SKU, projected from inventory.stock_changed: the catalog never asks inventory.
CREATE TABLE availability (
    sku           TEXT PRIMARY KEY,
    on_hand       BIGINT NOT NULL CHECK (on_hand >= 0),
    available     BIGINT NOT NULL CHECK (available >= 0),
    -- inventory's outbox position of the event applied last; older events never overwrite newer ones
    sequence      BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
