//! Persistent state through sqlx: users, plans, refresh tokens, usage, the device
//! registry, and the marketplace ([`apps`]).
//!
//! One code path for SQLite (`sqlite://…`, the embedded default) and PostgreSQL
//! (`postgres://…`) through sqlx's `Any` driver. Queries are plain runtime SQL (no
//! compile-time database needed) in the dialect both share. Migrations are embedded from
//! `relay-edge/migrations`.

pub mod accounts;
pub mod apps;
pub mod identities;

pub use accounts::{DeviceLogin, SessionToken, SessionView};
pub use apps::{AppListing, AppRow, VersionRow};
pub use identities::{NewIdentity, PendingLogin};

use sqlx::any::AnyPoolOptions;

use crate::config::DatabaseConfig;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, FromRow, Row};

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
#[derive(Debug, Clone)]
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
    /// The user's plan.
    pub plan_id: String,
    /// The user's token generation: access tokens carry the generation they were issued
    /// in (claim `gen`), and older ones are refused. Signing out everywhere, reusing a
    /// refresh token and being disabled move it on.
    pub token_generation: i64,
}

/// A plan and its limits.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Plan {
    /// Stable id (`free`, `pro`, …).
    pub id: String,
    /// A name for people.
    pub name: String,
    /// Devices a user may register.
    pub max_devices: i64,
    /// Streams a user may have open at once.
    pub max_concurrent_streams: i64,
    /// Actions a user may start per UTC day.
    pub max_actions_per_day: i64,
}

/// A refresh token's stored state.
#[derive(Debug, Clone)]
pub struct RefreshToken {
    /// Row id.
    pub id: String,
    /// The owner.
    pub user_id: String,
    /// Seconds since the epoch.
    pub expires_at: i64,
    /// Revoked (used, signed out, or revoked after reuse).
    pub revoked: bool,
}

/// A registered desktop device.
#[derive(Debug, Clone)]
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
    /// Its connection on that node.
    pub connection_id: Option<i64>,
    /// Seconds since the epoch.
    pub last_seen: Option<i64>,
    /// Revoked devices cannot connect.
    pub revoked: bool,
}

/// `SELECT` of every [`Device`] column, followed by the rest of the query.
macro_rules! select_devices {
    ($rest:literal) => {
        concat!(
            "SELECT id, user_id, name, status, node_version, identity_key, relay_node, connection_id, last_seen, revoked FROM devices ",
            $rest
        )
    };
}

// Flags are stored as 0/1 integers: the one boolean representation SQLite and
// PostgreSQL share through sqlx's Any driver.
fn flag(row: &AnyRow, column: &str) -> Result<bool, sqlx::Error> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}

impl FromRow<'_, AnyRow> for User {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(User {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            password_hash: row.try_get("password_hash")?,
            disabled: flag(row, "disabled")?,
            created_at: row.try_get("created_at")?,
            plan_id: row.try_get("plan_id")?,
            token_generation: row.try_get("token_generation")?,
        })
    }
}

impl FromRow<'_, AnyRow> for Device {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Device {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            name: row.try_get("name")?,
            status: row.try_get("status")?,
            node_version: row.try_get("node_version")?,
            identity_key: row.try_get("identity_key")?,
            relay_node: row.try_get("relay_node")?,
            connection_id: row.try_get("connection_id")?,
            last_seen: row.try_get("last_seen")?,
            revoked: flag(row, "revoked")?,
        })
    }
}

impl FromRow<'_, AnyRow> for RefreshToken {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(RefreshToken {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            expires_at: row.try_get("expires_at")?,
            revoked: flag(row, "revoked")?,
        })
    }
}

/// The PostgreSQL advisory-lock key that serializes migrations across nodes
/// (`pg_advisory_lock`; the bytes of "aisamigr"). A node that finds it taken logs that it
/// waits for another node's migration, and waits.
pub const MIGRATION_LOCK: i64 = 0x6169_7361_6d69_6772;

