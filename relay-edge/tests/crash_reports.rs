//! `POST /api/crash-reports` on a real relay: accepted from a device once and kept as a
//! file in the folder docs/relay.md names; refused without a device token, with a wrong
//! or revoked one, over the size cap, when not a JSON object, over the per-device
//! allowance, over the total count; and 404 where the operator turned them off.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use aisa_relay::RelayConfig;
use aisa_relay::server::RelayHandle;
use aisa_testkit::system::relay_config;
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

async fn relay(dir: &Path, edit: impl FnOnce(&mut RelayConfig)) -> RelayHandle {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = relay_config(dir, 0, None);
    edit(&mut config);
    let relay = aisa_relay::start(config).await.unwrap();
    let hash = aisa_relay::auth::hash_password(PASSWORD).unwrap();
    relay
        .state
        .store
        .create_user("carol@example.com", &hash)
        .await
        .unwrap();
    relay
}

/// Enrolls a device; returns (device id, device token).
async fn enroll(relay: &RelayHandle, name: &str) -> (String, String) {
    let enrolled: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/api/devices/enroll", relay.http_addr))
        .json(&json!({ "email": "carol@example.com", "password": PASSWORD, "name": name }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        enrolled["device_id"].as_str().expect("enrolled").to_owned(),
        enrolled["device_token"]
            .as_str()
            .expect("a token")
            .to_owned(),
    )
}

async fn upload(relay: &RelayHandle, auth: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/api/crash-reports", relay.http_addr))
        .header("content-type", "application/json")
        .body(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let answer = request.send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

fn report(message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "format": "aisa-crash-report/1",
        "node_version": "0.1.0",
        "message": message,
        "backtrace": "0: aisa_node::main",
        "log_tail": ["INFO started"],
    }))
    .unwrap()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for device in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(device.path()).unwrap().flatten() {
            found.push(file.path());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_kept_for_the_operator_within_their_caps() {
    let data = tempfile::tempdir().unwrap();
    let relay = relay(data.path(), |c| {
        c.crash_reports.max_bytes = 2048;
        c.crash_reports.per_device_per_day = 2;
        c.crash_reports.max_reports = 3;
    })
    .await;
    let folder = data.path().join("crash-reports");
    let (device, token) = enroll(&relay, "desk").await;
    let auth = format!("Device {token}");

    // Accepted once, kept as a file with who sent it.
    let (status, body) = upload(&relay, Some(&auth), report("first")).await;
    assert_eq!(status, 201, "{body}");
    let kept = files(&folder);
    assert_eq!(kept.len(), 1);
    assert!(kept[0].starts_with(folder.join(&device)));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&kept[0]).unwrap()).unwrap();
    assert_eq!(doc["device_id"], device.as_str());
    assert_eq!(doc["report"]["message"], "first");
    assert!(doc["user_id"].as_str().is_some_and(|u| !u.is_empty()));

    // Refused without the device token, or with a wrong one (or a user's bearer form).
    for auth in [
        None,
        Some("Device aisa_dt_not-a-real-token".to_owned()),
        Some(format!("Bearer {token}")),
    ] {
        let (status, body) = upload(&relay, auth.as_deref(), report("x")).await;
        assert_eq!(status, 401, "{auth:?}: {body}");
    }
    // Over the size cap, and not an object.
    let big = report(&"x".repeat(4096));
    let (status, body) = upload(&relay, Some(&auth), big).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("at most 2048 bytes"), "{body}");
    let (status, _) = upload(&relay, Some(&auth), b"[1,2]".to_vec()).await;
    assert_eq!(status, 400);
    assert_eq!(files(&folder).len(), 1, "nothing refused was kept");

    // Over the device's allowance for 24 hours.
    assert_eq!(upload(&relay, Some(&auth), report("second")).await.0, 201);
    let (status, body) = upload(&relay, Some(&auth), report("third")).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body.contains("at most 2 crash reports per device"),
        "{body}"
    );

    // Over the total: another device's third report fills it, the fourth is refused
    // (kept reports are never dropped to make room).
    let (_, other) = enroll(&relay, "laptop").await;
    let other_auth = format!("Device {other}");
    assert_eq!(upload(&relay, Some(&other_auth), report("a")).await.0, 201);
    let (status, body) = upload(&relay, Some(&other_auth), report("b")).await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(files(&folder).len(), 3);

    // A revoked device can no longer upload.
    let user = relay
        .state
        .store
        .cached_device(&device)
        .await
        .unwrap()
        .unwrap()
        .user_id;
    assert!(
        relay
            .state
            .store
            .revoke_device(&user, &device)
            .await
            .unwrap()
    );
    assert_eq!(upload(&relay, Some(&auth), report("late")).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_does_not_collect_reports_says_so() {
    let data = tempfile::tempdir().unwrap();
    let relay = relay(data.path(), |c| c.crash_reports.enabled = false).await;
    let (_, token) = enroll(&relay, "desk").await;
    let (status, body) = upload(&relay, Some(&format!("Device {token}")), report("x")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("does not collect crash reports"), "{body}");
    assert!(!data.path().join("crash-reports").exists());
}
