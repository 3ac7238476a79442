-- A session is one sign-in on one device: the family of its rotating refresh tokens, and the `sid` of
-- every access token issued for it. Revoking it ends the family.
CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL,
    last_seen_at   BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL CHECK (expires_at > created_at),
    user_agent     TEXT NOT NULL DEFAULT '',
    revoked_at     BIGINT,
    revoked_reason TEXT
);
CREATE INDEX sessions_by_user ON sessions (user_id);

-- Refresh tokens are stored only as SHA-256 hashes. A token is used once; a second use of a used token
-- (after a short grace period for concurrent requests) is a replay and revokes the whole session.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    issued_at  BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

-- Failed sign-ins, by account and by client address, for throttling.
CREATE TABLE login_failures (
    throttle_key TEXT NOT NULL,
    failed_at    BIGINT NOT NULL
);
CREATE INDEX login_failures_by_key ON login_failures (throttle_key, failed_at);

-- Access tokens issued before a user's roles changed are refreshed at the shell.
ALTER TABLE users ADD COLUMN roles_changed_at BIGINT NOT NULL DEFAULT 0;
