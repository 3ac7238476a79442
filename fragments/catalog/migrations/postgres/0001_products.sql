CREATE TABLE products (
    sku         TEXT PRIMARY KEY CHECK (char_length(sku) BETWEEN 1 AND 32),
    name        TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description TEXT NOT NULL DEFAULT '',
    price_minor BIGINT NOT NULL CHECK (price_minor >= 0),
    currency    TEXT NOT NULL CHECK (char_length(currency) = 3),
    created_at  BIGINT NOT NULL
);
