//! Run history through real processes: a real relay on loopback and a real
//! `desktop-node run` (logged in, hello-ai installed, the fake AI provider). Actions that
//! finish, fail and are cancelled are recorded on the desktop; the browser lists them
//! (newest first, with paging and a search), gets one in full, deletes one and then all,
//! over Control streams the relay splices. The node refuses a history request on an
//! Action stream, keeps the provider's key out of the store, and keeps the history across
//! a restart. With `[e2e] required`, history requests and answers travel sealed: every
//! byte the relay splices is captured and holds none of the runs' text, and a plain
//! history request is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Killed, contains, run_to_end};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aisa_crypto::e2e::{self, ResponseFrame, ResponseOpener};
use aisa_node::e2e::{MODE_ACTION, MODE_PAIR, key_id};
use aisa_testkit::system::{self, System};
use aisa_tunnel::io::{read_frame, write_frame};
use aisa_tunnel::message::RunRecord;
use aisa_tunnel::{Body, Envelope, ErrorCode, MAX_FRAME_LEN, OpenHeader, StreamKind};

const KEY: &str = "sk-history-test-key-0123456789";

fn node_cmd(home: &Path) -> Command {
    common::node_cmd(home, "file", "history test passphrase")
}

/// A logged-in node home with hello-ai installed.
struct Desk {
    home: tempfile::TempDir,
    device_id: String,
}

impl Desk {
    fn set_up(system: &System, name: &str, e2e_required: bool) -> Desk {
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
            name,
        ]);
        run_to_end(login, system::PASSWORD);
        let mut set = node_cmd(home.path());
        set.args(["keys", "set", "openai", "--stdin"]);
        run_to_end(set, KEY);
        let mut install = node_cmd(home.path());
        install
            .args(["apps", "install-local"])
            .arg(aisa_testkit::guest::hello_ai_wasm())
            .args(["--id", "hello-ai", "--action", "write,echo"]);
        run_to_end(install, "");
        let config_path = home.path().join("node.toml");
        let config = std::fs::read_to_string(&config_path).unwrap();
        // login writes the defaults: history on.
        assert!(config.contains("[history]\nenabled = true"), "{config}");
        if e2e_required {
            let config = config.replace("[e2e]\nrequired = false", "[e2e]\nrequired = true");
            std::fs::write(&config_path, config).unwrap();
        }
        let device_id = std::fs::read_to_string(&config_path)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("device_id = "))
            .unwrap()
            .trim_matches('"')
            .to_owned();
        Desk { home, device_id }
    }

    fn run(&self, fake: &aisa_testkit::provider::FakeProvider) -> Killed {
        let mut run = node_cmd(self.home.path());
        run.args(["run", "--ai-provider", "openai", "--ai-base-url"])
            .arg(fake.base_url())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.home.path().join("run.log")).unwrap());
        Killed(run.spawn().unwrap())
    }

    fn history_file(&self) -> String {
        std::fs::read_to_string(self.home.path().join("history/runs.jsonl")).unwrap_or_default()
    }
}

