//! What the account screens need: sessions (chains of refresh tokens a person can list
//! and end, with when the person last proved who they are), password changes, device
//! logins (`desktop-node login` approved in the browser), and devices whose login has
//! not finished (registered, token not yet stored by the desktop). Tables from
//! `migrations/0006_sessions_device_login.sql` and `0008_reauth_pending_devices.sql`.
//!
//! This module does not decide anything (who may approve, when a poll is too fast): the
//! HTTP handlers in `crate::http` do; these are the queries.

use sqlx::FromRow;
use sqlx::any::AnyRow;

use super::{Store, StoreError, flag};

/// A refresh token with the session it belongs to.
#[derive(Debug, Clone)]
pub struct SessionToken {
    /// Row id.
    pub id: String,
    /// The owner.
    pub user_id: String,
    /// The session (the first token's row id for rows from before sessions were kept).
    pub session_id: String,
    /// Seconds since the epoch.
    pub expires_at: i64,
    /// Revoked (used, signed out, or revoked after reuse).
    pub revoked: bool,
    /// When it was used for a refresh, if it was (seconds since the epoch).
    pub rotated_at: Option<i64>,
    /// The browser's `User-Agent` at sign-in.
    pub user_agent: Option<String>,
    /// When the session began (its sign-in).
    pub session_started: i64,
    /// When this token was issued (the session's last refresh).
    pub issued_at: i64,
    /// When the person last proved who they are in this session (seconds since the
    /// epoch): a password sign-in's time, or the ID token's `auth_time` of a provider
    /// sign-in; `None` when the provider did not say.
    pub auth_time: Option<i64>,
}

impl FromRow<'_, AnyRow> for SessionToken {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        let id: String = row.try_get("id")?;
        let created_at: i64 = row.try_get("created_at")?;
        Ok(SessionToken {
            session_id: row
                .try_get::<Option<String>, _>("session_id")?
                .unwrap_or_else(|| id.clone()),
            id,
            user_id: row.try_get("user_id")?,
            expires_at: row.try_get("expires_at")?,
            revoked: flag(row, "revoked")?,
            rotated_at: row.try_get("rotated_at")?,
            user_agent: row.try_get("user_agent")?,
            session_started: row
                .try_get::<Option<i64>, _>("session_started")?
                .unwrap_or(created_at),
            issued_at: created_at,
            auth_time: row.try_get("auth_time")?,
        })
    }
}

/// One live session of a user, for the sessions list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionView {
    /// The session id.
    pub id: String,
    /// When it signed in (seconds since the epoch).
    pub started_at: i64,
    /// When its token was last refreshed (seconds since the epoch).
    pub last_active: i64,
    /// The browser's `User-Agent` at sign-in, if it sent one.
    pub user_agent: Option<String>,
}

/// A device login's stored state.
#[derive(Debug, Clone)]
pub struct DeviceLogin {
    /// Row id.
    pub id: String,
    /// What the person types (`BCDF-GHJK`).
    pub user_code: String,
    /// The name the desktop asked to be registered under.
    pub name: String,
    /// Seconds since the epoch.
    pub created_at: i64,
    /// Seconds since the epoch.
    pub expires_at: i64,
    /// Seconds the desktop waits between polls.
    pub interval_secs: i64,
    /// The desktop's last poll (seconds since the epoch; 0 before the first).
    pub last_poll: i64,
    /// The user who approved it.
    pub approved_by: Option<String>,
    /// The person said no.
    pub denied: bool,
    /// Set once the desktop collected its token: the login is used up.
    pub device_id: Option<String>,
}

impl FromRow<'_, AnyRow> for DeviceLogin {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row;
        Ok(DeviceLogin {
            id: row.try_get("id")?,
            user_code: row.try_get("user_code")?,
            name: row.try_get("name")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            interval_secs: row.try_get("interval_secs")?,
            last_poll: row.try_get("last_poll")?,
            approved_by: row.try_get("approved_by")?,
            denied: flag(row, "denied")?,
            device_id: row.try_get("device_id")?,
        })
    }
}

const SESSION_COLUMNS: &str = "SELECT id, user_id, session_id, expires_at, revoked, rotated_at, user_agent, session_started, created_at, auth_time FROM refresh_tokens ";
const LOGIN_COLUMNS: &str = "SELECT id, user_code, name, created_at, expires_at, interval_secs, last_poll, approved_by, denied, device_id FROM device_logins ";

