-- The developer portal and the marketplace: apps, their immutable versions, ratings and
-- installs. Portable SQL like the others: flags are 0/1 BIGINTs, times BIGINT unix seconds,
-- JSON documents TEXT.

-- One row per app id. The first publisher owns the id. name, description, category and
-- author follow the newest unyanked version's manifest (the relay refreshes them).
-- owner_id has no foreign key: deleting a user leaves their published apps in place.
CREATE TABLE apps (
    id          TEXT PRIMARY KEY,
    owner_id    TEXT NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    category    TEXT NOT NULL DEFAULT '',
    author      TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL
);

CREATE INDEX apps_owner ON apps(owner_id);
CREATE INDEX apps_category ON apps(category);

-- Versions are immutable once published; an owner or operator may yank one (yanked = 1),
-- which hides it from "latest" but keeps it downloadable by exact version.
CREATE TABLE app_versions (
    app_id        TEXT NOT NULL REFERENCES apps(id),
    version       TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    size          BIGINT NOT NULL,
    runtime       TEXT NOT NULL,
    manifest      TEXT NOT NULL,
    permissions   TEXT NOT NULL,
    action_schema TEXT NOT NULL,
    ui_schema     TEXT NOT NULL,
    storage_key   TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    yanked        BIGINT NOT NULL DEFAULT 0,
    published_at  BIGINT NOT NULL,
    PRIMARY KEY (app_id, version)
);

-- One rating per user and app; a second replaces the first.
CREATE TABLE ratings (
    app_id     TEXT NOT NULL REFERENCES apps(id),
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    stars      BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, user_id)
);

-- Installs reported by desktop nodes; one row per device and version (a retried report
-- does not count twice). device_id has no foreign key: installs stay counted after a
-- device is deleted with its user.
CREATE TABLE installs (
    app_id       TEXT NOT NULL REFERENCES apps(id),
    version      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    installed_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, version, device_id)
);
