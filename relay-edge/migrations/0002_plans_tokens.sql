-- Plans and their limits, daily usage, refresh tokens.
CREATE TABLE plans (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL,
    max_devices            BIGINT NOT NULL,
    max_concurrent_streams BIGINT NOT NULL,
    max_actions_per_day    BIGINT NOT NULL
);

INSERT INTO plans (id, name, max_devices, max_concurrent_streams, max_actions_per_day)
VALUES ('free', 'Free', 3, 8, 500), ('pro', 'Pro', 20, 64, 20000);

ALTER TABLE users ADD COLUMN plan_id TEXT NOT NULL DEFAULT 'free';

CREATE TABLE usage_daily (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    day     TEXT NOT NULL,
    actions BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day)
);

CREATE TABLE refresh_tokens (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    expires_at BIGINT NOT NULL,
    revoked    BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE INDEX refresh_tokens_user ON refresh_tokens(user_id);
