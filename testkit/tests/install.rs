//! Installing from the marketplace, end to end: an author publishes to the relay's portal,
//! the browser asks the desktop for the app over the tunnel, the person approves (or
//! denies) on the desktop, the desktop verifies and installs it, and the browser runs it.

#![allow(clippy::unwrap_used)] // test helpers: a failure is reported by its panic

use std::collections::BTreeMap;

use aisa_node::installer::approvals::Decision;
use aisa_testkit::guest::hello_ai_wasm;
use aisa_testkit::system::{System, WAIT, chunks_text, error_of, execute, open, run_action};
use aisa_tunnel::MAX_FRAME_LEN;
use aisa_tunnel::{Body, Envelope, ErrorCode};

/// A bundle of the hello-ai module under another id and version.
fn bundle(id: &str, version: &str, permissions: serde_json::Value) -> Vec<u8> {
    let json = |v: serde_json::Value| serde_json::to_vec_pretty(&v).unwrap();
    let mut files = BTreeMap::new();
    files.insert(
        "manifest.json".to_owned(),
        json(serde_json::json!({
            "id": id, "name": "Market Echo", "version": version,
            "description": "Echoes text, installed from the marketplace.",
            "category": "writing", "author": {"name": "Test Author"},
            "entry": "wasm", "runtime": ">=0.1.0, <0.2.0"
        })),
    );
    files.insert(
        "action-schema.json".to_owned(),
        json(serde_json::json!({
            "echo": {"type": "object", "required": ["text"],
                     "properties": {"text": {"type": "string", "maxLength": 100}}},
            "write": {"type": "object", "required": ["topic"],
                      "properties": {"topic": {"type": "string"}}}
        })),
    );
    files.insert("ui-schema.json".to_owned(), json(serde_json::json!({})));
    files.insert("permissions.json".to_owned(), json(permissions));
    files.insert(
        "logic.wasm".to_owned(),
        std::fs::read(hello_ai_wasm()).unwrap(),
    );
    aisa_miniapp::Bundle::from_files(files)
        .unwrap()
        .to_zip_bytes()
}

/// The states the desktop streams for an INSTALL_APP, and how the stream ended.
struct InstallStream {
    /// The browser's session; the stream lives as long as it does.
    _session: wtransport::Connection,
    send: wtransport::SendStream,
    recv: wtransport::RecvStream,
}

impl InstallStream {
    async fn request(system: &System, app_id: &str, version: Option<&str>) -> InstallStream {
        let session = system.browser().await;
        let request = Envelope::new(
            1,
            Body::InstallApp {
                app_id: app_id.into(),
                version: version.map(str::to_owned),
            },
        );
        let mut header = system.header(&system.device_id);
        header.kind = aisa_tunnel::StreamKind::Control;
        let (send, recv) = open(&session, &[header.encode(), request.encode()]).await;
        InstallStream {
            _session: session,
            send,
            recv,
        }
    }

    /// The next envelope.
    async fn next(&mut self) -> Envelope {
        let body = tokio::time::timeout(
            WAIT,
            aisa_tunnel::io::read_frame(&mut self.recv, MAX_FRAME_LEN),
        )
        .await
        .expect("an answer in time")
        .expect("readable")
        .expect("not ended");
        Envelope::decode(&body).expect("an envelope")
    }

    /// Reads progress states until one has `state == want`; returns it.
    async fn until_state(&mut self, want: &str) -> serde_json::Value {
        loop {
            match self.next().await.body {
                Body::StreamChunk { data, .. } => {
                    let state: serde_json::Value = serde_json::from_str(&data).unwrap();
                    if state["state"] == want {
                        return state;
                    }
                }
                other => panic!("expected state {want}, got {other:?}"),
            }
        }
    }

    /// Reads to the end: the last state and the final envelope.
    async fn finish(mut self) -> (Option<serde_json::Value>, Envelope) {
        let mut last = None;
        loop {
            let envelope = self.next().await;
            match &envelope.body {
                Body::StreamChunk { data, .. } => last = serde_json::from_str(data).ok(),
                _ => {
                    let _ = self.send.finish().await;
                    return (last, envelope);
                }
            }
        }
    }
}

/// Decides the waiting request for `id` (at `version`), as the person at the desktop
/// does with `desktop-node apps approve|deny`.
fn decide(system: &System, id: &str, version: Option<&str>, decision: Decision) {
    let approvals = system.approvals();
    let request = approvals.find(id, version).unwrap();
    approvals.decide(&request, decision).unwrap();
}

async fn echo(system: &System, app_id: &str, text: &str) -> Vec<Envelope> {
    run_action(
        system,
        &system.device_id,
        execute(app_id, "echo", serde_json::json!({ "text": text })),
    )
    .await
}

