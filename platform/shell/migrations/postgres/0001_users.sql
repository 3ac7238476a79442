CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE CHECK (char_length(email) BETWEEN 3 AND 254),
    name          TEXT NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    password_hash TEXT NOT NULL,
    -- space-separated role names, e.g. 'shopper inventory_admin'
    roles         TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
