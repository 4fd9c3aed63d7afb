//! Sign-in with OpenID Connect providers: the identities linked to accounts (issuer and
//! subject → user) and the sign-ins under way (state → nonce and PKCE verifier). Tables
//! from `migrations/0007_oidc_identities.sql`.
//!
//! This module does not decide who is linked to whom (`crate::http::oidc`'s linking rule
//! does, from verified emails only); these are the queries.

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