#[tokio::test]
async fn an_app_published_to_the_portal_installs_on_approval_and_runs() {
    let system = System::start().await;
    let (status, published) = system
        .publish(bundle(
            "market-echo",
            "0.1.0",
            serde_json::json!({"ai": true}),
        ))
        .await;
    assert_eq!(status, 201, "{published}");

    // Not installed yet.
    let (code, _) = error_of(&echo(&system, "market-echo", "hi").await);
    assert_eq!(code, ErrorCode::UnknownApp);

    let mut install = InstallStream::request(&system, "market-echo", None).await;
    let pending = install.until_state("pending_approval").await;
    assert_eq!(pending["version"], "0.1.0");
    assert_eq!(
        pending["permissions"][0],
        "use your AI provider (with your key, on this machine)"
    );
    // Nothing is installed before the person decides.
    assert!(!system.node_home().join("miniapps/market-echo").exists());
    decide(&system, "market-echo", None, Decision::Approve);
    let (last, end) = install.finish().await;
    assert!(matches!(end.body, Body::StreamEnd { .. }), "{end:?}");
    assert_eq!(last.unwrap()["state"], "installed");
    assert!(
        system.approvals().list().is_empty(),
        "the request is cleared"
    );

    // It runs, with its payload checked against its action schema.
    let reply = echo(&system, "market-echo", "from the market").await;
    assert_eq!(chunks_text(&reply), "from the market");
    let bad = run_action(
        &system,
        &system.device_id,
        execute("market-echo", "echo", serde_json::json!({ "text": 42 })),
    )
    .await;
    let (code, message) = error_of(&bad);
    assert_eq!(code, ErrorCode::InvalidPayload);
    assert!(message.contains("text"), "{message}");

    // The marketplace counted the install.
    let metrics = aisa_relay::metrics::render(&system.relay().state);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("aisa_installs_total") && l.contains("market-echo")),
        "{metrics}"
    );

    // A newer version installs beside it; an older one is refused as a downgrade.
    let (status, _) = system
        .publish(bundle(
            "market-echo",
            "0.2.0",
            serde_json::json!({"ai": true}),
        ))
        .await;
    assert_eq!(status, 201);
    let mut update = InstallStream::request(&system, "market-echo", Some("0.2.0")).await;
    update.until_state("pending_approval").await;
    decide(&system, "market-echo", Some("0.2.0"), Decision::Approve);
    let (_, end) = update.finish().await;
    assert!(matches!(end.body, Body::StreamEnd { .. }), "{end:?}");
    let versions: Vec<String> = std::fs::read_dir(system.node_home().join("miniapps/market-echo"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(versions.len(), 2, "{versions:?}");

    let downgrade = InstallStream::request(&system, "market-echo", Some("0.1.0")).await;
    let (_, end) = downgrade.finish().await;
    let (code, message) = error_of(&[end]);
    assert_eq!(code, ErrorCode::InstallFailed);
    assert!(message.contains("downgrade"), "{message}");

    // UNINSTALL_APP answers with the new status, and the app no longer runs.
    let reply = run_action(
        &system,
        &system.device_id,
        Envelope::new(
            9,
            Body::UninstallApp {
                app_id: "market-echo".into(),
            },
        ),
    )
    .await;
    let Body::DeviceStatus { apps, .. } = &reply[0].body else {
        panic!("{reply:?}")
    };
    assert!(apps.iter().all(|a| a.id != "market-echo"), "{apps:?}");
    let (code, _) = error_of(&echo(&system, "market-echo", "hi").await);
    assert_eq!(code, ErrorCode::UnknownApp);
}

#[tokio::test]
async fn a_denied_request_installs_nothing_and_says_so() {
    let system = System::start().await;
    let (status, _) = system
        .publish(bundle(
            "nosy",
            "1.0.0",
            serde_json::json!({"ai": true, "network": ["example.com"], "filesystem": {"read": ["$DOCUMENTS"]}}),
        ))
        .await;
    assert_eq!(status, 201);
    let mut install = InstallStream::request(&system, "nosy", None).await;
    let pending = install.until_state("pending_approval").await;
    let asks = pending["permissions"].to_string();
    assert!(
        asks.contains("connect to example.com") && asks.contains("read files in $DOCUMENTS"),
        "{asks}"
    );
    decide(&system, "nosy", None, Decision::Deny);
    let (_, end) = install.finish().await;
    let (code, message) = error_of(&[end]);
    assert_eq!(code, ErrorCode::Denied);
    assert!(message.contains("denied"), "{message}");
    assert!(!system.node_home().join("miniapps/nosy").exists());
    assert!(system.approvals().list().is_empty());
}

#[tokio::test]
async fn a_bundle_changed_while_waiting_for_approval_is_refused() {
    let system = System::start().await;
    let (status, _) = system
        .publish(bundle("swapped", "1.0.0", serde_json::json!({"ai": true})))
        .await;
    assert_eq!(status, 201);
    let mut install = InstallStream::request(&system, "swapped", None).await;
    install.until_state("pending_approval").await;
    let approvals = system.approvals();
    let request = approvals.find("swapped", None).unwrap();

    // Someone with access to the cache swaps the module inside the verified bundle.
    let cached = std::fs::read(&request.bundle_path).unwrap();
    let mut tampered = aisa_miniapp::Bundle::from_zip_bytes(&cached).unwrap();
    tampered.remove("logic.wasm");
    tampered
        .insert(
            "logic.wasm",
            aisa_testkit::system::TRAP_WAT.as_bytes().to_vec(),
        )
        .unwrap();
    std::fs::write(&request.bundle_path, tampered.to_zip_bytes()).unwrap();

    approvals.decide(&request, Decision::Approve).unwrap();
    let (_, end) = install.finish().await;
    let (code, message) = error_of(&[end]);
    assert_eq!(code, ErrorCode::InstallFailed);
    assert!(
        message.contains("logic.wasm was changed after the bundle was signed"),
        "{message}"
    );
    assert!(!system.node_home().join("miniapps/swapped").exists());
}

#[tokio::test]
async fn an_unknown_app_or_version_fails_clearly() {
    let system = System::start().await;
    let (_, end) = InstallStream::request(&system, "no-such-app", None)
        .await
        .finish()
        .await;
    let (code, message) = error_of(&[end]);
    assert_eq!(code, ErrorCode::UnknownApp);
    assert!(message.contains("not found"), "{message}");
    let (status, _) = system
        .publish(bundle(
            "versioned",
            "1.0.0",
            serde_json::json!({"ai": true}),
        ))
        .await;
    assert_eq!(status, 201);
    let (_, end) = InstallStream::request(&system, "versioned", Some("9.9.9"))
        .await
        .finish()
        .await;
    let (code, message) = error_of(&[end]);
    assert_eq!(code, ErrorCode::UnknownApp);
    assert!(message.contains("no version 9.9.9"), "{message}");
}

#[tokio::test]
async fn a_javascript_example_app_installs_from_the_marketplace_and_streams() {
    let system = System::start_with_js().await;
    let source = aisa_testkit::guest::workspace_root().join("examples/seo-writer");
    let zip = aisa_miniapp::Bundle::from_dir(&source)
        .unwrap()
        .to_zip_bytes();
    let (status, published) = system.publish(zip).await;
    assert_eq!(status, 201, "{published}");

    let mut install = InstallStream::request(&system, "seo-writer", None).await;
    install.until_state("pending_approval").await;
    decide(&system, "seo-writer", None, Decision::Approve);
    let (_, end) = install.finish().await;
    assert!(matches!(end.body, Body::StreamEnd { .. }), "{end:?}");

    let reply = run_action(
        &system,
        &system.device_id,
        execute(
            "seo-writer",
            "write",
            serde_json::json!({ "topic": "QUIC streams", "keywords": ["latency"], "words": 300 }),
        ),
    )
    .await;
    assert!(
        matches!(reply.last().map(|e| &e.body), Some(Body::StreamEnd { .. })),
        "{reply:?}"
    );
    // The local provider echoes the prompt back: the JS app's prompt carried the topic.
    let text = chunks_text(&reply);
    assert!(text.contains("QUIC streams"), "{text}");

    // The schema refuses what the app's form would refuse.
    let bad = run_action(
        &system,
        &system.device_id,
        execute("seo-writer", "write", serde_json::json!({ "topic": "" })),
    )
    .await;
    assert_eq!(error_of(&bad).0, ErrorCode::InvalidPayload);
}

/// A second INSTALL_APP for a request that is waiting does not
/// replace it; the person approves exactly the bundle (hash) and permissions shown.
#[tokio::test]
async fn a_second_request_for_a_waiting_install_is_refused_and_the_first_stays_as_shown() {
    let system = System::start().await;
    let (status, _) = system
        .publish(bundle("twice", "1.0.0", serde_json::json!({"ai": true})))
        .await;
    assert_eq!(status, 201);
    let mut first = InstallStream::request(&system, "twice", None).await;
    let shown = first.until_state("pending_approval").await;
    let sha256 = shown["sha256"].as_str().unwrap().to_owned();
    assert_eq!(sha256.len(), 64, "{shown}");

    let (_, end) = InstallStream::request(&system, "twice", Some("1.0.0"))
        .await
        .finish()
        .await;
    let (code, message) = error_of(&[end]);
    assert_eq!(code, ErrorCode::InstallFailed);
    assert!(message.contains("already waiting"), "{message}");

    // The first request is listed, unchanged, and approving it (by its hash) installs
    // exactly that bundle.
    let approvals = system.approvals();
    let listed = approvals.list();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].sha256, sha256);
    let request = approvals
        .select("twice", Some("1.0.0"), Some(&sha256[..12]))
        .unwrap();
    approvals.decide(&request, Decision::Approve).unwrap();
    let (last, end) = first.finish().await;
    assert!(matches!(end.body, Body::StreamEnd { .. }), "{end:?}");
    assert_eq!(last.unwrap()["state"], "installed");
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(system.node_home().join("miniapps/twice/1.0.0/install.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["sha256"], sha256.as_str());
}
