//! The test doubles more than one crate's tests need, kept in one place.
//!
//! * [`NoAi`], [`ScriptedAi`]: AI providers that are never configured, or answer fixed
//!   chunks after a delay (defined next to the `AiProvider` trait in
//!   `aisa_node::ai::testing`, re-exported here);
//! * [`test_database`]: the relay's database for a test (a fresh PostgreSQL database
//!   when `AISA_TEST_POSTGRES` names a server, else embedded SQLite).

pub use aisa_node::ai::testing::{NoAi, ScriptedAi};

/// The database for a new test relay: with `AISA_TEST_POSTGRES` set (a server URL such
/// as `postgres://postgres@127.0.0.1:55432`, see `scripts/services.sh`), a fresh
/// PostgreSQL database on that server; otherwise `None`, meaning embedded SQLite.
pub async fn test_database() -> Option<String> {
    use sqlx::Connection;
    let server = std::env::var("AISA_TEST_POSTGRES").ok()?;
    sqlx::any::install_default_drivers();
    let name = format!("aisa_test_{}", unique_suffix());
    let mut admin = sqlx::AnyConnection::connect(&format!("{server}/postgres"))
        .await
        .expect("connect to the test PostgreSQL server");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    Some(format!("{server}/{name}"))
}

/// `<pid>_<nanoseconds>_<counter>`: unique across processes and calls.
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_never_repeat() {
        let a = unique_suffix();
        let b = unique_suffix();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{}_", std::process::id())), "{a}");
        assert!(
            a.bytes().all(|c| c.is_ascii_digit() || c == b'_'),
            "a valid SQL identifier tail: {a}"
        );
    }
}
