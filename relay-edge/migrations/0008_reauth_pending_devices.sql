-- Fresh proof of identity for accounts without a password, and devices whose login has
-- not finished.
--
-- refresh_tokens.auth_time (unix seconds) is when the person last proved who they are
-- in this session: the sign-in time of a password sign-in, the ID token's auth_time of a
-- sign-in with an OpenID provider (NULL when the provider did not say). Every token of a
-- session carries it on; setting a password or deleting an account without a password
-- needs a recent one (`[oidc] reauth_max_age_secs`).
ALTER TABLE refresh_tokens ADD COLUMN auth_time BIGINT;

-- A sign-in started from a signed-in browser to confirm who it is (`?reauth=1`) notes
-- the session it came from, which the new session then replaces.
ALTER TABLE oidc_logins ADD COLUMN replaces_session TEXT;

-- A device is registered by `desktop-node login` before the desktop has stored its
-- token. pending_until (unix seconds) is set until the login finishes (the desktop
-- confirms with its token, or connects); such a device is not listed, and after
-- pending_until it is deleted and its token refused. NULL: a finished device.
ALTER TABLE devices ADD COLUMN pending_until BIGINT;
