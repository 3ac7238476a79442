CREATE TABLE cart_lines (
    user_id    TEXT NOT NULL,
    sku        TEXT NOT NULL CHECK (length(sku) BETWEEN 1 AND 32),
    quantity   BIGINT NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, sku)
);
