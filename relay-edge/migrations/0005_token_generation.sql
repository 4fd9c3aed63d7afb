-- Revoking a user's access tokens: each token carries the user's token generation at
-- issue (claim `gen`), and a token older than the current generation is refused. Signing
-- out everywhere, reusing a refresh token and being disabled move the generation on.
-- tokens_revoked_at (unix seconds) lets relay nodes find recent revocations and close the
-- sessions that use the revoked tokens.
ALTER TABLE users ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN tokens_revoked_at BIGINT NOT NULL DEFAULT 0;
