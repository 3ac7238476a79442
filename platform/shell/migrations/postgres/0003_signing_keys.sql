-- The shell's signing keys, where every shell replica reads them (tessera_shell::keys): Ed25519 PKCS#8,
-- base64. Whoever can read this table can sign logins; it is as secret as the key files it replaces.
CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    pkcs8      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    signs_from BIGINT NOT NULL
);
