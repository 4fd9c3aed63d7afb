//! Requests a hostile browser (or relay) can send, through a real relay to a real node:
//! app ids that try to name other folders, requests on the wrong stream kind, and output
//! larger than a frame, and odd ids.

use std::time::Duration;

use aisa_node::sandbox::Limits;
use aisa_testkit::system::{self, System, chunks_text, error_of, execute, open, read_reply};
use aisa_tunnel::{Body, Envelope, ErrorCode, StreamKind};

/// A request on a stream of the given kind, and its whole reply.
async fn on_kind(system: &System, kind: StreamKind, request: Envelope) -> Vec<Envelope> {
    let session = system.browser().await;
    let mut header = system.header(&system.device_id);
    header.kind = kind;
    let (_send, mut recv) = open(&session, &[header.encode(), request.encode()]).await;
    read_reply(&mut recv).await
}

/// A folder that looks like an installed app (a `state.json` and a version folder), the
/// kind the old uninstall removed wherever it was.
fn plant_victim(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("1.0.0")).expect("victim");
    std::fs::write(
        dir.join("state.json"),
        r#"{"active":"1.0.0","enabled":true}"#,
    )
    .expect("victim state");
    std::fs::write(dir.join("1.0.0/precious.txt"), "keep me").expect("victim file");
}

#[tokio::test]
async fn app_ids_from_the_wire_never_name_a_folder_outside_the_apps_folder() {
    let system = System::start().await;
    let home = system.node_home();
    // Beside the apps folder (`<home>/miniapps`), and somewhere absolute.
    let beside = home.join("victim");
    let absolute = system.data_dir.path().join("elsewhere");
    plant_victim(&beside);
    plant_victim(&absolute);
    std::fs::create_dir_all(home.join("data/hello-ai")).expect("other app data");
    std::fs::write(home.join("data/hello-ai/storage.json"), "{}").expect("data");

    let long = "x".repeat(100_000);
    let hostile_ids = [
        "../victim".to_owned(),
        absolute.display().to_string(),
        "..".to_owned(),
        ".".to_owned(),
        "hello-ai/../../victim".to_owned(),
        "a\0b".to_owned(),
        long,
        String::new(),
    ];
    for id in &hostile_ids {
        let shown: String = id.chars().take(40).collect();
        let requests = [
            (
                StreamKind::Control,
                Envelope::new(3, Body::UninstallApp { app_id: id.clone() }),
            ),
            (
                StreamKind::Control,
                Envelope::new(
                    4,
                    Body::InstallApp {
                        app_id: id.clone(),
                        version: None,
                    },
                ),
            ),
            (
                StreamKind::Action,
                execute(id, "run", serde_json::json!({})),
            ),
        ];
        for (kind, request) in requests {
            let reply = on_kind(&system, kind, request).await;
            let (code, message) = error_of(&reply);
            assert_eq!(code, ErrorCode::InvalidPayload, "{shown:?}: {message}");
            assert!(message.contains("app id"), "{shown:?}: {message}");
            assert!(
                !message.contains(&*home.to_string_lossy()),
                "the node's home path stays private: {message}"
            );
            assert!(message.len() < 300, "short: {message}");
        }
    }
    for victim in [&beside, &absolute] {
        assert_eq!(
            std::fs::read_to_string(victim.join("1.0.0/precious.txt")).expect("still there"),
            "keep me"
        );
        assert!(victim.join("state.json").exists());
    }
    assert!(home.join("data/hello-ai/storage.json").exists());

    // A well-formed id that is not installed is `unknown_app`, not a failed install.
    let reply = on_kind(
        &system,
        StreamKind::Control,
        Envelope::new(
            5,
            Body::UninstallApp {
                app_id: "victim".into(),
            },
        ),
    )
    .await;
    assert_eq!(error_of(&reply).0, ErrorCode::UnknownApp);
    assert!(beside.join("state.json").exists());
}

#[tokio::test]
async fn requests_on_the_wrong_stream_kind_are_refused_and_nothing_runs() {
    let system = System::start().await;
    // An action on a Control stream (the relay does not count those as actions).
    let echo = execute("hello-ai", "echo", serde_json::json!({ "text": "sneaky" }));
    let reply = on_kind(&system, StreamKind::Control, echo.clone()).await;
    let (code, message) = error_of(&reply);
    assert_eq!(code, ErrorCode::Unsupported, "{message}");
    assert!(message.contains("kind Action"), "{message}");
    assert_eq!(chunks_text(&reply), "", "the action did not run");
    // Status on an Action stream: refused the same way.
    let reply = on_kind(
        &system,
        StreamKind::Action,
        Envelope::new(1, Body::GetStatus),
    )
    .await;
    let (code, message) = error_of(&reply);
    assert_eq!(code, ErrorCode::Unsupported, "{message}");
    assert!(message.contains("kind Control"), "{message}");
    // On the right kinds both work.
    let reply = on_kind(&system, StreamKind::Action, echo).await;
    assert_eq!(chunks_text(&reply), "sneaky");
    let reply = on_kind(
        &system,
        StreamKind::Control,
        Envelope::new(1, Body::GetStatus),
    )
    .await;
    assert!(
        matches!(reply[0].body, Body::DeviceStatus { .. }),
        "{reply:?}"
    );
}

#[tokio::test]
async fn one_emit_larger_than_a_frame_arrives_whole_in_several_chunks() {
    let system = System::start_with(Limits {
        timeout: Duration::from_secs(10),
        memory_bytes: 16 << 20,
        output_bytes: 4 << 20,
    })
    .await;
    let reply = system::run_action(
        &system,
        &system.device_id,
        execute("bigemit", "run", serde_json::json!({})),
    )
    .await;
    let Some(Body::StreamEnd { chunks, .. }) = reply.last().map(|e| &e.body) else {
        panic!("expected STREAM_END, got {:?}", reply.last());
    };
    let pieces: Vec<usize> = reply
        .iter()
        .filter_map(|e| match &e.body {
            Body::StreamChunk { data, .. } => Some(data.len()),
            _ => None,
        })
        .collect();
    assert_eq!(pieces.iter().sum::<usize>(), 3 << 20, "nothing lost");
    assert_eq!(*chunks as usize, pieces.len());
    assert!(pieces.len() >= 48, "split into frames: {}", pieces.len());
    assert!(
        pieces
            .iter()
            .all(|&n| n <= aisa_node::action::MAX_CHUNK_TEXT)
    );
    // Chunks are numbered in order.
    let seqs: Vec<u32> = reply
        .iter()
        .filter_map(|e| match e.body {
            Body::StreamChunk { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    assert!(seqs.iter().enumerate().all(|(i, &s)| s as usize == i));
}
