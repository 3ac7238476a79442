CREATE TABLE stock_levels (
    sku        TEXT NOT NULL CHECK (length(sku) BETWEEN 1 AND 32),
    location   TEXT NOT NULL DEFAULT 'main',
    on_hand    BIGINT NOT NULL CHECK (on_hand >= 0),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (sku, location)
);
