//! Persistent state through sqlx: users and the device registry.
//!
//! Queries are plain runtime SQL (no compile-time database needed) in a dialect that
//! SQLite and PostgreSQL share. Migrations are embedded from `relay-edge/migrations`.

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use std::str::FromStr;

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The query or connection failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A unique value (email, token) is already taken.
    #[error("{0} already exists")]
    Duplicate(&'static str),
}

/// A user account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    /// Stable id (UUID).
    pub id: String,
    /// Sign-in email, unique.
    pub email: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// A disabled user cannot sign in or reach devices.
    pub disabled: bool,
    /// Seconds since the epoch.
    pub created_at: i64,
}

/// A registered desktop device.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Device {
    /// Stable id (UUID).
    pub id: String,
    /// The owner.
    pub user_id: String,
    /// A name for people.
    pub name: String,
    /// `online` or `offline`.
    pub status: String,
    /// The node's software version at its last connection.
    pub node_version: Option<String>,
    /// The node's X25519 identity public key, hex.
    pub identity_key: Option<String>,
    /// The relay node it is connected to.
    pub relay_node: Option<String>,
    /// Seconds since the epoch.
    pub last_seen: Option<i64>,
    /// Revoked devices cannot connect.
    pub revoked: bool,
}

/// `SELECT` of every [`Device`] column, followed by the rest of the query.
macro_rules! select_devices {
    ($rest:literal) => {
        concat!(
            "SELECT id, user_id, name, status, node_version, identity_key, relay_node, last_seen, revoked FROM devices ",
            $rest
        )
    };
}

/// The relay's database.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and applies migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .foreign_keys(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    /// Adds a user.
    pub async fn create_user(&self, email: &str, password_hash: &str) -> Result<User, StoreError> {
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            email: email.trim().to_lowercase(),
            password_hash: password_hash.to_owned(),
            disabled: false,
            created_at: crate::auth::now_secs() as i64,
        };
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| unique_violation(e, "a user with this email"))?;
        Ok(user)
    }

    /// The user with this email, if any.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        Ok(sqlx::query_as::<_, User>(
            "SELECT id, email, password_hash, disabled, created_at FROM users WHERE email = $1",
        )
        .bind(email.trim().to_lowercase())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The user with this id, if any.
    pub async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        Ok(sqlx::query_as::<_, User>(
            "SELECT id, email, password_hash, disabled, created_at FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every user, oldest first.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        Ok(sqlx::query_as::<_, User>(
            "SELECT id, email, password_hash, disabled, created_at FROM users ORDER BY created_at, email",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Registers a device for a user; only the token's hash is kept.
    pub async fn create_device(
        &self,
        user_id: &str,
        name: &str,
        token_hash: &str,
    ) -> Result<Device, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO devices (id, user_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(user_id)
        .bind(name)
        .bind(token_hash)
        .bind(crate::auth::now_secs() as i64)
        .execute(&self.pool)
        .await
        .map_err(|e| unique_violation(e, "a device with this token"))?;
        Ok(self.device(&id).await?.ok_or(sqlx::Error::RowNotFound)?)
    }

    /// The device with this id, if any.
    pub async fn device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        Ok(
            sqlx::query_as::<_, Device>(select_devices!("WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The unrevoked device whose token hashes to `token_hash`.
    pub async fn device_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<Device>, StoreError> {
        Ok(sqlx::query_as::<_, Device>(select_devices!(
            "WHERE token_hash = $1 AND revoked = FALSE"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A user's devices, by name.
    pub async fn devices_for_user(&self, user_id: &str) -> Result<Vec<Device>, StoreError> {
        Ok(sqlx::query_as::<_, Device>(select_devices!(
            "WHERE user_id = $1 AND revoked = FALSE ORDER BY name, id"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records that a device connected to `relay_node`.
    pub async fn set_online(
        &self,
        device_id: &str,
        node_version: &str,
        identity_key_hex: &str,
        relay_node: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE devices SET status = 'online', node_version = $2, identity_key = $3, relay_node = $4, last_seen = $5 WHERE id = $1",
        )
        .bind(device_id)
        .bind(node_version)
        .bind(identity_key_hex)
        .bind(relay_node)
        .bind(crate::auth::now_secs() as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a heartbeat.
    pub async fn touch(&self, device_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE devices SET last_seen = $2 WHERE id = $1")
            .bind(device_id)
            .bind(crate::auth::now_secs() as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that a device disconnected.
    pub async fn set_offline(&self, device_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE devices SET status = 'offline', relay_node = NULL, last_seen = $2 WHERE id = $1")
            .bind(device_id)
            .bind(crate::auth::now_secs() as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks every device this relay node had as offline (after a restart).
    pub async fn reset_node(&self, relay_node: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE devices SET status = 'offline', relay_node = NULL WHERE relay_node = $1",
        )
        .bind(relay_node)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn unique_violation(err: sqlx::Error, what: &'static str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate(what),
        _ => StoreError::Db(err),
    }
}
