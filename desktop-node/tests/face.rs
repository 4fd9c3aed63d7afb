//! The desktop face, through the real `desktop-node` binary on a real relay on loopback:
//! a browser-role client asks the node to install an app, and the person approves it
//! in the face (its HTTP API with the per-launch token's cookie, or Chromium clicking
//! Approve). Requests without the cookie, with a wrong token, another Host (DNS
//! rebinding) or another Origin are refused and change nothing.
//!
//! `chromium_clicks_approve_and_keeps_screenshots` needs Chromium and playwright-core
//! (`browser-client/node_modules`): `scripts/face-screenshots.sh` runs it (under Xvfb
//! when there is no display) and keeps the screenshots.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aisa_testkit::system::{self, System, WAIT};
use aisa_tunnel::{Body, Envelope, MAX_FRAME_LEN, StreamKind};
use common::{Killed, node_cmd, run_to_end};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, HOST, ORIGIN};

const PASSPHRASE: &str = "face test passphrase";
const APP: &str = "face-echo";

/// A bundle of the hello-ai module as `APP` 0.1.0 asking for the model and one host.
fn bundle() -> Vec<u8> {
    aisa_testkit::guest::echo_bundle(
        APP,
        "Face Echo",
        "Echoes text; approved in the desktop face.",
    )
}

/// A relay with the app published, and a real node logged in as a device of the test
/// user, running with `--face`.
struct Setup {
    system: System,
    home: tempfile::TempDir,
    console: tempfile::TempDir,
    device_id: String,
    _node: Killed,
    /// The login URL `desktop-node face --print` gave.
    login_url: String,
    /// `127.0.0.1:PORT`.
    host: String,
    /// Where the opener the node was given writes what it was asked to open.
    opened: PathBuf,
}

fn node(home: &Path) -> Command {
    node_cmd(home, "file", PASSPHRASE)
}

