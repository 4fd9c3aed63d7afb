//! Issue #7 end to end: a real `desktop-node` with `[e2e] required = true`, paired with
//! a browser through `desktop-node pair`'s one-time link, runs actions whose request and
//! output the relay never sees in the clear (every spliced byte is captured); plain,
//! replayed, unpaired and revoked requests are refused, and a pairing secret works once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Killed, run_to_end};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aisa_crypto::e2e::{self, ResponseOpener};
use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::{Body, Envelope, MAX_FRAME_LEN, OpenHeader, StreamKind};
use testkit::system::{self, System};

const NODE: &str = env!("CARGO_BIN_EXE_desktop-node");
const KEY: &str = "sk-e2e-test-key-0123456789";

fn node_cmd(home: &Path) -> Command {
    let mut cmd = Command::new(NODE);
    cmd.arg("--home")
        .arg(home)
        .env("AISA_SECRETS_BACKEND", "file")
        .env("AISA_PASSPHRASE", "e2e test passphrase")
        .env_remove("OPENAI_API_KEY")
        .env_remove("DESKTOP_NODE_HOME");
    cmd
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// What came back on a stream: envelopes opened (or plain ones, for refusals).
#[derive(Debug)]
struct Reply {
    envelopes: Vec<Envelope>,
    sealed: bool,
}

async fn exchange(
    system: &System,
    device_id: &str,
    e2e_header: Option<Vec<u8>>,
    first_frame: &[u8],
    mut opener: Option<ResponseOpener>,
) -> Reply {
    let session = system.browser().await;
    let header = OpenHeader {
        device_id: device_id.into(),
        kind: StreamKind::Action,
        token: system.token.clone(),
        e2e: e2e_header,
    };
    let (mut send, mut recv) = session.open_bi().await.unwrap().await.unwrap();
    write_frame(&mut send, &header.encode(), MAX_FRAME_LEN)
        .await
        .unwrap();
    write_frame(&mut send, first_frame, MAX_FRAME_LEN)
        .await
        .unwrap();
    let mut reply = Reply {
        envelopes: Vec::new(),
        sealed: false,
    };
    loop {
        let frame = tokio::time::timeout(system::WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
            .await
            .expect("reply in time");
        let Ok(Some(body)) = frame else { break };
        let plain = match opener.as_mut().map(|o| o.open_chunk(&body)) {
            Some(Ok((data, _last))) => {
                reply.sealed = true;
                data
            }
            _ => body,
        };
        let env = Envelope::decode(&plain).expect("an envelope");
        let end = matches!(env.body, Body::StreamEnd { .. } | Body::Error { .. });
        reply.envelopes.push(env);
        if end {
            break;
        }
    }
    if reply.sealed {
        opener
            .unwrap()
            .finish()
            .expect("the sealed reply ends with its final chunk");
    }
    reply
}

fn error_text(reply: &Reply) -> String {
    match reply.envelopes.last().map(|e| &e.body) {
        Some(Body::Error { code, message }) => format!("{code}: {message}"),
        other => panic!("expected an ERROR, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_actions_hide_payload_and_output_from_the_relay() {
    let system = System::start().await;
    let mut tap = relay_edge::splice::tap();
    let fake = testkit::provider::start(([127, 0, 0, 1], 0).into(), Some(KEY.into()))
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let relay_url = format!("http://{}", system.relay().http_addr);
    let mut login = node_cmd(home.path());
    login.args([
        "login",
        "--relay",
        &relay_url,
        "--email",
        "alice@example.com",
        "--password-stdin",
        "--name",
        "e2e-test",
    ]);
    run_to_end(login, system::PASSWORD);
    let mut set = node_cmd(home.path());
    set.args(["keys", "set", "openai", "--stdin"]);
    run_to_end(set, KEY);
    let mut install = node_cmd(home.path());
    install
        .args(["apps", "install-local"])
        .arg(testkit::guest::hello_ai_wasm())
        .args(["--id", "hello-ai", "--action", "write,echo"]);
    run_to_end(install, "");
    let config_path = home.path().join("node.toml");
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    // login wrote `[e2e] required = false`; this device wants encryption.
    assert!(config.contains("[e2e]\nrequired = false"), "{config}");
    config = config.replace("[e2e]\nrequired = false", "[e2e]\nrequired = true");
    std::fs::write(&config_path, config).unwrap();
    let device_id = std::fs::read_to_string(&config_path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("device_id = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();

    // `pair`: the link's fragment carries the device id, the desktop key and the secret.
    let printed = run_to_end(
        {
            let mut c = node_cmd(home.path());
            c.arg("pair");
            c
        },
        "",
    );
    let fragment = printed
        .lines()
        .find_map(|l| l.split_once("#pair=").map(|(_, f)| f.trim().to_owned()))
        .expect("a pairing link");
    let parts: Vec<&str> = fragment.split('.').collect();
    assert_eq!(parts[0], device_id);
    let desktop_pk: [u8; 32] = hex::decode(parts[1]).unwrap().try_into().unwrap();
    let secret = parts[2].to_owned();

    let mut run = node_cmd(home.path());
    run.args(["run", "--ai-provider", "openai", "--ai-base-url"])
        .arg(fake.base_url())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _node = Killed(run.spawn().unwrap());

    let browser_sk = [0x61u8; 32];
    let browser_pk = e2e::public_of(&browser_sk).unwrap();
    let info = device_id.as_bytes();
    let pair_request = |secret: &str| {
        let body = serde_json::json!({ "secret": secret, "name": "test browser" }).to_string();
        let (sealed, opener) =
            e2e::seal_request(&desktop_pk, &browser_sk, info, body.as_bytes(), now()).unwrap();
        let mut header = vec![desktop_node::e2e::MODE_PAIR];
        header.extend_from_slice(&browser_pk);
        header.extend_from_slice(&sealed[..e2e::REQUEST_HEADER_LEN]);
        (header, sealed[e2e::REQUEST_HEADER_LEN..].to_vec(), opener)
    };

    // Pair (retrying while the node comes online).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (header, ct, opener) = pair_request(&secret);
        let reply = exchange(&system, &device_id, Some(header), &ct, Some(opener)).await;
        if reply.sealed {
            assert!(matches!(
                reply.envelopes.last().unwrap().body,
                Body::StreamEnd { .. }
            ));
            break;
        }
        let text = error_text(&reply);
        assert!(text.starts_with("device_offline"), "{text}");
        assert!(Instant::now() < deadline, "node never came online");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The secret works once.
    let (header, ct, opener) = pair_request(&secret);
    let reply = exchange(&system, &device_id, Some(header), &ct, Some(opener)).await;
    assert!(
        error_text(&reply).contains("pairing link is not valid"),
        "{reply:?}"
    );

    let listed = run_to_end(
        {
            let mut c = node_cmd(home.path());
            c.args(["browsers", "list"]);
            c
        },
        "",
    );
    let browser_id = hex::encode(desktop_node::e2e::key_id(&browser_pk));
    assert!(
        listed.contains(&browser_id) && listed.contains("active"),
        "{listed}"
    );

    // An encrypted action.
    let topic = "confidential quarterly numbers 4242";
    let action = |topic: &str| {
        let request = system::execute("hello-ai", "write", serde_json::json!({ "topic": topic }));
        let (sealed, opener) =
            e2e::seal_request(&desktop_pk, &browser_sk, info, &request.encode(), now()).unwrap();
        let mut header = vec![desktop_node::e2e::MODE_ACTION];
        header.extend_from_slice(&desktop_node::e2e::key_id(&browser_pk));
        header.extend_from_slice(&sealed[..e2e::REQUEST_HEADER_LEN]);
        (header, sealed[e2e::REQUEST_HEADER_LEN..].to_vec(), opener)
    };
    let (header, ct, opener) = action(topic);
    let reply = exchange(&system, &device_id, Some(header.clone()), &ct, Some(opener)).await;
    assert!(reply.sealed, "{reply:?}");
    assert!(matches!(
        reply.envelopes.last().unwrap().body,
        Body::StreamEnd { .. }
    ));
    let output = system::chunks_text(&reply.envelopes);
    assert!(output.contains(topic), "{output}");

    // Replayed: the same header and ciphertext again.
    let reply = exchange(&system, &device_id, Some(header), &ct, None).await;
    assert!(error_text(&reply).contains("replayed"), "{reply:?}");

    // Plain actions are refused on this device.
    let plain_marker = "plain marker topic 777";
    let plain = system::execute(
        "hello-ai",
        "write",
        serde_json::json!({ "topic": plain_marker }),
    );
    let reply = exchange(&system, &device_id, None, &plain.encode(), None).await;
    assert!(
        error_text(&reply).contains("only end-to-end encrypted"),
        "{reply:?}"
    );
    // A status request may stay plain: it carries no payload and no model output.
    let status = Envelope::new(9, Body::GetStatus);
    let reply = exchange(&system, &device_id, None, &status.encode(), None).await;
    assert!(
        matches!(
            reply.envelopes.last().map(|e| &e.body),
            Some(Body::DeviceStatus { .. })
        ),
        "{reply:?}"
    );

    // An unpaired browser key.
    let stranger_sk = [0x77u8; 32];
    let request = system::execute("hello-ai", "write", serde_json::json!({ "topic": "x" }));
    let (sealed, _) =
        e2e::seal_request(&desktop_pk, &stranger_sk, info, &request.encode(), now()).unwrap();
    let mut header = vec![desktop_node::e2e::MODE_ACTION];
    header.extend_from_slice(&desktop_node::e2e::key_id(
        &e2e::public_of(&stranger_sk).unwrap(),
    ));
    header.extend_from_slice(&sealed[..e2e::REQUEST_HEADER_LEN]);
    let reply = exchange(
        &system,
        &device_id,
        Some(header),
        &sealed[e2e::REQUEST_HEADER_LEN..],
        None,
    )
    .await;
    assert!(error_text(&reply).contains("not paired"), "{reply:?}");

    // Revoked: refused from then on.
    run_to_end(
        {
            let mut c = node_cmd(home.path());
            c.args(["browsers", "revoke", &browser_id[..6]]);
            c
        },
        "",
    );
    let (header, ct, opener) = action("after revocation");
    let reply = exchange(&system, &device_id, Some(header), &ct, Some(opener)).await;
    assert!(error_text(&reply).contains("not paired"), "{reply:?}");

    // What the relay spliced: the plain action's marker (so the capture works), never the
    // encrypted topic, the model's echo of it, or the pairing secret.
    let mut all = Vec::new();
    while let Ok(chunk) = tap.try_recv() {
        all.extend_from_slice(&chunk);
    }
    relay_edge::splice::untap();
    assert!(contains(&all, plain_marker.as_bytes()), "the tap works");
    assert!(
        !contains(&all, topic.as_bytes()),
        "the relay saw the encrypted topic"
    );
    assert!(!contains(&all, b"confidential"));
    assert!(!contains(&all, secret.as_bytes()));
    assert!(!contains(&all, KEY.as_bytes()));
}
