-- Sign-in attempts are counted before their password is checked (crate::throttle): each attempt's rows
-- carry its id, so a refused or successful attempt takes back exactly its own.
ALTER TABLE login_failures ADD COLUMN attempt TEXT;
CREATE INDEX login_failures_by_attempt ON login_failures (attempt);

-- Pairs of account and client address that signed in successfully: the account-wide and address-wide
-- limits never bind them, so neither strangers guessing at an account nor a neighbour behind the same
-- proxy who sprayed passwords locks out its owner.
CREATE TABLE login_known (
    pair_key     TEXT PRIMARY KEY,
    succeeded_at BIGINT NOT NULL
);
