-- The full catalogue: a category tree, products with brand and image, variants (one SKU each) with
-- attributes, full-text search, and the outbox for `catalog.product_changed`.
CREATE TABLE categories (
    slug        TEXT PRIMARY KEY CHECK (length(slug) BETWEEN 1 AND 64),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    parent_slug TEXT REFERENCES categories (slug),
    position    BIGINT NOT NULL DEFAULT 0
);

ALTER TABLE products RENAME TO products_v1;

CREATE TABLE products (
    id            TEXT PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 80),
    name          TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    brand         TEXT NOT NULL DEFAULT '' CHECK (length(brand) <= 80),
    category_slug TEXT REFERENCES categories (slug),
    description   TEXT NOT NULL DEFAULT '' CHECK (length(description) <= 5000),
    price_minor   BIGINT NOT NULL CHECK (price_minor >= 0),
    currency      TEXT NOT NULL CHECK (length(currency) = 3),
    image_url     TEXT,
    featured      BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX products_by_category ON products (category_slug);
CREATE INDEX products_by_price ON products (price_minor);
CREATE INDEX products_by_created ON products (created_at);
CREATE INDEX products_by_brand ON products (brand);
CREATE INDEX products_by_name ON products (name, id);

CREATE TABLE variants (
    sku        TEXT PRIMARY KEY CHECK (length(sku) BETWEEN 1 AND 32),
    product_id TEXT NOT NULL REFERENCES products (id),
    label      TEXT NOT NULL DEFAULT '',
    position   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX variants_by_product ON variants (product_id, position);

CREATE TABLE variant_attributes (
    sku   TEXT NOT NULL REFERENCES variants (sku),
    name  TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (sku, name)
);
CREATE INDEX variant_attributes_by_value ON variant_attributes (name, value);

-- What the filter form offers (brands, attribute values), kept as products are written so a listing
-- never scans the catalogue for them.
CREATE TABLE facets (
    kind  TEXT NOT NULL CHECK (kind IN ('brand', 'attribute')),
    value TEXT NOT NULL,
    PRIMARY KEY (kind, value)
);

INSERT INTO products (id, name, description, price_minor, currency, created_at, updated_at)
SELECT lower(sku), name, description, price_minor, currency, created_at, created_at FROM products_v1;
INSERT INTO variants (sku, product_id) SELECT sku, lower(sku) FROM products_v1;
DROP TABLE products_v1;
INSERT INTO facets (kind, value) SELECT DISTINCT 'brand', brand FROM products WHERE brand <> '';

-- Full-text search over name, brand and description (kept in step by the catalog's writes).
CREATE VIRTUAL TABLE product_search USING fts5(id UNINDEXED, name, brand, description, tokenize = 'unicode61 remove_diacritics 2');
INSERT INTO product_search (id, name, brand, description) SELECT id, name, brand, description FROM products;

-- The transactional outbox (see tessera_kit::events).
CREATE TABLE outbox (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
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
