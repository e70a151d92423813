-- Sessions of the web console (/console/). The browser's cookie holds a random id; only its SHA-256 is
-- kept here. A session ends at logout, at expiry, or when the user's credentials change (token_gen).
CREATE TABLE console_sessions (
    id_hash     BYTEA PRIMARY KEY,
    username    TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    uid         BIGINT NOT NULL,
    token_gen   BIGINT NOT NULL,
    csrf        TEXT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
