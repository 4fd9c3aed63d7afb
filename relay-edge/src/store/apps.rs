//! The marketplace's tables: apps, their immutable versions, ratings and installs
//! (migration `0004_marketplace.sql`). Same portable SQL as the rest of the store.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{Store, StoreError, flag, unique_violation};

/// An app id and who owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRow {
    /// The app id from its manifest.
    pub id: String,
    /// The user who first published it; only they publish further versions.
    pub owner_id: String,
    /// From the newest unyanked version's manifest.
    pub name: String,
    /// From the newest unyanked version's manifest.
    pub description: String,
    /// From the newest unyanked version's manifest.
    pub category: String,
    /// The author's name, from the newest unyanked version's manifest.
    pub author: String,
    /// Seconds since the epoch.
    pub created_at: i64,
}

/// What the marketplace shows for an app in a list: the row plus its figures.
#[derive(Debug, Clone)]
pub struct AppListing {
    /// The app.
    pub app: AppRow,
    /// Sum of its ratings' stars.
    pub rating_sum: i64,
    /// How many users rated it.
    pub rating_count: i64,
    /// How many devices installed some version of it.
    pub installs: i64,
    /// Its unyanked versions, in no particular order.
    pub live_versions: Vec<String>,
}

/// One published version.
#[derive(Debug, Clone)]
pub struct VersionRow {
    /// The app.
    pub app_id: String,
    /// Semantic version.
    pub version: String,
    /// SHA-256 (hex) of the signed bundle.
    pub sha256: String,
    /// Bytes of the signed bundle.
    pub size: i64,
    /// The desktop-node versions it runs on (a semver range).
    pub runtime: String,
    /// `manifest.json`, as published.
    pub manifest: String,
    /// `permissions.json`, as published.
    pub permissions: String,
    /// `action-schema.json`, as published.
    pub action_schema: String,
    /// `ui-schema.json`, as published.
    pub ui_schema: String,
    /// Where the bundle is in bundle storage.
    pub storage_key: String,
    /// Id of the platform key that signed it.
    pub key_id: String,
    /// Withdrawn: never "latest", still downloadable by exact version.
    pub yanked: bool,
    /// Seconds since the epoch.
    pub published_at: i64,
}

impl FromRow<'_, AnyRow> for AppRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(AppRow {
            id: row.try_get("id")?,
            owner_id: row.try_get("owner_id")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            category: row.try_get("category")?,
            author: row.try_get("author")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

impl FromRow<'_, AnyRow> for VersionRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(VersionRow {
            app_id: row.try_get("app_id")?,
            version: row.try_get("version")?,
            sha256: row.try_get("sha256")?,
            size: row.try_get("size")?,
            runtime: row.try_get("runtime")?,
            manifest: row.try_get("manifest")?,
            permissions: row.try_get("permissions")?,
            action_schema: row.try_get("action_schema")?,
            ui_schema: row.try_get("ui_schema")?,
            storage_key: row.try_get("storage_key")?,
            key_id: row.try_get("key_id")?,
            yanked: flag(row, "yanked")?,
            published_at: row.try_get("published_at")?,
        })
    }
}

const APP_COLUMNS: &str =
    "a.id, a.owner_id, a.name, a.description, a.category, a.author, a.created_at";
const VERSION_COLUMNS: &str = "app_id, version, sha256, size, runtime, manifest, permissions, \
     action_schema, ui_schema, storage_key, key_id, yanked, published_at";

/// `%text%` for `LIKE … ESCAPE '\'`, lower-cased, with `%`, `_` and `\` taken literally.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