/// Applies the migrations on PostgreSQL while holding [`MIGRATION_LOCK`] on one
/// connection: the lock is released when they are done or failed (or when the
/// connection drops, should this process die).
async fn migrate_locked(pool: &AnyPool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    if !free {
        tracing::info!("another relay node is migrating the database; waiting for it");
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    // `run_direct` on the connection itself: `run(&mut *conn)` goes through `Acquire`,
    // whose lifetimes make this future (and so `crate::start`'s) not `Send` for
    // `tokio::spawn`.
    let migrated = sqlx::migrate!("./migrations")
        .run_direct(None, &mut *conn, false)
        .await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    migrated?;
    unlocked?;
    Ok(())
}

/// `url` with `[database]`'s TLS settings: with `ca_file`, `sslrootcert=<ca_file>` and
/// `sslmode=verify-full` (unless `sslmode` is set); with `sslmode`, that mode. Both
/// replace the URL's own values. SQLite URLs are returned unchanged.
pub fn connection_url(url: &str, db: &DatabaseConfig) -> String {
    if url.starts_with("sqlite:") || (db.ca_file.is_none() && db.sslmode.is_none()) {
        return url.to_owned();
    }
    let mut set: Vec<(&str, String)> = Vec::new();
    if let Some(ca) = &db.ca_file {
        set.push(("sslrootcert", ca.display().to_string()));
    }
    match (&db.sslmode, &db.ca_file) {
        (Some(mode), _) => set.push(("sslmode", mode.clone())),
        (None, Some(_)) => set.push(("sslmode", "verify-full".into())),
        (None, None) => {}
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let key = p.split_once('=').map_or(*p, |(k, _)| k);
            !set.iter().any(|(k, _)| *k == key)
        })
        .map(str::to_owned)
        .collect();
    for (key, value) in set {
        params.push(format!("{key}={}", percent_encode(&value)));
    }
    format!("{base}?{}", params.join("&"))
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The relay's database, with the in-memory copies of the records a stream's
/// authorization reads ([`crate::facts::FactsCache`], shared by clones). Every method
/// here that changes a user, device or plan drops its cached copy after the write.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    facts: std::sync::Arc<crate::facts::FactsCache>,
}

