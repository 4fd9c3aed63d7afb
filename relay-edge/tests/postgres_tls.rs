//! PostgreSQL as the production store, against the server `scripts/services.sh start`
//! runs (`AISA_TEST_POSTGRES`, with TLS on and its test CA in `AISA_TEST_POSTGRES_CA`):
//!
//! - `[database] ca_file` makes the connection `sslmode=verify-full`: it is encrypted,
//!   the server's certificate must chain to that CA, and another CA is refused;
//! - relays and stores starting together on a fresh database migrate it once, one after
//!   the other (the migration advisory lock, `aisa_relay::store::MIGRATION_LOCK`), and a
//!   node waits while another holds that lock.
//!
//! Without `AISA_TEST_POSTGRES` each test says so and passes: scripts/test.sh runs them
//! with the server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the panic

use std::time::Duration;

use aisa_relay::config::DatabaseConfig;
use aisa_relay::store::{MIGRATION_LOCK, Store};
use sqlx::Connection;

/// The server, or `None` (the test is then skipped, with a line saying so).
fn server() -> Option<String> {
    let server = std::env::var("AISA_TEST_POSTGRES").ok();
    if server.is_none() {
        eprintln!("AISA_TEST_POSTGRES is not set (scripts/services.sh start): skipped");
    }
    server
}

/// A fresh, empty database on the server: its URL.
async fn fresh_database(server: &str) -> String {
    sqlx::any::install_default_drivers();
    let name = format!("aisa_optest_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::AnyConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    format!("{server}/{name}")
}

/// The migrations the relay ships.
fn migration_count() -> i64 {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count() as i64
}

#[tokio::test]
async fn verify_full_with_the_ca_connects_over_tls_and_another_ca_is_refused() {
    let Some(server) = server() else { return };
    let ca = std::env::var("AISA_TEST_POSTGRES_CA")
        .expect("AISA_TEST_POSTGRES_CA names the test CA (scripts/services.sh start)");
    // By name, so that the name in the certificate is checked (it holds `localhost`).
    let url = fresh_database(&server)
        .await
        .replace("@127.0.0.1:", "@localhost:");
    let db_name = url.rsplit('/').next().unwrap().to_owned();
    let with_ca = DatabaseConfig {
        ca_file: Some(ca.into()),
        min_connections: 2,
        ..DatabaseConfig::default()
    };
    let store = Store::open_with(&url, &with_ca)
        .await
        .expect("verify-full with the right CA connects");
    store.ping().await.unwrap();

    // The server's view: every connection of this database is encrypted.
    let mut admin = sqlx::AnyConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    let (encrypted, all): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s ON s.pid = a.pid WHERE a.datname = $1",
    )
    .bind(&db_name)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(all >= 1, "the store holds connections");
    assert_eq!(encrypted, all, "every connection uses TLS");

    // A CA that did not sign the server's certificate: refused, however the URL asks.
    let dir = tempfile::tempdir().unwrap();
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = params.self_signed(&other).unwrap();
    std::fs::write(dir.path().join("other-ca.pem"), other_ca.pem()).unwrap();
    let wrong = DatabaseConfig {
        ca_file: Some(dir.path().join("other-ca.pem")),
        acquire_timeout_secs: 3,
        ..DatabaseConfig::default()
    };
    let refused = Store::open_with(&format!("{url}?sslmode=disable"), &wrong).await;
    assert!(
        refused.is_err(),
        "a server certificate from another CA is refused"
    );
}

#[tokio::test]
async fn relays_and_stores_starting_together_migrate_a_fresh_database_once() {
    let Some(server) = server() else { return };
    let url = fresh_database(&server).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let relays = dirs.iter().enumerate().map(|(i, dir)| {
        let config = aisa_relay::RelayConfig {
            quic_listen: ([127, 0, 0, 1], 0).into(),
            http_listen: ([127, 0, 0, 1], 0).into(),
            data_dir: dir.path().to_owned(),
            database_url: Some(url.clone()),
            node_name: format!("migrating-{i}"),
            ..aisa_relay::RelayConfig::default()
        };
        tokio::spawn(aisa_relay::start(config))
    });
    let relays: Vec<_> = relays.collect();
    let stores: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Store::open_with(&url, &DatabaseConfig::default()).await })
        })
        .collect();
    for store in stores {
        store.await.unwrap().expect("every store opens");
    }
    for relay in relays {
        let relay = relay.await.unwrap().expect("every relay starts");
        relay.shutdown(Duration::from_millis(50)).await;
    }
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    let (applied, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE NOT success) FROM _sqlx_migrations",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(applied, migration_count(), "each migration applied once");
    assert_eq!(failed, 0);
}

#[tokio::test]
async fn a_node_waits_while_another_holds_the_migration_lock() {
    let Some(server) = server() else { return };
    let url = fresh_database(&server).await;
    // Another node migrating: it holds the lock on this database.
    let mut other = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut other)
        .await
        .unwrap();
    let opening = tokio::spawn({
        let url = url.clone();
        async move { Store::open_with(&url, &DatabaseConfig::default()).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!opening.is_finished(), "the store waits for the lock");
    let mut probe = sqlx::AnyConnection::connect(&url).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'users'",
    )
    .fetch_one(&mut probe)
    .await
    .unwrap();
    assert_eq!(tables, 0, "nothing migrated while the lock is held");
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut other)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), opening)
        .await
        .expect("the store opens once the lock is free")
        .unwrap()
        .expect("and migrates");
}
