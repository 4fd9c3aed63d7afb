//! `desktop-node login --relay URL` without a password: the real binary against a real
//! relay on loopback prints a code and a link, the signed-in person approves it over the
//! HTTP API (what the web app's `/activate` page calls), and the node is registered: its
//! settings are written, the relay lists the device, and `desktop-node run` connects.
//! A denied login fails with a clear message and registers nothing. A login that fails
//! after the relay registered the device (the secret store refuses the token) leaves no
//! device in the account; one that succeeds is listed at once, before `run`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Killed, NODE};
use serde_json::{Value, json};

async fn start_relay(dir: &std::path::Path) -> aisa_relay::RelayHandle {
    let _ = rustls::crypto::ring::default_provider().install_default();
    aisa_relay::start(aisa_relay::RelayConfig {
        quic_listen: ([127, 0, 0, 1], 0).into(),
        http_listen: ([127, 0, 0, 1], 0).into(),
        data_dir: dir.to_owned(),
        ..aisa_relay::RelayConfig::default()
    })
    .await
    .expect("relay starts")
}

/// Everything the node wrote: its standard error and its log files.
fn logs_of(dir: &std::path::Path) -> String {
    let mut out = std::fs::read_to_string(dir.join("run.log")).unwrap_or_default();
    out += &std::fs::read_to_string(dir.join("run.out")).unwrap_or_default();
    for entry in std::fs::read_dir(dir.join("node").join("logs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        out += &std::fs::read_to_string(entry.path()).unwrap_or_default();
    }
    out
}

/// Signs up and returns an access token.
async fn user(base: &str, email: &str) -> String {
    let reply: Value = reqwest::Client::new()
        .post(format!("{base}/api/auth/signup"))
        .json(&json!({"email": email, "password": "device-login-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    reply["token"].as_str().unwrap().to_owned()
}

/// Starts `desktop-node login --relay BASE --name NAME` and reads its output until the
/// code; returns the process, the code, and a channel with the rest of its output.
fn start_login(
    home: &std::path::Path,
    base: &str,
    name: &str,
) -> (Killed, String, String, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(NODE)
        .arg("--home")
        .arg(home)
        .args(["login", "--relay", base, "--name", name])
        .env("AISA_SECRETS_BACKEND", "file")
        .env("AISA_PASSPHRASE", "test-passphrase")
        .env_remove("AISA_PASSWORD")
        .env_remove("AISA_NODE_HOME")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut link, mut code) = (String::new(), String::new());
    while link.is_empty() || code.is_empty() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the login prints a link and a code");
        let t = line.trim();
        if t.contains("/activate?code=") {
            link = t.to_owned();
        } else if t.len() == 9 && t.as_bytes()[4] == b'-' {
            code = t.to_owned();
        }
    }
    (Killed(child), link, code, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_logs_in_with_a_code_approved_in_the_browser_and_connects() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(&dir.path().join("relay")).await;
    let base = format!("http://{}", relay.http_addr);
    let token = user(&base, "device-login@example.com").await;
    let home = dir.path().join("node");

    let (mut login, link, code, _rest) = start_login(&home, &base, "test desk");
    assert_eq!(link, format!("{base}/activate?code={code}"));
    let http = reqwest::Client::new();
    let pending: Value = http
        .get(format!("{base}/api/device/code/{code}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pending["name"], "test desk");
    let approved = http
        .post(format!("{base}/api/device/approve"))
        .bearer_auth(&token)
        .json(&json!({"user_code": code, "approve": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 204);

    // The node polls every 5 s: it finishes within a poll or two.
    let status = tokio::task::spawn_blocking(move || login.0.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "login exited with {status}");
    let config = std::fs::read_to_string(home.join("node.toml")).unwrap();
    assert!(config.contains(&base), "{config}");

    let devices: Value = http
        .get(format!("{base}/api/devices"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(devices[0]["name"], "test desk", "{devices}");

    // The registered node connects with what the login stored.
    let mut run = Killed(
        Command::new(NODE)
            .arg("--home")
            .arg(&home)
            .arg("run")
            .env("AISA_SECRETS_BACKEND", "file")
            .env("AISA_PASSPHRASE", "test-passphrase")
            .env("OPENAI_API_KEY", "sk-unused")
            .env_remove("AISA_NODE_HOME")
            .stdout(std::fs::File::create(dir.path().join("run.out")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("run.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let devices: Value = http
            .get(format!("{base}/api/devices"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if devices[0]["online"] == true {
            break;
        }
        if let Some(status) = run.0.try_wait().unwrap() {
            panic!(
                "desktop-node run exited ({status}):\n{}",
                logs_of(dir.path())
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node did not come online: {devices}\n{}",
            logs_of(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_login_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(&dir.path().join("relay")).await;
    let base = format!("http://{}", relay.http_addr);
    let token = user(&base, "denier@example.com").await;
    let home = dir.path().join("node");
    let (mut login, _link, code, _rest) = start_login(&home, &base, "not mine");
    let denied = reqwest::Client::new()
        .post(format!("{base}/api/device/approve"))
        .bearer_auth(&token)
        .json(&json!({"user_code": code, "approve": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 204);
    let mut stderr = login.0.stderr.take().unwrap();
    let (status, err) = tokio::task::spawn_blocking(move || {
        let status = login.0.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
        (status, err)
    })
    .await
    .unwrap();
    assert!(!status.success());
    assert!(err.contains("denied in the browser"), "{err}");
    assert!(!home.join("node.toml").exists());
}

/// `desktop-node login --email EMAIL` (password in AISA_PASSWORD) with the encrypted-file
/// secret store and, unless `passphrase` is given, no passphrase and no terminal: the
/// store then refuses to open. Returns whether it succeeded, and its output.
fn password_login(
    home: &std::path::Path,
    base: &str,
    email: &str,
    passphrase: Option<&str>,
) -> (bool, String) {
    let mut cmd = Command::new(NODE);
    cmd.arg("--home")
        .arg(home)
        .args([
            "login",
            "--relay",
            base,
            "--email",
            email,
            "--name",
            "scripted desk",
        ])
        .env("AISA_SECRETS_BACKEND", "file")
        .env("AISA_PASSWORD", "device-login-password")
        .env_remove("AISA_PASSPHRASE")
        .env_remove("AISA_PASSPHRASE_FILE")
        .env_remove("AISA_NODE_HOME")
        .stdin(Stdio::null());
    if let Some(passphrase) = passphrase {
        cmd.env("AISA_PASSPHRASE", passphrase);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The account's devices and the plan usage's device count.
async fn devices_of(base: &str, token: &str) -> (Value, Value) {
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).bearer_auth(token).send();
    let devices: Value = get("/api/devices").await.unwrap().json().await.unwrap();
    let account: Value = get("/api/account").await.unwrap().json().await.unwrap();
    (devices, account["usage"]["devices"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_cannot_store_its_token_leaves_no_device_in_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(&dir.path().join("relay")).await;
    let base = format!("http://{}", relay.http_addr);
    let token = user(&base, "orphans@example.com").await;

    // The relay registers the device, then the node cannot keep its token.
    let home = dir.path().join("no-store");
    let (ok, out) = password_login(&home, &base, "orphans@example.com", None);
    assert!(
        !ok,
        "the login cannot succeed without its secret store:\n{out}"
    );
    // No orphan: not listed, and not holding a place of the plan.
    let (devices, used) = devices_of(&base, &token).await;
    assert_eq!(devices, json!([]), "a failed login left a device behind");
    assert_eq!(
        used, 0,
        "the failed login's device still counts against the plan"
    );
    assert!(out.contains("secret store"), "{out}");
    assert!(out.contains("this computer was not added"), "{out}");
    assert!(!home.join("node.toml").exists());

    // A login that finishes is listed at once, before the node ever connects.
    let home = dir.path().join("with-store");
    let (ok, out) = password_login(&home, &base, "orphans@example.com", Some("test-passphrase"));
    assert!(ok, "{out}");
    let (devices, used) = devices_of(&base, &token).await;
    assert_eq!(devices.as_array().unwrap().len(), 1, "{devices}");
    assert_eq!(devices[0]["name"], "scripted desk");
    assert_eq!(devices[0]["online"], false);
    assert_eq!(used, 1);
}