fn now() -> i64 {
    crate::auth::now_secs() as i64
}

impl Store {
    /// Stores a refresh token of session `session` (a new session when `None`: the
    /// token's row id becomes its id) whose person last proved who they are at
    /// `auth_time`; returns the session id.
    pub async fn insert_session_token(
        &self,
        user_id: &str,
        token_hash: &str,
        expires_at: i64,
        session: Option<(&str, i64)>,
        user_agent: Option<&str>,
        auth_time: Option<i64>,
    ) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (session_id, started) = match session {
            Some((sid, started)) => (sid.to_owned(), started),
            None => (id.clone(), now()),
        };
        sqlx::query(
            "INSERT INTO refresh_tokens (id, user_id, token_hash, expires_at, created_at, session_id, user_agent, session_started, auth_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&id)
        .bind(user_id)
        .bind(token_hash)
        .bind(expires_at)
        .bind(now())
        .bind(&session_id)
        .bind(user_agent.map(|ua| ua.chars().take(300).collect::<String>()))
        .bind(started)
        .bind(auth_time)
        .execute(&self.pool)
        .await?;
        Ok(session_id)
    }

    /// The refresh token with this hash, with its session, revoked or not.
    pub async fn session_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<SessionToken>, StoreError> {
        Ok(
            sqlx::query_as::<_, SessionToken>(sqlx::AssertSqlSafe(format!(
                "{SESSION_COLUMNS} WHERE token_hash = $1"
            )))
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    /// Uses a refresh token for a refresh: revokes it and notes when; returns whether it
    /// was live (so that a token is used once, even by two requests at the same time).
    pub async fn rotate_refresh_token(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked = 1, rotated_at = $2 WHERE id = $1 AND revoked = 0",
        )
        .bind(id)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A user's live sessions (an unrevoked, unexpired refresh token each), newest
    /// activity first.
    pub async fn sessions_for_user(&self, user_id: &str) -> Result<Vec<SessionView>, StoreError> {
        let tokens = sqlx::query_as::<_, SessionToken>(sqlx::AssertSqlSafe(format!(
            "{SESSION_COLUMNS} WHERE user_id = $1 AND revoked = 0 AND expires_at > $2 ORDER BY created_at DESC"
        )))
        .bind(user_id)
        .bind(now())
        .fetch_all(&self.pool)
        .await?;
        Ok(tokens
            .into_iter()
            .map(|t| SessionView {
                id: t.session_id,
                started_at: t.session_started,
                last_active: t.issued_at,
                user_agent: t.user_agent,
            })
            .collect())
    }

    /// Ends one session of a user (revokes its refresh tokens); returns whether it had a
    /// live one.
    pub async fn revoke_session(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked = 1 WHERE user_id = $1 AND revoked = 0 \
             AND (session_id = $2 OR (session_id IS NULL AND id = $2))",
        )
        .bind(user_id)
        .bind(session_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces a user's password hash.
    pub async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(user_id)
            .bind(hash)
            .execute(&self.pool)
            .await?;
        self.facts.invalidate_user(user_id);
        Ok(())
    }

    /// Starts a device login; fails with [`StoreError::Duplicate`] when the user code is
    /// taken (the caller draws another).
    pub async fn create_device_login(
        &self,
        device_code_hash: &str,
        user_code: &str,
        name: &str,
        ttl_secs: i64,
        interval_secs: i64,
    ) -> Result<(), StoreError> {
        // Expired logins are of no use to anyone: drop them while here.
        sqlx::query("DELETE FROM device_logins WHERE expires_at < $1")
            .bind(now() - 3600)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO device_logins (id, device_code_hash, user_code, name, created_at, expires_at, interval_secs) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(device_code_hash)
        .bind(user_code)
        .bind(name)
        .bind(now())
        .bind(now() + ttl_secs)
        .bind(interval_secs)
        .execute(&self.pool)
        .await
        .map_err(|e| super::unique_violation(e, "a device login with this code"))?;
        Ok(())
    }

    /// The device login a person's code names.
    pub async fn device_login_by_user_code(
        &self,
        user_code: &str,
    ) -> Result<Option<DeviceLogin>, StoreError> {
        Ok(
            sqlx::query_as::<_, DeviceLogin>(sqlx::AssertSqlSafe(format!(
                "{LOGIN_COLUMNS} WHERE user_code = $1"
            )))
            .bind(user_code)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    /// The device login a desktop's code names.
    pub async fn device_login_by_device_code(
        &self,
        device_code_hash: &str,
    ) -> Result<Option<DeviceLogin>, StoreError> {
        Ok(
            sqlx::query_as::<_, DeviceLogin>(sqlx::AssertSqlSafe(format!(
                "{LOGIN_COLUMNS} WHERE device_code_hash = $1"
            )))
            .bind(device_code_hash)
            .fetch_optional(&self.pool)
            .await?,
        )
    }

    /// Approves (`Some(user)`) or denies (`None`) a pending device login; returns
    /// whether it was still pending and unexpired.
    pub async fn decide_device_login(
        &self,
        id: &str,
        approved_by: Option<&str>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE device_logins SET approved_by = $2, denied = $3 \
             WHERE id = $1 AND approved_by IS NULL AND denied = 0 AND expires_at > $4",
        )
        .bind(id)
        .bind(approved_by)
        .bind(i64::from(approved_by.is_none()))
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Notes a poll: its time and the (possibly longer) interval the desktop must keep.
    pub async fn note_device_login_poll(
        &self,
        id: &str,
        interval_secs: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE device_logins SET last_poll = $2, interval_secs = $3 WHERE id = $1")
            .bind(id)
            .bind(now())
            .bind(interval_secs)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks an approved login used by the device it registered; returns whether it was
    /// still unused (a login registers one device, even when polled twice at once).
    pub async fn finish_device_login(&self, id: &str, device_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE device_logins SET device_id = $2 WHERE id = $1 AND device_id IS NULL",
        )
        .bind(id)
        .bind(device_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Forgets the device logins a user approved (before the account is deleted).
    pub async fn delete_device_logins_of(&self, user_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM device_logins WHERE approved_by = $1")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Registers a device whose login has not finished: it is not listed, and unless
    /// it finishes ([`Store::finish_pending_device`], or its first connection) before
    /// `pending_until` it is deleted and its token refused. Deletes the ones whose time
    /// ran out while here.
    pub async fn create_pending_device(
        &self,
        user_id: &str,
        name: &str,
        token_hash: &str,
        pending_until: i64,
    ) -> Result<String, StoreError> {
        self.delete_expired_pending_devices().await?;
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO devices (id, user_id, name, token_hash, created_at, pending_until) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(user_id)
        .bind(name)
        .bind(token_hash)
        .bind(now())
        .bind(pending_until)
        .execute(&self.pool)
        .await
        .map_err(|e| super::unique_violation(e, "a device with this token"))?;
        self.facts.invalidate_device(&id);
        Ok(id)
    }

    /// Deletes the devices whose login did not finish in time; returns how many.
    pub async fn delete_expired_pending_devices(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM devices WHERE pending_until IS NOT NULL AND pending_until <= $1",
        )
        .bind(now())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            tracing::info!(
                devices = done.rows_affected(),
                "devices whose login never finished deleted"
            );
        }
        Ok(done.rows_affected())
    }

    /// The login of the (unrevoked, unexpired) device with this token finished: it is
    /// a device like any other from now on. Returns its id, or `None` for an unknown,
    /// revoked or expired token. A finished device's token answers its id again.
    pub async fn finish_pending_device(
        &self,
        token_hash: &str,
    ) -> Result<Option<String>, StoreError> {
        let Some(device) = self.device_by_token_hash(token_hash).await? else {
            return Ok(None);
        };
        sqlx::query("UPDATE devices SET pending_until = NULL WHERE id = $1")
            .bind(&device.id)
            .execute(&self.pool)
            .await?;
        self.facts.invalidate_device(&device.id);
        Ok(Some(device.id))
    }

    /// Deletes the device with this token if its login has not finished (the desktop
    /// could not store its token); returns whether there was one.
    pub async fn withdraw_pending_device(&self, token_hash: &str) -> Result<bool, StoreError> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM devices WHERE token_hash = $1 AND pending_until IS NOT NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(id) = id else { return Ok(false) };
        self.delete_device_row(&id).await?;
        Ok(true)
    }

    /// Deletes a device row outright (a device whose login lost the race to another
    /// poll; it never had a connection).
    pub async fn delete_device_row(&self, device_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM devices WHERE id = $1")
            .bind(device_id)
            .execute(&self.pool)
            .await?;
        self.facts.invalidate_device(device_id);
        Ok(())
    }
}
