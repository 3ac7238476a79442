-- Authorization codes of the OpenID Connect provider (crate::oidc), stored only as SHA-256 hashes and
-- bound to what they were issued for. The first use spends a code (`used_at`); a spent code presented
-- again is a replay. Codes are pruned a day after they were issued.
CREATE TABLE oidc_codes (
    code_hash      TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    nonce          TEXT,
    scope          TEXT NOT NULL,
    auth_time      BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT
);
CREATE INDEX oidc_codes_by_created_at ON oidc_codes (created_at);