impl Store {
    /// Creates the app `app.id` owned by `app.owner_id` unless it exists; returns the
    /// app as stored (whose `owner_id` tells who owns it, possibly someone else).
    pub async fn claim_app(&self, app: &AppRow) -> Result<AppRow, StoreError> {
        sqlx::query(
            "INSERT INTO apps (id, owner_id, name, description, category, author, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&app.id)
        .bind(&app.owner_id)
        .bind(&app.name)
        .bind(&app.description)
        .bind(&app.category)
        .bind(&app.author)
        .bind(app.created_at)
        .execute(&self.pool)
        .await?;
        self.app(&app.id)
            .await?
            .ok_or(StoreError::Db(sqlx::Error::RowNotFound))
    }

    /// The app with this id, if any.
    pub async fn app(&self, id: &str) -> Result<Option<AppRow>, StoreError> {
        Ok(sqlx::query_as::<_, AppRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {APP_COLUMNS} FROM apps a WHERE a.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Sets the app's shown name, description, category and author.
    pub async fn update_app_summary(&self, app: &AppRow) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE apps SET name = $2, description = $3, category = $4, author = $5 WHERE id = $1",
        )
        .bind(&app.id)
        .bind(&app.name)
        .bind(&app.description)
        .bind(&app.category)
        .bind(&app.author)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds a version; [`StoreError::Duplicate`] when that version exists (versions
    /// are immutable).
    pub async fn insert_version(&self, v: &VersionRow) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO app_versions ({VERSION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        )))
        .bind(&v.app_id)
        .bind(&v.version)
        .bind(&v.sha256)
        .bind(v.size)
        .bind(&v.runtime)
        .bind(&v.manifest)
        .bind(&v.permissions)
        .bind(&v.action_schema)
        .bind(&v.ui_schema)
        .bind(&v.storage_key)
        .bind(&v.key_id)
        .bind(i64::from(v.yanked))
        .bind(v.published_at)
        .execute(&self.pool)
        .await
        .map_err(|e| unique_violation(e, "this version"))?;
        Ok(())
    }

    /// One version of an app, yanked or not.
    pub async fn app_version(
        &self,
        app_id: &str,
        version: &str,
    ) -> Result<Option<VersionRow>, StoreError> {
        Ok(sqlx::query_as::<_, VersionRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM app_versions WHERE app_id = $1 AND version = $2"
        )))
        .bind(app_id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Every version of an app, yanked or not, in no particular order.
    pub async fn app_versions(&self, app_id: &str) -> Result<Vec<VersionRow>, StoreError> {
        Ok(sqlx::query_as::<_, VersionRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM app_versions WHERE app_id = $1"
        )))
        .bind(app_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Yanks (or restores) a version; returns whether the version exists.
    pub async fn set_yanked(
        &self,
        app_id: &str,
        version: &str,
        yanked: bool,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE app_versions SET yanked = $3 WHERE app_id = $1 AND version = $2")
                .bind(app_id)
                .bind(version)
                .bind(i64::from(yanked))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Apps with their ratings, installs and unyanked versions, by name. `query` keeps
    /// those whose id, name or description contains it (case-insensitive); `category`
    /// those in that category. Apps with no unyanked version are left out unless
    /// `include_hidden` (the operator's list).
    pub async fn list_apps(
        &self,
        query: Option<&str>,
        category: Option<&str>,
        include_hidden: bool,
    ) -> Result<Vec<AppListing>, StoreError> {
        let mut sql = format!(
            "SELECT {APP_COLUMNS}, \
               (SELECT COALESCE(CAST(SUM(r.stars) AS BIGINT), 0) FROM ratings r WHERE r.app_id = a.id) AS rating_sum, \
               (SELECT COUNT(*) FROM ratings r WHERE r.app_id = a.id) AS rating_count, \
               (SELECT COUNT(DISTINCT i.device_id) FROM installs i WHERE i.app_id = a.id) AS installs \
             FROM apps a WHERE 1 = 1"
        );
        let query = query.map(str::trim).filter(|q| !q.is_empty());
        let category = category.map(str::trim).filter(|c| !c.is_empty());
        let mut n = 0;
        if query.is_some() {
            n += 1;
            sql.push_str(&format!(
                " AND (LOWER(a.id) LIKE ${n} ESCAPE '\\' OR LOWER(a.name) LIKE ${n} ESCAPE '\\' \
                 OR LOWER(a.description) LIKE ${n} ESCAPE '\\')"
            ));
        }
        if category.is_some() {
            n += 1;
            sql.push_str(&format!(" AND a.category = ${n}"));
        }
        if !include_hidden {
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM app_versions v WHERE v.app_id = a.id AND v.yanked = 0)",
            );
        }
        sql.push_str(" ORDER BY a.name, a.id");
        let mut select = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(q) = query {
            select = select.bind(like_pattern(q));
        }
        if let Some(c) = category {
            select = select.bind(c.to_owned());
        }
        let rows = select.fetch_all(&self.pool).await?;
        let live: Vec<(String, String)> =
            sqlx::query_as("SELECT app_id, version FROM app_versions WHERE yanked = 0")
                .fetch_all(&self.pool)
                .await?;
        let mut listings = Vec::with_capacity(rows.len());
        for row in &rows {
            let app = AppRow::from_row(row)?;
            let live_versions = live
                .iter()
                .filter(|(id, _)| *id == app.id)
                .map(|(_, v)| v.clone())
                .collect();
            listings.push(AppListing {
                rating_sum: row.try_get("rating_sum")?,
                rating_count: row.try_get("rating_count")?,
                installs: row.try_get("installs")?,
                live_versions,
                app,
            });
        }
        Ok(listings)
    }

    /// Categories of the apps the marketplace shows, with how many apps each has.
    pub async fn categories(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT a.category, COUNT(*) FROM apps a \
             WHERE EXISTS (SELECT 1 FROM app_versions v WHERE v.app_id = a.id AND v.yanked = 0) \
             GROUP BY a.category ORDER BY a.category",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a user's rating of an app, replacing their earlier one; returns the
    /// app's star sum and rating count.
    pub async fn rate_app(
        &self,
        app_id: &str,
        user_id: &str,
        stars: i64,
    ) -> Result<(i64, i64), StoreError> {
        sqlx::query(
            "INSERT INTO ratings (app_id, user_id, stars, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app_id, user_id) DO UPDATE SET stars = $3, updated_at = $4",
        )
        .bind(app_id)
        .bind(user_id)
        .bind(stars)
        .bind(crate::auth::now_secs() as i64)
        .execute(&self.pool)
        .await?;
        self.app_rating(app_id).await
    }

    /// An app's star sum and rating count.
    pub async fn app_rating(&self, app_id: &str) -> Result<(i64, i64), StoreError> {
        Ok(sqlx::query_as(
            "SELECT COALESCE(CAST(SUM(stars) AS BIGINT), 0), COUNT(*) FROM ratings WHERE app_id = $1",
        )
        .bind(app_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records that a device installed a version; returns false when that device had
    /// already reported this version (a retry is not a second install).
    pub async fn record_install(
        &self,
        app_id: &str,
        version: &str,
        device_id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO installs (app_id, version, device_id, installed_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (app_id, version, device_id) DO NOTHING",
        )
        .bind(app_id)
        .bind(version)
        .bind(device_id)
        .bind(crate::auth::now_secs() as i64)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// How many devices installed some version of an app.
    pub async fn app_installs(&self, app_id: &str) -> Result<i64, StoreError> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(DISTINCT device_id) FROM installs WHERE app_id = $1")
                .bind(app_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_take_wildcards_literally() {
        assert_eq!(like_pattern("SEO"), "%seo%");
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
