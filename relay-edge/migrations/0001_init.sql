-- Accounts and the device registry. Portable SQL: runs on SQLite and PostgreSQL.
-- Flags (disabled, revoked) are 0/1 integers, the one boolean form SQLite and PostgreSQL share.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    disabled      BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL
);

CREATE TABLE devices (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    revoked      BIGINT NOT NULL DEFAULT 0,
    status       TEXT NOT NULL DEFAULT 'offline',
    node_version TEXT,
    identity_key TEXT,
    relay_node   TEXT,
    last_seen    BIGINT,
    created_at   BIGINT NOT NULL
);

CREATE INDEX devices_user ON devices(user_id);