impl Store {
    /// Opens the database at `url` (`sqlite://…` creates the file if needed with
    /// `?mode=rwc`; `postgres://…`) with the default pool settings, and applies
    /// migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, &DatabaseConfig::default()).await
    }

    /// Opens the database at `url` with `[database]`'s pool sizes and TLS settings
    /// ([`connection_url`]), and applies migrations under a PostgreSQL advisory lock
    /// ([`MIGRATION_LOCK`]), so that nodes starting together on a fresh database migrate
    /// it once, one after the other.
    pub async fn open_with(url: &str, db: &DatabaseConfig) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let url = connection_url(url, db);
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            .max_connections(db.max_connections.max(1))
            .min_connections(db.min_connections.min(db.max_connections.max(1)))
            .acquire_timeout(std::time::Duration::from_secs(
                db.acquire_timeout_secs.max(1),
            ))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if sqlite {
                        // Readers do not block the writer; foreign keys are enforced.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        if sqlite {
            sqlx::migrate!("./migrations").run(&pool).await?;
        } else {
            migrate_locked(&pool).await?;
        }
        Ok(Store {
            pool,
            facts: Default::default(),
        })
    }

    /// The cache of users, devices and plans in front of this store.
    pub fn facts(&self) -> &crate::facts::FactsCache {
        &self.facts
    }

    /// A user by id, from memory when cached (the hot path), else from the database
    /// (and then cached).
    pub async fn cached_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        if let Some(user) = self.facts.user(id) {
            return Ok(Some(user));
        }
        let epoch = self.facts.epoch();
        let user = self.user(id).await?;
        if let Some(user) = &user {
            self.facts.put_user(user.clone(), epoch);
        }
        Ok(user)
    }

    /// A device by id, from memory when cached, else from the database (and then
    /// cached).
    pub async fn cached_device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        if let Some(device) = self.facts.device(id) {
            return Ok(Some(device));
        }
        let epoch = self.facts.epoch();
        let device = self.device(id).await?;
        if let Some(device) = &device {
            self.facts.put_device(device.clone(), epoch);
        }
        Ok(device)
    }

    /// A plan by id, from memory when cached, else from the database (and then cached).
    pub async fn cached_plan(&self, id: &str) -> Result<Option<Plan>, StoreError> {
        if let Some(plan) = self.facts.plan(id) {
            return Ok(Some(plan));
        }
        let epoch = self.facts.epoch();
        let plan = self.plan(id).await?;
        if let Some(plan) = &plan {
            self.facts.put_plan(plan.clone(), epoch);
        }
        Ok(plan)
    }

    /// Adds a user.
    pub async fn create_user(&self, email: &str, password_hash: &str) -> Result<User, StoreError> {
        let user = User {
            id: uuid::Uuid::new_v4().to_string(),
            email: email.trim().to_lowercase(),
            password_hash: password_hash.to_owned(),
            disabled: false,
            created_at: crate::auth::now_secs() as i64,
            plan_id: "free".into(),
            token_generation: 0,
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
            "SELECT id, email, password_hash, disabled, created_at, plan_id, token_generation FROM users WHERE email = $1",
        )
        .bind(email.trim().to_lowercase())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The user with this id, if any.
    pub async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        Ok(sqlx::query_as::<_, User>(
            "SELECT id, email, password_hash, disabled, created_at, plan_id, token_generation FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every user, oldest first.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        Ok(sqlx::query_as::<_, User>(
            "SELECT id, email, password_hash, disabled, created_at, plan_id, token_generation FROM users ORDER BY created_at, email",
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
        self.facts.invalidate_device(&id);
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

    /// The unrevoked device whose token hashes to `token_hash` (a device whose login
    /// has not finished only until its `pending_until`).
    pub async fn device_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<Device>, StoreError> {
        Ok(sqlx::query_as::<_, Device>(select_devices!(
            "WHERE token_hash = $1 AND revoked = 0 AND (pending_until IS NULL OR pending_until > $2)"
        ))
        .bind(token_hash)
        .bind(crate::auth::now_secs() as i64)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A user's devices whose login finished, by name (a device registered by a login
    /// that has not finished is nobody's to see: `store::accounts`, pending devices).
    pub async fn devices_for_user(&self, user_id: &str) -> Result<Vec<Device>, StoreError> {
        Ok(sqlx::query_as::<_, Device>(select_devices!(
            "WHERE user_id = $1 AND revoked = 0 AND pending_until IS NULL ORDER BY name, id"
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
        connection_id: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            // A device connecting with its token has finished its login.
            "UPDATE devices SET status = 'online', node_version = $2, identity_key = $3, relay_node = $4, last_seen = $5, connection_id = $6, pending_until = NULL WHERE id = $1",
        )
        .bind(device_id)
        .bind(node_version)
        .bind(identity_key_hex)
        .bind(relay_node)
        .bind(crate::auth::now_secs() as i64)
        .bind(connection_id as i64)
        .execute(&self.pool)
        .await?;
        self.facts.invalidate_device(device_id);
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
        sqlx::query("UPDATE devices SET status = 'offline', relay_node = NULL, connection_id = NULL, last_seen = $2 WHERE id = $1")
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

impl Store {
    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Enables or disables a user; returns whether the user exists. Disabling also
    /// revokes the user's access tokens (see [`Store::revoke_access_tokens`]), so that
    /// enabling the user later does not bring old tokens back.
    pub async fn set_user_disabled(&self, email: &str, disabled: bool) -> Result<bool, StoreError> {
        let email = email.trim().to_lowercase();
        let done = if disabled {
            sqlx::query(
                "UPDATE users SET disabled = 1, token_generation = token_generation + 1, \
                 tokens_revoked_at = $2 WHERE email = $1",
            )
            .bind(&email)
            .bind(crate::auth::now_secs() as i64)
            .execute(&self.pool)
            .await?
        } else {
            sqlx::query("UPDATE users SET disabled = 0 WHERE email = $1")
                .bind(&email)
                .execute(&self.pool)
                .await?
        };
        self.facts.invalidate_user_email(&email);
        Ok(done.rows_affected() > 0)
    }

    /// Revokes every access token issued to a user so far by moving their token
    /// generation on; returns the new generation (tokens of an older one are refused),
    /// or `None` when there is no such user.
    pub async fn revoke_access_tokens(&self, user_id: &str) -> Result<Option<i64>, StoreError> {
        sqlx::query(
            "UPDATE users SET token_generation = token_generation + 1, tokens_revoked_at = $2 \
             WHERE id = $1",
        )
        .bind(user_id)
        .bind(crate::auth::now_secs() as i64)
        .execute(&self.pool)
        .await?;
        self.facts.invalidate_user(user_id);
        Ok(self.user(user_id).await?.map(|u| u.token_generation))
    }

    /// Which of `ids` are users that still exist.
    pub async fn existing_users(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut found = std::collections::HashSet::new();
        for chunk in ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT id FROM users WHERE id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_as::<_, (String,)>(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            found.extend(
                query
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(|(id,)| id),
            );
        }
        Ok(found)
    }

    /// Users whose tokens may have been revoked lately: disabled ones, and those whose
    /// tokens were revoked after `since` (seconds since the epoch). Returns each with
    /// whether it is disabled and its token generation.
    pub async fn revoked_users(&self, since: i64) -> Result<Vec<(String, bool, i64)>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT id, disabled, token_generation FROM users WHERE disabled = 1 OR tokens_revoked_at > $1",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, disabled, generation)| (id, disabled != 0, generation))
            .collect())
    }

    /// Deletes a user with their devices, tokens and usage; returns whether they existed.
    pub async fn delete_user(&self, email: &str) -> Result<bool, StoreError> {
        let Some(user) = self.user_by_email(email).await? else {
            return Ok(false);
        };
        // Explicit deletes rather than relying on ON DELETE CASCADE being enforced.
        for table in [
            "usage_daily",
            "refresh_tokens",
            "ratings",
            "devices",
            "oidc_identities",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE user_id = $1"
            )))
            .bind(&user.id)
            .execute(&self.pool)
            .await?;
        }
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(&user.id)
            .execute(&self.pool)
            .await?;
        self.facts.invalidate_devices_of(&user.id);
        self.facts.invalidate_user(&user.id);
        Ok(true)
    }

    /// Moves a user to another plan; returns whether the user exists.
    pub async fn set_user_plan(&self, email: &str, plan_id: &str) -> Result<bool, StoreError> {
        if self.plan(plan_id).await?.is_none() {
            return Ok(false);
        }
        let email = email.trim().to_lowercase();
        let done = sqlx::query("UPDATE users SET plan_id = $2 WHERE email = $1")
            .bind(&email)
            .bind(plan_id)
            .execute(&self.pool)
            .await?;
        self.facts.invalidate_user_email(&email);
        Ok(done.rows_affected() > 0)
    }

    /// A plan by id.
    pub async fn plan(&self, id: &str) -> Result<Option<Plan>, StoreError> {
        Ok(sqlx::query_as::<_, Plan>(
            "SELECT id, name, max_devices, max_concurrent_streams, max_actions_per_day FROM plans WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Adds a plan or changes its limits.
    pub async fn upsert_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO plans (id, name, max_devices, max_concurrent_streams, max_actions_per_day) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET name = $2, max_devices = $3, \
             max_concurrent_streams = $4, max_actions_per_day = $5",
        )
        .bind(&plan.id)
        .bind(&plan.name)
        .bind(plan.max_devices)
        .bind(plan.max_concurrent_streams)
        .bind(plan.max_actions_per_day)
        .execute(&self.pool)
        .await?;
        self.facts.invalidate_plan(&plan.id);
        Ok(())
    }

    /// How many unrevoked devices a user has, counting those whose login is still
    /// under way (until their `pending_until`), for the plan's device limit.
    pub async fn count_devices(&self, user_id: &str) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM devices WHERE user_id = $1 AND revoked = 0 \
             AND (pending_until IS NULL OR pending_until > $2)",
        )
        .bind(user_id)
        .bind(crate::auth::now_secs() as i64)
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// Adds `delta` (negative for actions taken back) to a user's actions on `day`,
    /// never going below zero; returns the new total. The batched write of
    /// [`crate::actions::ActionCounter::flush`].
    pub async fn add_actions(
        &self,
        user_id: &str,
        day: &str,
        delta: i64,
    ) -> Result<i64, StoreError> {
        let (total,): (i64,) = sqlx::query_as(
            "INSERT INTO usage_daily (user_id, day, actions) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, day) DO UPDATE SET actions = CASE \
             WHEN usage_daily.actions + $4 < 0 THEN 0 ELSE usage_daily.actions + $4 END \
             RETURNING actions",
        )
        .bind(user_id)
        .bind(day)
        .bind(delta.max(0))
        .bind(delta)
        .fetch_one(&self.pool)
        .await?;
        Ok(total)
    }

    /// Actions a user started on `day`.
    pub async fn actions_on(&self, user_id: &str, day: &str) -> Result<i64, StoreError> {
        let n: Option<(i64,)> =
            sqlx::query_as("SELECT actions FROM usage_daily WHERE user_id = $1 AND day = $2")
                .bind(user_id)
                .bind(day)
                .fetch_optional(&self.pool)
                .await?;
        Ok(n.map(|(n,)| n).unwrap_or(0))
    }

    /// Renames a user's device; returns whether it exists.
    pub async fn rename_device(
        &self,
        user_id: &str,
        device_id: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE devices SET name = $3 WHERE id = $1 AND user_id = $2 AND revoked = 0",
        )
        .bind(device_id)
        .bind(user_id)
        .bind(name)
        .execute(&self.pool)
        .await?;
        self.facts.invalidate_device(device_id);
        Ok(done.rows_affected() > 0)
    }

    /// Revokes a user's device and its token; returns whether it existed.
    pub async fn revoke_device(&self, user_id: &str, device_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE devices SET revoked = 1, status = 'offline' WHERE id = $1 AND user_id = $2 AND revoked = 0",
        )
        .bind(device_id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        self.facts.invalidate_device(device_id);
        Ok(done.rows_affected() > 0)
    }

    /// Stores a refresh token's hash.
    pub async fn insert_refresh_token(
        &self,
        user_id: &str,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, user_id, token_hash, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(user_id)
        .bind(token_hash)
        .bind(expires_at)
        .bind(crate::auth::now_secs() as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The refresh token with this hash, revoked or not.
    pub async fn refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<RefreshToken>, StoreError> {
        Ok(sqlx::query_as::<_, RefreshToken>(
            "SELECT id, user_id, expires_at, revoked FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Revokes one refresh token; returns whether it was live (so a token is used once).
    pub async fn revoke_refresh_token(&self, id: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE refresh_tokens SET revoked = 1 WHERE id = $1 AND revoked = 0")
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Revokes every refresh token of a user (sign out everywhere, or a stolen token).
    pub async fn revoke_all_refresh_tokens(&self, user_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE refresh_tokens SET revoked = 1 WHERE user_id = $1")
            .bind(user_id)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_makes_the_connection_verify_full() {
        let plain = DatabaseConfig::default();
        let url = "postgres://relay@db.example.net:5432/relay";
        assert_eq!(connection_url(url, &plain), url, "nothing set: unchanged");
        let with_ca = DatabaseConfig {
            ca_file: Some("/etc/aisa relay/db-ca.pem".into()),
            ..DatabaseConfig::default()
        };
        assert_eq!(
            connection_url(
                &format!("{url}?sslmode=prefer&application_name=relay"),
                &with_ca
            ),
            format!(
                "{url}?application_name=relay&sslrootcert=/etc/aisa%20relay/db-ca.pem&sslmode=verify-full"
            ),
            "the URL's weaker sslmode is replaced"
        );
        let explicit = DatabaseConfig {
            sslmode: Some("verify-ca".into()),
            ..with_ca.clone()
        };
        assert!(connection_url(url, &explicit).ends_with("sslmode=verify-ca"));
        assert_eq!(
            connection_url("sqlite:///tmp/relay.db?mode=rwc", &with_ca),
            "sqlite:///tmp/relay.db?mode=rwc"
        );
    }
}
