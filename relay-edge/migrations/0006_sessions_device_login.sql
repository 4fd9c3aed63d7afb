-- Sessions a person can list and end, and device login (`desktop-node login` approved in
-- the browser, RFC 8628 style).
--
-- A session is a chain of refresh tokens: each refresh revokes the presented token and
-- issues a new one with the same session_id (NULL on rows from before: the row's id is
-- then the session). rotated_at (unix seconds) is when a token was used for a refresh,
-- so that the same token presented again within a few seconds (two tabs refreshing at
-- once) is refused without being treated as a stolen copy.
ALTER TABLE refresh_tokens ADD COLUMN session_id TEXT;
ALTER TABLE refresh_tokens ADD COLUMN user_agent TEXT;
ALTER TABLE refresh_tokens ADD COLUMN session_started BIGINT;
ALTER TABLE refresh_tokens ADD COLUMN rotated_at BIGINT;

CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);

-- One device login: the desktop holds device_code (stored hashed), the person types
-- user_code in the signed-in browser. approved_by is the approving user; denied is 0/1;
-- device_id is set once the desktop collected its device token (a login works once).
CREATE TABLE device_logins (
    id               TEXT PRIMARY KEY,
    device_code_hash TEXT NOT NULL UNIQUE,
    user_code        TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    interval_secs    BIGINT NOT NULL,
    last_poll        BIGINT NOT NULL DEFAULT 0,
    approved_by      TEXT REFERENCES users(id) ON DELETE CASCADE,
    denied           BIGINT NOT NULL DEFAULT 0,
    device_id        TEXT
);
