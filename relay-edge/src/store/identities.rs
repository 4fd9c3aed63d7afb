//! Sign-in with OpenID Connect providers: the identities linked to accounts (issuer and
//! subject → user) and the sign-ins under way (state → nonce and PKCE verifier). Tables
//! from `migrations/0007_oidc_identities.sql`.
//!
//! This module does not decide who is linked to whom (`crate::http::oidc`'s linking rule
//! does, from verified emails only); these are the queries.

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Store, StoreError, User, unique_violation};

/// A password hash no password matches (it is not a PHC string), given to accounts made
/// by a provider sign-in: they sign in through the provider until a password is set.
pub const NO_PASSWORD: &str = "!oidc: no password";

/// A sign-in under way, as stored between the redirect to the provider and its callback.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    /// The configured provider's name.
    pub provider: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier sent with the code.
    pub verifier: String,
    /// Seconds since the epoch after which the sign-in is void.
    pub expires_at: i64,
    /// A sign-in to confirm who it is (`?reauth=1`) started from a signed-in browser:
    /// that browser's session, which the new one replaces when it is the same account's.
    pub replaces_session: Option<String>,
}

impl Store {
    /// Keeps a sign-in under way under the SHA-256 (hex) of its `state`, and drops the
    /// ones that expired before `now`.
    pub async fn insert_oidc_login(
        &self,
        state_hash: &str,
        login: &PendingLogin,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM oidc_logins WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO oidc_logins (state_hash, provider, nonce, verifier, created_at, expires_at, replaces_session) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(state_hash)
        .bind(&login.provider)
        .bind(&login.nonce)
        .bind(&login.verifier)
        .bind(now)
        .bind(login.expires_at)
        .bind(&login.replaces_session)
        .execute(&self.pool)
        .await
        .map_err(|e| unique_violation(e, "a sign-in with this state"))?;
        Ok(())
    }

