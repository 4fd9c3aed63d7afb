//! A browser's status-event stream (a Control stream with no device id): one
//! DEVICE_STATUS per device of the account, then STATUS_SNAPSHOT_END with their number,
//! also for an account with no devices, so that a browser can tell "none" from "slow".
//! A device whose login has not finished (pending) is not among them.
//!
//! A real relay on loopback (SQLite in a temporary folder), a browser played with
//! wtransport.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the panic

use std::time::Duration;

use aisa_relay::{RelayConfig, RelayHandle};
use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::{Body, Envelope, MAX_FRAME_LEN, OpenHeader, StreamKind};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const PASSWORD: &str = "correct horse battery";

async fn start(dir: &std::path::Path) -> RelayHandle {
    let _ = rustls::crypto::ring::default_provider().install_default();
    aisa_relay::start(RelayConfig {
        quic_listen: ([127, 0, 0, 1], 0).into(),
        http_listen: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.to_owned(),
        ..RelayConfig::default()
    })
    .await
    .expect("relay starts")
}

async fn post(relay: &RelayHandle, path: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("http://{}{path}", relay.http_addr))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Signs up `email`; returns an access token.
async fn sign_up(relay: &RelayHandle, email: &str) -> String {
    let reply = post(
        relay,
        "/api/auth/signup",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    reply["token"].as_str().unwrap().to_owned()
}

/// A WebTransport session with the relay, as a browser opens one.
async fn browser_session(relay: &RelayHandle) -> wtransport::Connection {
    let config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(relay.cert_sha256())])
        .build();
    let endpoint = wtransport::Endpoint::client(config).unwrap();
    endpoint
        .connect(format!("https://127.0.0.1:{}/wt", relay.quic_addr.port()))
        .await
        .unwrap()
}

/// Opens a status-event stream with `token` and returns its first `n` envelopes.
async fn status_events(relay: &RelayHandle, token: &str, n: usize) -> Vec<Envelope> {
    let session = browser_session(relay).await;
    let (mut send, mut recv) = session.open_bi().await.unwrap().await.unwrap();
    let header = OpenHeader {
        device_id: String::new(),
        kind: StreamKind::Control,
        token: token.to_owned(),
        e2e: None,
    };
    write_frame(&mut send, &header.encode(), MAX_FRAME_LEN)
        .await
        .unwrap();
    let mut envelopes = Vec::new();
    for _ in 0..n {
        let frame = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
            .await
            .expect("a frame in time")
            .expect("read")
            .expect("a frame, not the end");
        envelopes.push(Envelope::decode(&frame).unwrap());
    }
    envelopes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_devices_gets_an_empty_snapshot_end() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path()).await;
    let token = sign_up(&relay, "none@example.com").await;
    let events = status_events(&relay, &token, 1).await;
    assert_eq!(events[0].body, Body::StatusSnapshotEnd { devices: 0 });
    relay.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_lists_each_device_then_ends() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path()).await;
    let token = sign_up(&relay, "one@example.com").await;
    let enrolled = post(
        &relay,
        "/api/devices/enroll",
        json!({"email": "one@example.com", "password": PASSWORD, "name": "laptop"}),
    )
    .await;
    let device_id = enrolled["device_id"].as_str().unwrap();
    let events = status_events(&relay, &token, 2).await;
    assert_eq!(events[0].device_id, device_id);
    assert!(
        matches!(events[0].body, Body::DeviceStatus { online: false, .. }),
        "{:?}",
        events[0]
    );
    assert_eq!(events[1].body, Body::StatusSnapshotEnd { devices: 1 });
    relay.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_login_has_not_finished_is_not_in_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path()).await;
    let token = sign_up(&relay, "pending@example.com").await;
    // As `desktop-node login` enrolls: the device is pending until it confirms.
    let enrolled = post(
        &relay,
        "/api/devices/enroll",
        json!({"email": "pending@example.com", "password": PASSWORD, "name": "laptop", "confirm": true}),
    )
    .await;
    let events = status_events(&relay, &token, 1).await;
    assert_eq!(events[0].body, Body::StatusSnapshotEnd { devices: 0 });
    let confirmed = reqwest::Client::new()
        .post(format!("http://{}/api/device/confirm", relay.http_addr))
        .bearer_auth(enrolled["device_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);
    let events = status_events(&relay, &token, 2).await;
    assert_eq!(events[0].device_id, enrolled["device_id"].as_str().unwrap());
    assert_eq!(events[1].body, Body::StatusSnapshotEnd { devices: 1 });
    relay.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_of_protocol_1_0_gets_no_end_marker() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start(dir.path()).await;
    let token = sign_up(&relay, "old@example.com").await;
    post(
        &relay,
        "/api/devices/enroll",
        json!({"email": "old@example.com", "password": PASSWORD, "name": "laptop"}),
    )
    .await;
    let session = browser_session(&relay).await;
    let (mut send, mut recv) = session.open_bi().await.unwrap().await.unwrap();
    let mut header = OpenHeader {
        device_id: String::new(),
        kind: StreamKind::Control,
        token,
        e2e: None,
    }
    .encode();
    header[1] = 0; // announces protocol 1.0
    write_frame(&mut send, &header, MAX_FRAME_LEN)
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
        .await
        .expect("a frame in time")
        .unwrap()
        .expect("the snapshot");
    assert!(matches!(
        Envelope::decode(&first).unwrap().body,
        Body::DeviceStatus { .. }
    ));
    // The browser ends its side; the relay ends the stream. Nothing came in between:
    // no STATUS_SNAPSHOT_END for a browser that would not know it.
    send.finish().await.unwrap();
    let rest = tokio::time::timeout(WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
        .await
        .expect("the end in time")
        .unwrap();
    assert!(rest.is_none(), "{:?}", rest.map(|f| Envelope::decode(&f)));
    relay.shutdown(Duration::from_millis(100)).await;
}
