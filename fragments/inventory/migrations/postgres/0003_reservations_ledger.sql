-- Stock gets every counter of the model.
ALTER TABLE stock_levels
    ADD CONSTRAINT stock_location_length CHECK (char_length(location) BETWEEN 1 AND 32),
    ADD COLUMN soft_reserved BIGINT NOT NULL DEFAULT 0 CHECK (soft_reserved >= 0),
    ADD COLUMN hard_reserved BIGINT NOT NULL DEFAULT 0 CHECK (hard_reserved >= 0),
    ADD COLUMN unavailable   BIGINT NOT NULL DEFAULT 0 CHECK (unavailable >= 0),
    ADD COLUMN safety_stock  BIGINT NOT NULL DEFAULT 0 CHECK (safety_stock >= 0),
    ADD COLUMN incoming      BIGINT NOT NULL DEFAULT 0 CHECK (incoming >= 0),
    -- Units promised or held back never exceed the units in the building.
    ADD CONSTRAINT stock_commitments_within_on_hand CHECK (soft_reserved + hard_reserved + unavailable <= on_hand);
ALTER TABLE stock_levels ALTER COLUMN on_hand SET DEFAULT 0;

-- Reservations: a hold on stock for a cart (soft, expiring) or a paid order (hard).
CREATE TABLE reservations (
    id              TEXT PRIMARY KEY,
    caller          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL CHECK (char_length(idempotency_key) BETWEEN 1 AND 128),
    request_hash    TEXT NOT NULL,
    owner           TEXT NOT NULL,
    order_id        TEXT,
    status          TEXT NOT NULL CHECK (status IN ('soft', 'hard', 'fulfilled', 'released', 'expired', 'cancelled')),
    created_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL,
    UNIQUE (caller, idempotency_key)
);
CREATE INDEX reservations_by_status ON reservations (status, expires_at_ms);
CREATE INDEX reservations_by_order ON reservations (order_id);

CREATE TABLE reservation_lines (
    reservation_id TEXT NOT NULL REFERENCES reservations (id),
    sku            TEXT NOT NULL,
    location       TEXT NOT NULL,
    quantity       BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, sku, location)
);
CREATE INDEX reservation_lines_by_sku ON reservation_lines (sku, location);

-- The lifecycle: soft -> hard -> fulfilled, or soft -> released/expired/cancelled, or hard -> cancelled.
-- A terminal reservation never changes again; an active one may change its expiry and order in place.
CREATE FUNCTION reservations_lifecycle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ((OLD.status = NEW.status AND OLD.status IN ('soft', 'hard'))
         OR (OLD.status = 'soft' AND NEW.status IN ('hard', 'released', 'expired', 'cancelled'))
         OR (OLD.status = 'hard' AND NEW.status IN ('fulfilled', 'cancelled'))) THEN
        RAISE EXCEPTION 'reservation lifecycle violated: % -> %', OLD.status, NEW.status;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER reservations_lifecycle BEFORE UPDATE ON reservations
    FOR EACH ROW EXECUTE FUNCTION reservations_lifecycle();

CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END $$;
CREATE TRIGGER reservation_lines_immutable BEFORE UPDATE OR DELETE ON reservation_lines
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- The ledger: one row per movement, never changed. The deltas of a SKU's rows add up to its counters.
CREATE TABLE ledger (
    seq               BIGSERIAL PRIMARY KEY,
    sku               TEXT NOT NULL,
    location          TEXT NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('SOFT_RESERVED', 'HARD_RESERVED', 'FULFILLED', 'CANCELLED',
                          'ORDERED', 'RETURNED', 'RECEIVED', 'SHRINKAGE', 'EXPIRED', 'ADJUSTMENT')),
    quantity          BIGINT NOT NULL CHECK (quantity > 0),
    on_hand_delta     BIGINT NOT NULL DEFAULT 0,
    soft_delta        BIGINT NOT NULL DEFAULT 0,
    hard_delta        BIGINT NOT NULL DEFAULT 0,
    unavailable_delta BIGINT NOT NULL DEFAULT 0,
    safety_delta      BIGINT NOT NULL DEFAULT 0,
    incoming_delta    BIGINT NOT NULL DEFAULT 0,
    on_hand_after     BIGINT NOT NULL,
    available_after   BIGINT NOT NULL CHECK (available_after >= 0),
    actor             TEXT NOT NULL,
    reason            TEXT,
    reservation_id    TEXT,
    order_id          TEXT,
    event_id          TEXT,
    at_ms             BIGINT NOT NULL
);
CREATE INDEX ledger_by_sku ON ledger (sku, location, seq);
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION refuse_change();

-- Stock that existed before the ledger enters it as an opening balance, so replay matches.
INSERT INTO ledger (sku, location, kind, quantity, on_hand_delta, on_hand_after, available_after, actor, reason, at_ms)
SELECT sku, location, 'ADJUSTMENT', on_hand, on_hand, on_hand, on_hand, 'migration', 'opening balance', updated_at * 1000
FROM stock_levels WHERE on_hand > 0 ORDER BY sku, location;

-- The inbox: events applied here (orders paid or cancelled), by id, so a redelivery has its effect once.
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
