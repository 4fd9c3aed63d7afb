//! Credentials: password hashes (argon2id), user access tokens (JWT, HS256) and device
//! tokens (random, stored only as a SHA-256 hash).

use std::time::{SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why a credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is malformed, forged or expired.
    #[error("invalid or expired token: {0}")]
    BadToken(String),
    /// The password could not be hashed.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// The claims in a user access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The user's email.
    pub email: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
    /// The user's token generation at issue; a token of an older generation than the
    /// user's current one was revoked (`store::User::token_generation`).
    #[serde(default)]
    pub generation: i64,
}

/// An access token's claims with the session's `auth_time` (a claim of its own, kept
/// out of [`Claims`] so that code building claims by hand need not know it).
#[derive(Serialize, Deserialize)]
struct SessionClaims {
    #[serde(flatten)]
    claims: Claims,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth_time: Option<i64>,
}

/// Issues and checks user access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: u64,
}

impl TokenKeys {
    /// Keys derived from a shared secret.
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_secs,
        }
    }

    /// A signed access token for a user (token generation 0).
    pub fn issue(&self, user_id: &str, email: &str) -> Result<String, AuthError> {
        self.issue_in_generation(user_id, email, 0)
    }

    /// A signed access token for a user, in the user's current token `generation`.
    pub fn issue_in_generation(
        &self,
        user_id: &str,
        email: &str,
        generation: i64,
    ) -> Result<String, AuthError> {
        self.issue_for_session(user_id, email, generation, None)
    }

    /// A signed access token for a user, in the user's current token `generation`, of
    /// a session whose person last proved who they are at `auth_time` (seconds since the
    /// epoch; claim `auth_time`, read back with [`TokenKeys::auth_time`]).
    pub fn issue_for_session(
        &self,
        user_id: &str,
        email: &str,
        generation: i64,
        auth_time: Option<i64>,
    ) -> Result<String, AuthError> {
        let now = now_secs();
        let claims = SessionClaims {
            claims: Claims {
                sub: user_id.to_owned(),
                email: email.to_owned(),
                iat: now,
                exp: now + self.ttl_secs,
                generation,
            },
            auth_time,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::BadToken(e.to_string()))
    }

    /// The `auth_time` of a valid, unexpired token: when the person last proved who
    /// they are in its session; `None` when the token does not say.
    pub fn auth_time(&self, token: &str) -> Result<Option<i64>, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        jsonwebtoken::decode::<SessionClaims>(token, &self.decoding, &validation)
            .map(|data| data.claims.auth_time)
            .map_err(|e| AuthError::BadToken(e.to_string()))
    }

    /// The claims of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| AuthError::BadToken(e.to_string()))
    }

    /// Lifetime of issued tokens, in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }
}

/// An argon2id PHC string for a password.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches a stored PHC string.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A fresh opaque secret: `prefix` and 32 random bytes, base64url.
fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    // getrandom only fails where the OS has no randomness; nothing can run safely then.
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A fresh device token: `aisa_dt_` and 32 random bytes, base64url.
pub fn new_device_token() -> String {
    new_secret("aisa_dt_")
}

/// A fresh refresh token: `aisa_rt_` and 32 random bytes, base64url.
pub fn new_refresh_token() -> String {
    new_secret("aisa_rt_")
}

/// The stored form of a device or refresh token (they are random, so a plain hash is
/// enough: nothing to guess).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The stored form of a device token.
pub fn hash_device_token(token: &str) -> String {
    hash_token(token)
}

/// Today's date in UTC, `YYYY-MM-DD` (the day plan limits count in).
pub fn today_utc() -> String {
    let date = time::OffsetDateTime::now_utc().date();
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_when_equal() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("wrong", &phc));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn tokens_verify_and_forgeries_fail() {
        let keys = TokenKeys::new(b"secret-one", 60);
        let token = keys.issue("u1", "a@b").unwrap();
        assert_eq!(keys.verify(&token).unwrap().sub, "u1");
        let other = TokenKeys::new(b"secret-two", 60);
        assert!(other.verify(&token).is_err(), "another key must not verify");
        assert!(keys.verify("garbage").is_err());
    }

    #[test]
    fn expired_tokens_fail() {
        let keys = TokenKeys::new(b"k", 0);
        let claims = Claims {
            sub: "u".into(),
            email: "e".into(),
            iat: 1,
            exp: now_secs() - 10,
            generation: 0,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        let err = keys.verify(&token).unwrap_err();
        assert!(err.to_string().contains("xpired"), "{err}");
    }

    #[test]
    fn a_sessions_auth_time_travels_in_its_access_token() {
        let keys = TokenKeys::new(&[7u8; 32], 60);
        let with = keys
            .issue_for_session("u1", "a@example.com", 3, Some(1_700_000_000))
            .unwrap();
        assert_eq!(keys.auth_time(&with).unwrap(), Some(1_700_000_000));
        let claims = keys.verify(&with).unwrap();
        assert_eq!((claims.sub.as_str(), claims.generation), ("u1", 3));
        let without = keys.issue_in_generation("u1", "a@example.com", 3).unwrap();
        assert_eq!(keys.auth_time(&without).unwrap(), None);
        // Another key's token says nothing.
        let other = TokenKeys::new(&[8u8; 32], 60);
        assert!(other.auth_time(&with).is_err());
    }

    #[test]
    fn device_tokens_are_unique_and_hashed() {
        let a = new_device_token();
        assert!(a.starts_with("aisa_dt_"));
        assert_ne!(a, new_device_token());
        assert_eq!(hash_device_token(&a).len(), 64);
        assert_ne!(hash_device_token(&a), a);
    }
}
