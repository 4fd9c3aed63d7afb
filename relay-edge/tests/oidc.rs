//! The store's side of sign-in with OpenID Connect providers (migration
//! `0007_oidc_identities.sql`), on embedded SQLite, or on PostgreSQL when
//! `AISA_TEST_POSTGRES` names a server: identities linked once and found again, an
//! account made with its identity both or neither, sign-ins under way taken once, and
//! identities going with their account.
//!
//! The flow itself (PKCE, state, nonce, the ID token, the linking rule in a browser) is
//! tested end to end in Chromium against a real provider:
//! `browser-client/test/browser/oidc.test.ts`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the panic

use aisa_relay::store::{NewIdentity, PendingLogin, Store, StoreError};
use aisa_testkit::fakes::test_database;

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = match test_database().await {
        Some(url) => url,
        None => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("relay.db").display()
        ),
    };
    (
        Store::open(&url).await.expect("store opens and migrates"),
        dir,
    )
}

const ISSUER: &str = "https://id.example.com";

fn identity<'a>(subject: &'a str, email: Option<&'a str>) -> NewIdentity<'a> {
    NewIdentity {
        issuer: ISSUER,
        subject,
        provider: "example",
        email,
        now: 1_000,
    }
}

#[tokio::test]
async fn an_identity_links_once_and_signs_in_its_account_afterwards() {
    let (store, _dir) = store().await;
    let ann = store.create_user("ann@example.com", "hash").await.unwrap();
    assert!(
        store
            .identity_user(ISSUER, "ann-sub", 1_000)
            .await
            .unwrap()
            .is_none()
    );
    store
        .link_identity(&ann.id, &identity("ann-sub", Some("ann@example.com")))
        .await
        .unwrap();
    let found = store.identity_user(ISSUER, "ann-sub", 2_000).await.unwrap();
    assert_eq!(found.map(|u| u.id), Some(ann.id.clone()));
    // The same subject at another issuer is another identity.
    assert!(
        store
            .identity_user("https://other.example", "ann-sub", 2_000)
            .await
            .unwrap()
            .is_none()
    );
    // An identity links to one account only.
    let bob = store.create_user("bob@example.com", "hash").await.unwrap();
    let again = store
        .link_identity(&bob.id, &identity("ann-sub", None))
        .await;
    assert!(matches!(again, Err(StoreError::Duplicate(_))), "{again:?}");
    assert_eq!(store.identity_count(&ann.id).await.unwrap(), 1);
    assert_eq!(store.identity_count(&bob.id).await.unwrap(), 0);
}

#[tokio::test]
async fn an_account_made_by_a_provider_comes_with_its_identity_or_not_at_all() {
    let (store, _dir) = store().await;
    let new = store
        .create_user_with_identity(
            "New@Example.com",
            &identity("new-sub", Some("new@example.com")),
        )
        .await
        .unwrap();
    assert_eq!(new.email, "new@example.com");
    assert!(
        !aisa_relay::auth::verify_password("", &new.password_hash),
        "no password opens it"
    );
    assert_eq!(
        store
            .identity_user(ISSUER, "new-sub", 1_000)
            .await
            .unwrap()
            .map(|u| u.id),
        Some(new.id.clone())
    );
    // The email is taken: no identity is left behind.
    let taken = store
        .create_user_with_identity("new@example.com", &identity("other-sub", None))
        .await;
    assert!(matches!(taken, Err(StoreError::Duplicate(_))), "{taken:?}");
    assert!(
        store
            .identity_user(ISSUER, "other-sub", 1_000)
            .await
            .unwrap()
            .is_none()
    );
    // The identity is taken: no account is left behind.
    let linked = store
        .create_user_with_identity("third@example.com", &identity("new-sub", None))
        .await;
    assert!(
        matches!(linked, Err(StoreError::Duplicate(_))),
        "{linked:?}"
    );
    assert!(
        store
            .user_by_email("third@example.com")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn identities_go_with_their_account() {
    let (store, _dir) = store().await;
    let ann = store.create_user("ann@example.com", "hash").await.unwrap();
    store
        .link_identity(&ann.id, &identity("ann-sub", Some("ann@example.com")))
        .await
        .unwrap();
    assert!(store.delete_user("ann@example.com").await.unwrap());
    assert!(
        store
            .identity_user(ISSUER, "ann-sub", 1_000)
            .await
            .unwrap()
            .is_none()
    );
    // A new account with the address starts without the old identity.
    let again = store.create_user("ann@example.com", "hash").await.unwrap();
    assert_eq!(store.identity_count(&again.id).await.unwrap(), 0);
}

#[tokio::test]
async fn a_sign_in_under_way_is_taken_once_and_expired_ones_are_dropped() {
    let (store, _dir) = store().await;
    let login = |expires_at| PendingLogin {
        provider: "example".into(),
        nonce: "nonce".into(),
        verifier: "verifier".into(),
        expires_at,
        replaces_session: None,
    };
    store
        .insert_oidc_login("old", &login(500), 100)
        .await
        .unwrap();
    store
        .insert_oidc_login("live", &login(1_600), 1_000)
        .await
        .unwrap();
    let twice = store.insert_oidc_login("live", &login(1_600), 1_000).await;
    assert!(matches!(twice, Err(StoreError::Duplicate(_))), "{twice:?}");
    let taken = store.take_oidc_login("live").await.unwrap().unwrap();
    assert_eq!(
        (
            taken.provider.as_str(),
            taken.nonce.as_str(),
            taken.verifier.as_str(),
            taken.expires_at
        ),
        ("example", "nonce", "verifier", 1_600)
    );
    assert!(
        store.take_oidc_login("live").await.unwrap().is_none(),
        "a state works once"
    );
    // "old" expired at 500 and went when "live" was stored at 1000.
    assert!(store.take_oidc_login("old").await.unwrap().is_none());
}