impl Setup {
    async fn start() -> Setup {
        let system = System::start().await;
        let (status, published) = system.publish(bundle()).await;
        assert_eq!(status, 201, "{published}");
        let home = tempfile::tempdir().unwrap();
        let console = tempfile::tempdir().unwrap();
        let mut login = node(home.path());
        login.args([
            "login",
            "--relay",
            &system.http_base(),
            "--email",
            "alice@example.com",
            "--password-stdin",
            "--name",
            "face-test",
        ]);
        run_to_end(login, system::PASSWORD);
        let config = std::fs::read_to_string(home.path().join("node.toml")).unwrap();
        let device_id = config
            .lines()
            .find_map(|l| l.strip_prefix("device_id = "))
            .unwrap()
            .trim_matches('"')
            .to_owned();

        // The program the node opens folders and URLs with: records its argument.
        let opened = console.path().join("opened.txt");
        let opener = console.path().join("opener.sh");
        std::fs::write(
            &opener,
            format!("#!/bin/sh\necho \"$1\" >> '{}'\n", opened.display()),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        let mut run = node(home.path());
        run.env("RUST_LOG", "info")
            .env("AISA_NODE_OPENER", &opener)
            .env("AISA_JS_RUNTIME", "/nonexistent-probe")
            .args([
                "run",
                "--face",
                "--ai-provider",
                "openai",
                "--ai-base-url",
                &system.fake.base_url(),
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(console.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(console.path().join("stderr")).unwrap());
        let node_process = Killed(run.spawn().unwrap());

        // `desktop-node face --print` answers once the face is served.
        let deadline = Instant::now() + Duration::from_secs(60);
        let login_url = loop {
            let out = node(home.path())
                .args(["face", "--print"])
                .output()
                .unwrap();
            if out.status.success() {
                break String::from_utf8(out.stdout).unwrap().trim().to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no face: {} / node stderr: {:?}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(console.path().join("stderr"))
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let host = login_url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .unwrap()
            .to_owned();
        Setup {
            system,
            home,
            console,
            device_id,
            _node: node_process,
            login_url,
            host,
            opened,
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.host)
    }

    fn origin(&self) -> String {
        self.base()
    }

    fn node_log(&self) -> String {
        format!(
            "stdout: {:?}\nstderr: {:?}",
            std::fs::read_to_string(self.console.path().join("stdout")),
            std::fs::read_to_string(self.console.path().join("stderr"))
        )
    }

    /// The permission lines `desktop-node apps pending` prints for the request.
    fn cli_permission_lines(&self) -> Vec<String> {
        let mut pending = node(self.home.path());
        pending.args(["apps", "pending"]);
        let out = run_to_end(pending, "");
        out.lines()
            .filter_map(|l| l.strip_prefix("  - "))
            .map(str::to_owned)
            .collect()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Trades the login URL's token for the session cookie; returns `name=value`.
async fn sign_in(setup: &Setup) -> String {
    let response = client().get(&setup.login_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap().to_owned()
}

/// GET `path` with the session cookie; the JSON answer.
async fn get_json(setup: &Setup, cookie: &str, path: &str) -> serde_json::Value {
    let response = client()
        .get(format!("{}{path}", setup.base()))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    response.json().await.unwrap()
}

/// POST `body` to `path` as the page does (cookie and the face's own Origin).
async fn post_json(
    setup: &Setup,
    cookie: &str,
    path: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let response = client()
        .post(format!("{}{path}", setup.base()))
        .header(COOKIE, cookie)
        .header(ORIGIN, setup.origin())
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

/// An INSTALL_APP stream from a browser of the test user to the face-test device.
macro_rules! request_install {
    ($setup:expr) => {{
        let session = $setup.system.browser().await;
        let request = Envelope::new(
            1,
            Body::InstallApp {
                app_id: APP.into(),
                version: None,
            },
        );
        let mut header = $setup.system.header(&$setup.device_id);
        header.kind = StreamKind::Control;
        let (send, recv) = system::open(&session, &[header.encode(), request.encode()]).await;
        (session, send, recv)
    }};
}

/// Reads install progress states until `want` (or the stream's end); returns the last
/// state and the envelope that ended the stream, if it ended.
macro_rules! read_states {
    ($recv:expr, $want:expr) => {{
        let mut last: Option<serde_json::Value> = None;
        let mut end: Option<Envelope> = None;
        loop {
            let frame =
                tokio::time::timeout(WAIT, aisa_tunnel::io::read_frame(&mut $recv, MAX_FRAME_LEN))
                    .await
                    .expect("an install state in time")
                    .expect("readable");
            let Some(frame) = frame else { break };
            let envelope = Envelope::decode(&frame).unwrap();
            match &envelope.body {
                Body::StreamChunk { data, .. } => {
                    let state: serde_json::Value = serde_json::from_str(data).unwrap();
                    let done = state["state"] == $want;
                    last = Some(state);
                    if done {
                        break;
                    }
                }
                _ => {
                    end = Some(envelope);
                    break;
                }
            }
        }
        (last, end)
    }};
}

/// Waits until the face says the node is connected.
async fn wait_connected(setup: &Setup, cookie: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = get_json(setup, cookie, "/api/status").await;
        if status["connected"] == true {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "never connected: {status}\n{}",
            setup.node_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The echo action on the face-test device.
async fn echo(setup: &Setup, text: &str) -> Vec<Envelope> {
    system::run_action(
        &setup.system,
        &setup.device_id,
        system::execute(APP, "echo", serde_json::json!({ "text": text })),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_is_approved_through_the_face_and_strangers_are_refused() {
    let setup = Setup::start().await;
    let base = setup.base();
    let http = client();

    // Without the cookie: nothing, not even the page.
    for path in ["/", "/api/status", "/api/pending", "/api/keys"] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // A wrong token gets no cookie.
    let response = http
        .get(format!("{base}/login?token={}", "0".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get("set-cookie").is_none());
    // The right token under another name (a DNS-rebinding page): refused.
    let port = setup.host.rsplit(':').next().unwrap();
    let response = http
        .get(&setup.login_url)
        .header(HOST, format!("rebound.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
    assert!(response.headers().get("set-cookie").is_none());

    let cookie = sign_in(&setup).await;
    let page = http
        .get(format!("{base}/"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(page.text().await.unwrap().contains("Install requests"));

    let status = wait_connected(&setup, &cookie).await;
    assert_eq!(status["device_id"], setup.device_id.as_str());
    assert_eq!(status["relay"], setup.system.http_base().as_str());
    assert!(
        status["transport"] == "quic" || status["transport"] == "tcp",
        "{status}"
    );
    assert_eq!(status["running"], 0);

    // A browser asks the desktop to install the app.
    let (_session, mut send, mut recv) = request_install!(setup);
    let (state, end) = read_states!(recv, "pending_approval");
    assert!(end.is_none(), "{end:?}");
    let state = state.unwrap();

    // The face lists it, with the permission lines the CLI prints.
    let pending = get_json(&setup, &cookie, "/api/pending").await;
    let list = pending["pending"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{pending}");
    let request = &list[0];
    assert_eq!(request["id"], APP);
    assert_eq!(request["name"], "Face Echo");
    assert_eq!(request["sha256"], state["sha256"]);
    let shown: Vec<String> = serde_json::from_value(request["permissions"].clone()).unwrap();
    assert_eq!(
        shown,
        [
            "use your AI provider (with your key, on this machine)",
            "connect to api.example.com"
        ]
    );
    assert_eq!(shown, setup.cli_permission_lines());
    let decide = serde_json::json!({
        "id": APP, "version": "0.1.0", "sha256": request["sha256"], "decision": "approve"
    });

    // Decisions from anywhere but the face's own page change nothing.
    let stranger = http
        .post(format!("{base}/api/pending/decide"))
        .header(COOKIE, &cookie)
        .header(ORIGIN, "http://evil.example")
        .json(&decide)
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), StatusCode::FORBIDDEN);
    assert!(
        stranger
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let no_origin = http
        .post(format!("{base}/api/pending/decide"))
        .header(COOKIE, &cookie)
        .json(&decide)
        .send()
        .await
        .unwrap();
    assert_eq!(no_origin.status(), StatusCode::FORBIDDEN);
    let rebound = http
        .post(format!("{base}/api/pending/decide"))
        .header(COOKIE, &cookie)
        .header(HOST, format!("rebound.example:{port}"))
        .header(ORIGIN, format!("http://rebound.example:{port}"))
        .json(&decide)
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::MISDIRECTED_REQUEST);
    let no_cookie = http
        .post(format!("{base}/api/pending/decide"))
        .header(ORIGIN, setup.origin())
        .json(&decide)
        .send()
        .await
        .unwrap();
    assert_eq!(no_cookie.status(), StatusCode::UNAUTHORIZED);
    // A decision about another bundle (a hash the page never showed) is not taken.
    let mut other = decide.clone();
    other["sha256"] = serde_json::Value::String("0".repeat(64));
    let (code, answer) = post_json(&setup, &cookie, "/api/pending/decide", other).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{answer}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get_json(&setup, &cookie, "/api/pending").await["pending"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "still waiting after the refused decisions"
    );
    assert!(!setup.home.path().join("miniapps").join(APP).exists());

    // The person approves in the face.
    let (code, answer) = post_json(&setup, &cookie, "/api/pending/decide", decide).await;
    assert_eq!(code, StatusCode::OK, "{answer}\n{}", setup.node_log());
    assert_eq!(answer["message"], format!("installed {APP}@0.1.0"));
    let (last, end) = read_states!(recv, "never");
    assert_eq!(last.unwrap()["state"], "installed");
    assert!(
        matches!(end.map(|e| e.body), Some(Body::StreamEnd { .. })),
        "the browser's install stream ended well"
    );
    let _ = send.finish().await;
    assert!(
        get_json(&setup, &cookie, "/api/pending").await["pending"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let reply = echo(&setup, "approved in the face").await;
    assert_eq!(system::chunks_text(&reply), "approved in the face");
    let status = get_json(&setup, &cookie, "/api/status").await;
    assert!(
        status["apps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == APP),
        "{status}"
    );

    // Keys: stored in the node's store (the CLI lists it), never sent back.
    let key = "sk-ant-face-test-0123456789abcdef";
    let (code, answer) = post_json(
        &setup,
        &cookie,
        "/api/keys/set",
        serde_json::json!({"provider": "anthropic", "key": key}),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    assert!(!answer.to_string().contains("0123456789abcdef"), "{answer}");
    let keys = get_json(&setup, &cookie, "/api/keys").await;
    assert_eq!(keys["store"], "file");
    assert!(
        keys["providers"]
            .as_array()
            .unwrap()
            .contains(&"anthropic".into()),
        "{keys}"
    );
    assert!(!keys.to_string().contains("abcdef"), "{keys}");
    let mut list = node(setup.home.path());
    list.args(["keys", "list"]);
    assert!(run_to_end(list, "").contains("anthropic\tsk-…cdef"));
    let (code, _) = post_json(
        &setup,
        &cookie,
        "/api/keys/set",
        serde_json::json!({"provider": "../escape", "key": key}),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, answer) = post_json(
        &setup,
        &cookie,
        "/api/keys/remove",
        serde_json::json!({"provider": "anthropic"}),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    let keys = get_json(&setup, &cookie, "/api/keys").await;
    assert!(
        !keys["providers"]
            .as_array()
            .unwrap()
            .contains(&"anthropic".into())
    );

    // Pairing: a one-time link with its QR code, as `desktop-node pair` makes.
    let (code, pairing) = post_json(&setup, &cookie, "/api/pair", serde_json::json!({})).await;
    assert_eq!(code, StatusCode::OK, "{pairing}");
    let link = pairing["link"].as_str().unwrap();
    assert!(
        link.starts_with(&format!(
            "{}/#pair={}.",
            setup.system.http_base(),
            setup.device_id
        )),
        "{link}"
    );
    assert!(pairing["svg"].as_str().unwrap().contains("<svg"));
    assert!(setup.home.path().join("pairing.json").exists());

    // The log folder: shown, and opened with the desktop's opener.
    let log_dir = status["log_dir"].as_str().unwrap().to_owned();
    assert_eq!(
        PathBuf::from(&log_dir),
        setup.home.path().join("logs"),
        "{status}"
    );
    let (code, answer) = post_json(&setup, &cookie, "/api/logs/open", serde_json::json!({})).await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    // The opener's `>>` creates the file before it writes the line: wait for the line.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let opened = std::fs::read_to_string(&setup.opened).unwrap_or_default();
        if opened.lines().any(|line| line == log_dir) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the opener was not asked to open {log_dir}: {opened:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What the node did: the last lines of its log, the install among them.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = get_json(&setup, &cookie, "/api/log").await;
        let lines = log["lines"].as_array().unwrap();
        if lines
            .iter()
            .any(|l| l.as_str().unwrap().contains("installed") && l.as_str().unwrap().contains(APP))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Where the Chromium test keeps its screenshots.
fn artifacts() -> PathBuf {
    std::env::var_os("AISA_FACE_ARTIFACTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/face-artifacts"),
        PathBuf::from,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and playwright-core: scripts/face-screenshots.sh"]
async fn chromium_clicks_approve_and_keeps_screenshots() {
    let setup = Setup::start().await;
    let (_session, mut send, mut recv) = request_install!(setup);
    let (state, end) = read_states!(recv, "pending_approval");
    assert!(end.is_none() && state.is_some(), "{end:?}");
    let cli_lines = setup.cli_permission_lines();
    assert_eq!(cli_lines.len(), 2, "{cli_lines:?}");

    let out_dir = artifacts();
    std::fs::create_dir_all(&out_dir).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/face-chromium.cjs");
    // Chromium opens the URL `desktop-node face` printed, sees the request, clicks Approve.
    let browser = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&setup.login_url)
        .arg(&out_dir)
        .arg(APP)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), browser)
        .await
        .expect("Chromium finished in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "face-chromium.cjs failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        setup.node_log()
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // The page showed the permission lines the CLI prints, and said it installed.
    let shown: Vec<String> = serde_json::from_value(report["permissions"].clone()).unwrap();
    assert_eq!(shown, cli_lines);
    assert_eq!(report["result"], format!("installed {APP}@0.1.0"));
    assert_eq!(report["url_has_token"], false, "{report}");

    let (last, end) = read_states!(recv, "never");
    assert_eq!(last.unwrap()["state"], "installed");
    assert!(matches!(end.map(|e| e.body), Some(Body::StreamEnd { .. })));
    let _ = send.finish().await;
    let reply = echo(&setup, "clicked in Chromium").await;
    assert_eq!(system::chunks_text(&reply), "clicked in Chromium");
    for shot in [
        "face-1-request.png",
        "face-2-approved.png",
        "face-3-pairing.png",
    ] {
        let size = std::fs::metadata(out_dir.join(shot)).map_or(0, |m| m.len());
        assert!(size > 1000, "{shot} is missing or empty ({size} bytes)");
    }
}
