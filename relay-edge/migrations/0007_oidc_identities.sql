-- Sign-in with OpenID Connect providers (`[oidc]`, crate::http::oidc).
--
-- An identity is one account at one provider: the pair (issuer, subject) is what the
-- provider promises never to give to anyone else, so it (not the email) is what a later
-- sign-in is recognised by. email is the address the provider vouched for when the
-- identity was linked (kept for the account screens, not for matching).
CREATE TABLE oidc_identities (
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider   TEXT NOT NULL,
    email      TEXT,
    created_at BIGINT NOT NULL,
    last_used  BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);

CREATE INDEX oidc_identities_user ON oidc_identities(user_id);

-- A sign-in under way: the relay sent the browser to the provider with `state` (stored
-- here as its SHA-256, hex) and keeps what must not leave it, the nonce the ID token must
-- carry back and the PKCE code verifier. A row is used once (deleted at the callback) and
-- is worthless after expires_at.
CREATE TABLE oidc_logins (
    state_hash TEXT PRIMARY KEY,
    provider   TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    verifier   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
