-- Carts: one open cart per signed-in user, or an anonymous one found by the hash of its cookie.
-- 'checking_out' locks a cart while an order is being placed; 'ordered' and 'merged' end it.
CREATE TABLE carts (
    id            TEXT PRIMARY KEY,
    user_id       TEXT,
    token_hash    TEXT UNIQUE,
    status        TEXT NOT NULL CHECK (status IN ('open', 'checking_out', 'ordered', 'merged')),
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    CHECK ((user_id IS NULL) <> (token_hash IS NULL))
);
CREATE UNIQUE INDEX carts_one_active_per_user ON carts (user_id) WHERE user_id IS NOT NULL AND status IN ('open', 'checking_out');

-- Lines, each held by its own soft reservation in inventory ('held' until held_until_ms); 'pending' when
-- inventory could not be reached (retried), 'short' when the stock is no longer there.
CREATE TABLE cart_items (
    cart_id          TEXT NOT NULL REFERENCES carts (id),
    sku              TEXT NOT NULL CHECK (char_length(sku) BETWEEN 1 AND 32),
    quantity         BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    seen_price_minor BIGINT,
    reservation_id   TEXT,
    held_until_ms    BIGINT,
    hold_state       TEXT NOT NULL CHECK (hold_state IN ('held', 'pending', 'short')),
    hold_note        TEXT,
    added_at_ms      BIGINT NOT NULL,
    updated_at_ms    BIGINT NOT NULL,
    PRIMARY KEY (cart_id, sku)
);
CREATE INDEX cart_items_pending ON cart_items (hold_state);

-- The first cut kept bare lines per user: they become the users' open carts, waiting for a hold.
INSERT INTO carts (id, user_id, token_hash, status, created_at_ms, updated_at_ms)
    SELECT 'migrated-' || user_id, user_id, NULL, 'open', MIN(updated_at) * 1000, MAX(updated_at) * 1000
    FROM cart_lines GROUP BY user_id;
INSERT INTO cart_items (cart_id, sku, quantity, seen_price_minor, reservation_id, held_until_ms, hold_state, hold_note, added_at_ms, updated_at_ms)
    SELECT 'migrated-' || user_id, sku, quantity, NULL, NULL, NULL, 'pending', NULL, updated_at * 1000, updated_at * 1000
    FROM cart_lines;
DROP TABLE cart_lines;

-- What the catalog says each SKU costs (from catalog.product_changed), newest event wins.
CREATE TABLE prices (
    sku         TEXT PRIMARY KEY,
    product_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    price_minor BIGINT NOT NULL CHECK (price_minor >= 0),
    currency    TEXT NOT NULL,
    sequence    BIGINT NOT NULL
);

-- Orders. 'placing' while the cart's stock is being reserved (the idempotency key's row doubles as the
-- lock against a second click), 'failed' when it could not be.
CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    cart_id         TEXT NOT NULL REFERENCES carts (id),
    idempotency_key TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('placing', 'failed', 'awaiting_payment', 'paid', 'fulfilled', 'cancelled', 'refunded')),
    failure         TEXT,
    ship_name       TEXT NOT NULL,
    ship_street     TEXT NOT NULL,
    ship_city       TEXT NOT NULL,
    ship_postcode   TEXT NOT NULL,
    ship_country    TEXT NOT NULL,
    shipping_method TEXT NOT NULL,
    shipping_minor  BIGINT NOT NULL CHECK (shipping_minor >= 0),
    items_minor     BIGINT NOT NULL CHECK (items_minor >= 0),
    total_minor     BIGINT NOT NULL CHECK (total_minor >= 0),
    currency        TEXT NOT NULL,
    reservation_id  TEXT,
    payment_id      TEXT UNIQUE,
    pay_url         TEXT,
    refund_due      BIGINT NOT NULL DEFAULT 0 CHECK (refund_due IN (0, 1)),
    refund_reason   TEXT,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX orders_by_user ON orders (user_id, created_at_ms);

-- The price snapshot an order was placed at.
CREATE TABLE order_items (
    order_id         TEXT NOT NULL REFERENCES orders (id),
    sku              TEXT NOT NULL,
    name             TEXT NOT NULL,
    unit_price_minor BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    quantity         BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    PRIMARY KEY (order_id, sku)
);

-- What happened to an order, for its status timeline.
CREATE TABLE order_timeline (
    position BIGSERIAL PRIMARY KEY,
    order_id TEXT NOT NULL REFERENCES orders (id),
    at_ms    BIGINT NOT NULL,
    status   TEXT NOT NULL,
    note     TEXT NOT NULL
);
CREATE INDEX order_timeline_by_order ON order_timeline (order_id, position);

-- Payment webhooks applied here, by the provider's event id: a redelivery has its effect once.
CREATE TABLE payment_events (
    event_id       TEXT PRIMARY KEY,
    kind           TEXT NOT NULL,
    payment_id     TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL
);

-- The transactional outbox (cart.order_paid, cart.order_cancelled) and the inbox (catalog's and
-- inventory's events), as every producing and consuming service has them (tessera_kit::events).
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
CREATE TABLE inbox (
    position       BIGSERIAL PRIMARY KEY,
    event_id       TEXT NOT NULL UNIQUE,
    producer       TEXT NOT NULL,
    event_type     TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    sequence       BIGINT NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    received_at_ms BIGINT NOT NULL
);