/// Sends `body` on a stream of its kind (or `kind`) and returns the reply.
async fn ask(system: &System, device_id: &str, body: Body, kind: Option<StreamKind>) -> Envelope {
    let request = Envelope::new(7, body);
    let session = system.browser().await;
    let mut header = system.header(device_id);
    header.kind = kind.unwrap_or_else(|| system::kind_for(&request.body));
    let (_send, mut recv) = system::open(&session, &[header.encode(), request.encode()]).await;
    let frame = tokio::time::timeout(system::WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
        .await
        .expect("an answer in time")
        .expect("read")
        .expect("a frame");
    Envelope::decode(&frame).unwrap()
}

async fn list(system: &System, device_id: &str, query: &str) -> (u32, Vec<RunRecord>) {
    let body = Body::HistoryList {
        query: query.into(),
        offset: 0,
        limit: 50,
    };
    match ask(system, device_id, body, None).await.body {
        Body::HistoryPage { total, runs } => (total, runs),
        other => panic!("expected HISTORY_PAGE, got {other:?}"),
    }
}

fn write(topic: &str) -> Envelope {
    system::execute("hello-ai", "write", serde_json::json!({ "topic": topic }))
}

/// Runs an action, retrying while the node comes online.
async fn run_when_online(system: &System, device_id: &str, request: Envelope) -> Vec<Envelope> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = system::run_action(system, device_id, request.clone()).await;
        let offline = matches!(
            reply.last().map(|e| &e.body),
            Some(Body::Error { code, .. }) if code == "device_offline"
        ) || reply.is_empty();
        if !offline {
            return reply;
        }
        assert!(Instant::now() < deadline, "node never came online");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_kept_on_the_desktop_listed_searched_and_deleted() {
    let system = System::start().await;
    system.lift_plan_limits().await;
    let fake = aisa_testkit::provider::start(([127, 0, 0, 1], 0).into(), Some(KEY.into()))
        .await
        .unwrap();
    let desk = Desk::set_up(&system, "history-test", false);
    let device = desk.device_id.clone();
    let node = desk.run(&fake);

    // Done.
    let done = run_when_online(&system, &device, write("alpha quarterly report")).await;
    assert!(
        matches!(done.last().unwrap().body, Body::StreamEnd { .. }),
        "{done:?}"
    );
    let done_text = system::chunks_text(&done);
    // Failed: the provider fails mid-stream.
    let failed = system::run_action(&system, &device, write("[fail] beta")).await;
    assert_eq!(system::error_of(&failed).0, ErrorCode::ProviderError);
    // Cancelled: a slow action, cancelled after its first chunk.
    let session = system.browser().await;
    let (mut send, mut recv) = system::open(
        &session,
        &[
            system.header(&device).encode(),
            write("[slow] gamma").encode(),
        ],
    )
    .await;
    let first = read_frame(&mut recv, MAX_FRAME_LEN).await.unwrap().unwrap();
    assert!(matches!(
        Envelope::decode(&first).unwrap().body,
        Body::StreamChunk { .. }
    ));
    write_frame(
        &mut send,
        &Envelope::new(42, Body::Cancel).encode(),
        MAX_FRAME_LEN,
    )
    .await
    .unwrap();
    let cancelled = system::read_reply(&mut recv).await;
    assert_eq!(system::error_of(&cancelled).0, ErrorCode::Cancelled);
    // The key, if an input carried it, is not kept.
    let leak = system::run_action(&system, &device, write(&format!("leak {KEY}"))).await;
    assert!(
        matches!(leak.last().unwrap().body, Body::StreamEnd { .. }),
        "{leak:?}"
    );
    // Refusals that never ran are not runs.
    let refused = system::run_action(
        &system,
        &device,
        system::execute("hello-ai", "nope", serde_json::json!({})),
    )
    .await;
    assert_eq!(system::error_of(&refused).0, ErrorCode::UnknownAction);

    // Newest first, each as it ended.
    let (total, runs) = list(&system, &device, "").await;
    assert_eq!(total, 4, "{runs:#?}");
    let [leaked, gamma, beta, alpha] = &runs[..] else {
        panic!("{runs:#?}")
    };
    assert!(alpha.id < beta.id && beta.id < gamma.id && gamma.id < leaked.id);
    assert_eq!(
        (alpha.status.as_str(), alpha.error_code.as_str()),
        ("done", "")
    );
    assert_eq!(
        (beta.status.as_str(), beta.error_code.as_str()),
        ("failed", "provider_error")
    );
    assert_eq!(
        (gamma.status.as_str(), gamma.error_code.as_str()),
        ("cancelled", "cancelled")
    );
    assert_eq!(
        (alpha.app_id.as_str(), alpha.action.as_str()),
        ("hello-ai", "write")
    );
    assert!(alpha.input.contains("alpha quarterly report") && alpha.preview);
    assert!(
        alpha
            .output
            .starts_with(&done_text[..done_text.len().min(100)])
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(alpha.started_ms <= now_ms && alpha.started_ms + 120_000 > now_ms);

    // One in full: the output the browser got.
    let got = ask(
        &system,
        &device,
        Body::HistoryGet { run_id: alpha.id },
        None,
    )
    .await;
    let Body::HistoryRun { run } = got.body else {
        panic!("{got:?}")
    };
    assert_eq!(got.request_id, 7);
    assert_eq!(run.output, done_text);
    assert!(!run.preview);
    // The leaked key was replaced before it was written.
    assert!(leaked.input.contains("[redacted]"), "{leaked:?}");
    assert!(!desk.history_file().contains(KEY));
    assert!(desk.history_file().contains("alpha quarterly report"));

    // Search, paging.
    let (total, runs) = list(&system, &device, "QUARTERLY alpha").await;
    assert_eq!((total, runs[0].id), (1, alpha.id));
    let (total, _) = list(&system, &device, "provider_error").await;
    assert_eq!(total, 1);
    let page = ask(
        &system,
        &device,
        Body::HistoryList {
            query: String::new(),
            offset: 1,
            limit: 2,
        },
        None,
    )
    .await;
    let Body::HistoryPage { total: 4, runs } = page.body else {
        panic!("{page:?}")
    };
    assert_eq!(
        runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        [gamma.id, beta.id]
    );

    // The node refuses a history request on an Action stream.
    let wrong = ask(
        &system,
        &device,
        Body::HistoryGet { run_id: alpha.id },
        Some(StreamKind::Action),
    )
    .await;
    match wrong.body {
        Body::Error { code, message } => {
            assert_eq!(code, "unsupported");
            assert!(message.contains("HistoryGet must be sent on a stream of kind Control"));
        }
        other => panic!("{other:?}"),
    }

    // Delete one: gone from the list, the file and HISTORY_GET.
    let deleted = ask(
        &system,
        &device,
        Body::HistoryDelete {
            run_id: Some(alpha.id),
        },
        None,
    )
    .await;
    assert_eq!(deleted.body, Body::HistoryDeleted { count: 1 });
    assert_eq!(list(&system, &device, "quarterly").await.0, 0);
    assert!(!desk.history_file().contains("alpha quarterly report"));
    let gone = ask(
        &system,
        &device,
        Body::HistoryGet { run_id: alpha.id },
        None,
    )
    .await;
    assert!(
        matches!(&gone.body, Body::Error { code, .. } if code == "unknown_run"),
        "{gone:?}"
    );

    // The history outlives the node.
    drop(node);
    let _node = desk.run(&fake);
    let again = run_when_online(
        &system,
        &device,
        Envelope::new(
            8,
            Body::HistoryList {
                query: String::new(),
                offset: 0,
                limit: 10,
            },
        ),
    )
    .await;
    let Some(Body::HistoryPage { total: 3, .. }) = again.last().map(|e| &e.body) else {
        panic!("{again:?}")
    };

    // Delete all.
    let all = ask(&system, &device, Body::HistoryDelete { run_id: None }, None).await;
    assert_eq!(all.body, Body::HistoryDeleted { count: 3 });
    assert_eq!(list(&system, &device, "").await.0, 0);
    assert_eq!(desk.history_file(), "");
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A paired browser's keys.
struct Browser {
    sk: [u8; 32],
    pk: [u8; 32],
    desktop_pk: [u8; 32],
    device_id: String,
}

impl Browser {
    /// The sealed first frame, its e2e header, and the opener of its answer.
    fn seal(&self, mode: u8, plain: &[u8]) -> (Vec<u8>, Vec<u8>, ResponseOpener) {
        let (sealed, opener) = e2e::seal_request(
            &self.desktop_pk,
            &self.sk,
            self.device_id.as_bytes(),
            plain,
            now(),
        )
        .unwrap();
        let mut header = vec![mode];
        if mode == MODE_PAIR {
            header.extend_from_slice(&self.pk);
        } else {
            header.extend_from_slice(&key_id(&self.pk));
        }
        header.extend_from_slice(&sealed[..e2e::REQUEST_HEADER_LEN]);
        (header, sealed[e2e::REQUEST_HEADER_LEN..].to_vec(), opener)
    }

    /// Sends `plain` sealed on a stream of `kind` and returns the opened answer
    /// envelopes (a plain refusal as it came).
    async fn exchange(
        &self,
        system: &System,
        mode: u8,
        kind: StreamKind,
        plain: &[u8],
    ) -> Vec<Envelope> {
        let (e2e_header, first, mut opener) = self.seal(mode, plain);
        let header = OpenHeader {
            device_id: self.device_id.clone(),
            kind,
            token: system.token.clone(),
            e2e: Some(e2e_header),
        };
        let session = system.browser().await;
        let (_send, mut recv) = system::open(&session, &[header.encode(), first]).await;
        let mut out = Vec::new();
        loop {
            let frame = tokio::time::timeout(system::WAIT, read_frame(&mut recv, MAX_FRAME_LEN))
                .await
                .expect("reply in time");
            let Ok(Some(body)) = frame else { break };
            let plain = match opener.open_frame(&body).expect("an acceptable frame") {
                ResponseFrame::Data(data, _) => data,
                ResponseFrame::Plain(plain) => plain,
            };
            out.push(Envelope::decode(&plain).unwrap());
        }
        out
    }

    async fn request(&self, system: &System, body: Body) -> Vec<Envelope> {
        let envelope = Envelope {
            request_id: 5,
            device_id: self.device_id.clone(),
            body,
        };
        let kind = system::kind_for(&envelope.body);
        self.exchange(system, MODE_ACTION, kind, &envelope.encode())
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_history_never_shows_the_relay_a_run() {
    let system = System::start().await;
    system.lift_plan_limits().await;
    let (tap_tx, mut tap) = tokio::sync::mpsc::unbounded_channel();
    system
        .relay()
        .state
        .traffic
        .observe_splices(std::sync::Arc::new(tap_tx));
    let fake = aisa_testkit::provider::start(([127, 0, 0, 1], 0).into(), Some(KEY.into()))
        .await
        .unwrap();
    let desk = Desk::set_up(&system, "history-e2e", true);
    let device = desk.device_id.clone();
    let mut pair = node_cmd(desk.home.path());
    pair.arg("pair");
    let printed = run_to_end(pair, "");
    let fragment = printed
        .lines()
        .find_map(|l| l.split_once("#pair=").map(|(_, f)| f.trim().to_owned()))
        .expect("a pairing link");
    let parts: Vec<&str> = fragment.split('.').collect();
    let sk = [0x42; 32];
    let browser = Browser {
        sk,
        pk: e2e::public_of(&sk).unwrap(),
        desktop_pk: hex::decode(parts[1]).unwrap().try_into().unwrap(),
        device_id: device.clone(),
    };
    let _node = desk.run(&fake);
    let pairing = serde_json::json!({ "secret": parts[2], "name": "history test" }).to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = browser
            .exchange(&system, MODE_PAIR, StreamKind::Control, pairing.as_bytes())
            .await;
        if matches!(reply.last().map(|e| &e.body), Some(Body::StreamEnd { .. })) {
            break;
        }
        assert!(Instant::now() < deadline, "pairing failed: {reply:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let marker = "secret merger plans 9131";
    let reply = browser.request(&system, write(marker).body).await;
    assert!(
        matches!(reply.last().unwrap().body, Body::StreamEnd { .. }),
        "{reply:?}"
    );
    let reply = browser
        .request(
            &system,
            Body::HistoryList {
                query: "merger".into(),
                offset: 0,
                limit: 10,
            },
        )
        .await;
    let Some(Body::HistoryPage { total: 1, runs }) = reply.last().map(|e| e.body.clone()) else {
        panic!("{reply:?}")
    };
    assert!(runs[0].input.contains(marker) && runs[0].output.contains(marker));
    let reply = browser
        .request(&system, Body::HistoryGet { run_id: runs[0].id })
        .await;
    let Some(Body::HistoryRun { run }) = reply.last().map(|e| e.body.clone()) else {
        panic!("{reply:?}")
    };
    assert!(run.output.contains(marker));

    // A plain history request is refused on this desktop (and shows that the tap sees
    // what crosses the relay in the clear).
    let plain = ask(
        &system,
        &device,
        Body::HistoryList {
            query: "plain-tap-check-777".into(),
            offset: 0,
            limit: 10,
        },
        None,
    )
    .await;
    assert!(
        matches!(&plain.body, Body::Error { code, .. } if code == "denied"),
        "{plain:?}"
    );
    let reply = browser
        .request(&system, Body::HistoryDelete { run_id: None })
        .await;
    assert_eq!(
        reply.last().unwrap().body,
        Body::HistoryDeleted { count: 1 }
    );

    // Everything the relay spliced: the marker never, in any direction.
    let mut all = Vec::new();
    while let Ok(chunk) = tap.try_recv() {
        all.extend_from_slice(&chunk);
    }
    assert!(contains(&all, b"plain-tap-check-777"), "the tap works");
    assert!(!contains(&all, marker.as_bytes()), "the relay saw a run");
    assert!(!contains(&all, b"merger"), "the relay saw the search");
    assert!(!contains(&all, b"hello-ai"), "the relay saw the app");
}