    /// Takes (reads and deletes, so that it works once) the sign-in stored under
    /// `state_hash`, expired or not: the caller checks the time.
    pub async fn take_oidc_login(
        &self,
        state_hash: &str,
    ) -> Result<Option<PendingLogin>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM oidc_logins WHERE state_hash = $1 RETURNING provider, nonce, verifier, expires_at, replaces_session",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(PendingLogin {
                provider: row.try_get("provider")?,
                nonce: row.try_get("nonce")?,
                verifier: row.try_get("verifier")?,
                expires_at: row.try_get("expires_at")?,
                replaces_session: row.try_get("replaces_session")?,
            })
        })
        .transpose()
        .map_err(StoreError::Db)
    }

    /// The user an identity (`issuer`, `subject`) is linked to, if any, and notes that it
    /// was used now.
    pub async fn identity_user(
        &self,
        issuer: &str,
        subject: &str,
        now: i64,
    ) -> Result<Option<User>, StoreError> {
        let user = sqlx::query_as::<_, User>(
            "SELECT u.id, u.email, u.password_hash, u.disabled, u.created_at, u.plan_id, u.token_generation \
             FROM oidc_identities i JOIN users u ON u.id = i.user_id WHERE i.issuer = $1 AND i.subject = $2",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        if user.is_some() {
            sqlx::query(
                "UPDATE oidc_identities SET last_used = $1 WHERE issuer = $2 AND subject = $3",
            )
            .bind(now)
            .bind(issuer)
            .bind(subject)
            .execute(&self.pool)
            .await?;
        }
        Ok(user)
    }

    /// Links an identity to an existing user. [`StoreError::Duplicate`] when the identity
    /// is already linked (to anyone).
    pub async fn link_identity(
        &self,
        user_id: &str,
        identity: &NewIdentity<'_>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO oidc_identities (issuer, subject, user_id, provider, email, created_at, last_used) VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(identity.issuer)
        .bind(identity.subject)
        .bind(user_id)
        .bind(identity.provider)
        .bind(identity.email)
        .bind(identity.now)
        .execute(&self.pool)
        .await
        .map_err(|e| unique_violation(e, "this identity"))?;
        Ok(())
    }

    /// Creates a user with `email` and no password ([`NO_PASSWORD`]) and links the
    /// identity to it, both or neither. [`StoreError::Duplicate`] when the email or the
    /// identity is taken.
    pub async fn create_user_with_identity(
        &self,
        email: &str,
        identity: &NewIdentity<'_>,
    ) -> Result<User, StoreError> {
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            email: email.trim().to_lowercase(),
            password_hash: NO_PASSWORD.to_owned(),
            disabled: false,
            created_at: identity.now,
            plan_id: "free".into(),
            token_generation: 0,
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, "a user with this email"))?;
        sqlx::query(
            "INSERT INTO oidc_identities (issuer, subject, user_id, provider, email, created_at, last_used) VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(identity.issuer)
        .bind(identity.subject)
        .bind(&user.id)
        .bind(identity.provider)
        .bind(identity.email)
        .bind(identity.now)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, "this identity"))?;
        tx.commit().await?;
        Ok(user)
    }

    /// The providers (configured names) of the identities linked to a user, each once.
    pub async fn identity_providers(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT provider FROM oidc_identities WHERE user_id = $1 ORDER BY provider",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The identities linked to a user, oldest link first.
    pub async fn identities_of(&self, user_id: &str) -> Result<Vec<LinkedIdentity>, StoreError> {
        let rows = sqlx::query(
            "SELECT issuer, subject, provider, email, created_at, last_used FROM oidc_identities \
             WHERE user_id = $1 ORDER BY created_at, provider, subject",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(LinkedIdentity {
                    issuer: row.try_get("issuer")?,
                    subject: row.try_get("subject")?,
                    provider: row.try_get("provider")?,
                    email: row.try_get("email")?,
                    linked_at: row.try_get("created_at")?,
                    last_used: row.try_get("last_used")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::Db)
    }

    /// Unlinks the identity (`issuer`, `subject`) from `user_id`, unless it is the last
    /// way to sign in to the account (no password and no other identity). The check and
    /// the deletion happen under the user row's write lock (a no-op `UPDATE` of it,
    /// which PostgreSQL holds to the end of the transaction and SQLite's single writer
    /// implies), so two unlinks at once cannot each leave the other as the last one and
    /// then remove it.
    pub async fn unlink_identity(
        &self,
        user_id: &str,
        issuer: &str,
        subject: &str,
    ) -> Result<Unlinked, StoreError> {
        let mut tx = self.pool.begin().await?;
        let locked =
            sqlx::query("UPDATE users SET token_generation = token_generation WHERE id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        if locked.rows_affected() == 0 {
            return Ok(Unlinked::NotFound);
        }
        let password_hash: String =
            sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?;
        let linked: Vec<(String, String)> =
            sqlx::query_as("SELECT issuer, subject FROM oidc_identities WHERE user_id = $1")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?;
        if !linked.iter().any(|(i, s)| i == issuer && s == subject) {
            return Ok(Unlinked::NotFound);
        }
        if password_hash == NO_PASSWORD && linked.len() <= 1 {
            return Ok(Unlinked::LastWayIn);
        }
        sqlx::query(
            "DELETE FROM oidc_identities WHERE user_id = $1 AND issuer = $2 AND subject = $3",
        )
        .bind(user_id)
        .bind(issuer)
        .bind(subject)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Unlinked::Done)
    }

    /// How many identities are linked to a user.
    pub async fn identity_count(&self, user_id: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM oidc_identities WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

/// An identity to link: who vouched (`issuer`, and the configured `provider`'s name),
/// for whom (`subject`), the email it vouched for, and when.
#[derive(Debug, Clone, Copy)]
pub struct NewIdentity<'a> {
    /// The provider's issuer URL, as in the ID token's `iss`.
    pub issuer: &'a str,
    /// The ID token's `sub`.
    pub subject: &'a str,
    /// The configured provider's name.
    pub provider: &'a str,
    /// The verified email, when there was one.
    pub email: Option<&'a str>,
    /// Seconds since the epoch.
    pub now: i64,
}

/// An identity linked to an account, as the account page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedIdentity {
    /// The provider's issuer URL.
    pub issuer: String,
    /// The provider's subject (`sub`) for the person; not shown whole (see
    /// [`subject_hint`]).
    pub subject: String,
    /// The configured provider's name.
    pub provider: String,
    /// The email the provider vouched for when the identity was linked, if it gave one.
    pub email: Option<String>,
    /// When the identity was linked (seconds since the epoch).
    pub linked_at: i64,
    /// When it last signed in (seconds since the epoch).
    pub last_used: i64,
}

impl LinkedIdentity {
    /// The identity's id in the account API ([`identity_id`]).
    pub fn id(&self) -> String {
        identity_id(&self.issuer, &self.subject)
    }
}

/// A stable, opaque id for the identity (`issuer`, `subject`) in the account API: the
/// first 16 bytes of SHA-256 over the length-prefixed issuer and the subject, in hex.
/// The table's key is the pair itself; the id keeps issuer URLs and subjects out of
/// paths, and an id only names an identity among the signed-in user's own.
pub fn identity_id(issuer: &str, subject: &str) -> String {
    let mut hash = Sha256::new();
    hash.update((issuer.len() as u64).to_be_bytes());
    hash.update(issuer.as_bytes());
    hash.update(subject.as_bytes());
    hex::encode(&hash.finalize()[..16])
}

/// The end of a subject, enough to tell two identities at one provider apart without
/// showing the whole identifier: `…` and its last 4 characters, control and
/// direction-changing characters left out (a subject of 4 such characters or fewer is
/// shown as it is).
pub fn subject_hint(subject: &str) -> String {
    let shown: Vec<char> = subject
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        .collect();
    if shown.len() <= 4 {
        return shown.into_iter().collect();
    }
    let tail: String = shown[shown.len() - 4..].iter().collect();
    format!("…{tail}")
}

/// What [`Store::unlink_identity`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlinked {
    /// The identity no longer signs in to the account.
    Done,
    /// No such identity is linked to this user (or the user is gone).
    NotFound,
    /// Refused: the account has no password and this is its only identity.
    LastWayIn,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_ids_are_stable_and_tell_the_pair_apart() {
        let id = identity_id("https://id.example.com", "248289761001");
        assert_eq!(id.len(), 32);
        assert_eq!(id, identity_id("https://id.example.com", "248289761001"));
        // The length prefix: moving a character from issuer to subject is another id.
        assert_ne!(
            identity_id("https://a.example/x", "y"),
            identity_id("https://a.example/", "xy")
        );
        assert_ne!(id, identity_id("https://other.example.com", "248289761001"));
    }

    #[test]
    fn a_subject_is_shown_by_its_end_only_and_without_tricks() {
        assert_eq!(subject_hint("248289761001"), "…1001");
        assert_eq!(subject_hint("abcd"), "abcd");
        assert_eq!(subject_hint(""), "");
        // Right-to-left overrides and control characters never reach the page.
        assert_eq!(subject_hint("user\u{202e}9876\n"), "…9876");
        assert_eq!(subject_hint("ab\u{2067}c"), "abc");
        // Characters, not bytes.
        assert_eq!(subject_hint("ééééé"), "…éééé");
    }
}
