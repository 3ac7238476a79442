-- What inventory last announced of each SKU (`inventory.stock_changed`): guests hold nothing, so their
-- lines are checked against this projection instead of a reservation.
CREATE TABLE stock (
    sku           TEXT PRIMARY KEY,
    available     BIGINT NOT NULL CHECK (available >= 0),
    sequence      BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
