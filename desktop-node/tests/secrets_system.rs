//! AI keys never leave the secret store in the clear: a real `desktop-node` process,
//! with its provider key set through `desktop-node keys set` (the encrypted-file backend
//! with a passphrase), runs
//! actions through a real relay. The key reaches the AI provider (the local fake refuses
//! any other key, and
//! counts the requests), and never appears in any byte the relay splices, in the
//! node's log files or console, or in plaintext anywhere in its home folder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Killed, contains, run_to_end};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aisa_node::secrets::{BackendChoice, FixedPassphrase, SecretStore, Zeroizing};
use aisa_testkit::system::{self, System};
use aisa_tunnel::Body;

const PASSPHRASE: &str = "test passphrase for the node's secrets";

/// `desktop-node` on `backend`, logging everything (the test looks for the key in the logs).
fn node_cmd(home: &Path, backend: &str) -> Command {
    let mut cmd = common::node_cmd(home, backend, PASSPHRASE);
    cmd.env("RUST_LOG", "debug");
    cmd
}

/// Every representation of the key we look for: raw, hex, base64 (standard and URL).
fn forms(key: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let b = key.as_bytes();
    vec![
        b.to_vec(),
        hex::encode(b).into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(b)
            .into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(b)
            .into_bytes(),
    ]
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

async fn one_backend(
    system: &System,
    backend: &str,
    tap: &mut tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>,
) {
    while tap.try_recv().is_ok() {}
    // A key nobody else uses, so a match anywhere is this test's key.
    let key = format!("sk-secret-{backend}-{}", std::process::id());
    let fake = aisa_testkit::provider::start(([127, 0, 0, 1], 0).into(), Some(key.clone()))
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let console = tempfile::tempdir().unwrap();
    let relay_url = format!("http://{}", system.relay().http_addr);

    let mut login = node_cmd(home.path(), backend);
    login.args([
        "login",
        "--relay",
        &relay_url,
        "--email",
        "alice@example.com",
        "--password-stdin",
        "--name",
        "secrets-test",
    ]);
    run_to_end(login, system::PASSWORD);
    let mut set = node_cmd(home.path(), backend);
    set.args(["keys", "set", "openai", "--stdin"]);
    let said = run_to_end(set, &format!("{key}\n"));
    assert!(said.contains(&format!("in the {backend} store")), "{said}");
    let mut list = node_cmd(home.path(), backend);
    list.args(["keys", "list"]);
    let listed = run_to_end(list, "");
    assert!(listed.contains("openai\tsk-…"), "{listed}");
    assert!(!listed.contains(&key));
    let mut install = node_cmd(home.path(), backend);
    install
        .args(["apps", "install-local"])
        .arg(aisa_testkit::guest::hello_ai_wasm())
        .args(["--id", "hello-ai", "--action", "write,echo"]);
    run_to_end(install, "");
    let config = std::fs::read_to_string(home.path().join("node.toml")).unwrap();
    let device_id = config
        .lines()
        .find_map(|l| l.strip_prefix("device_id = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();

    let stdout = std::fs::File::create(console.path().join("stdout")).unwrap();
    let stderr = std::fs::File::create(console.path().join("stderr")).unwrap();
    let mut run = node_cmd(home.path(), backend);
    run.args(["run", "--ai-provider", "openai", "--ai-base-url"])
        .arg(fake.base_url())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    let node = Killed(run.spawn().unwrap());

    // Actions until the node is online and one succeeds, then three more.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut done = 0;
    let mut topics = Vec::new();
    while done < 4 {
        assert!(
            Instant::now() < deadline,
            "no action succeeded on the node (console in {:?})",
            std::fs::read_to_string(console.path().join("stderr"))
        );
        let topic = format!("secret keeping {backend} {done}");
        let reply = system::run_action(
            system,
            &device_id,
            system::execute("hello-ai", "write", serde_json::json!({ "topic": topic })),
        )
        .await;
        match reply.last().map(|e| &e.body) {
            Some(Body::StreamEnd { .. }) => {
                assert!(system::chunks_text(&reply).contains(&topic), "{reply:?}");
                topics.push(topic);
                done += 1;
            }
            Some(Body::Error { code, message }) if code == "device_offline" => {
                let _ = message;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("action failed: {other:?}"),
        }
    }
    // The provider got the key: it refuses any other, and it answered every action.
    assert!(fake.stats.requests.load(Ordering::Relaxed) >= 4);
    assert_eq!(fake.stats.completed.load(Ordering::Relaxed), 4);
    drop(node);

    // Not in anything the relay spliced.
    let mut captured = Vec::new();
    while let Ok(chunk) = tap.try_recv() {
        captured.push(chunk);
    }
    let all: Vec<u8> = captured.iter().flatten().copied().collect();
    assert!(
        topics.iter().all(|t| contains(&all, t.as_bytes())),
        "the tap saw the actions (else this proves nothing)"
    );
    for form in forms(&key) {
        assert!(!contains(&all, &form), "the key crossed the relay");
        assert!(captured.iter().all(|c| !contains(c, &form)));
    }

    // Not in any file of the home folder (logs, config, secrets, apps, cache) or console.
    let mut files = Vec::new();
    files_under(home.path(), &mut files);
    files_under(console.path(), &mut files);
    let logs: Vec<_> = files
        .iter()
        .filter(|p| p.starts_with(home.path().join("logs")))
        .collect();
    assert!(!logs.is_empty(), "run wrote log files: {files:?}");
    let log_text: String = logs
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(log_text.contains("hello-ai"), "the logs record the actions");
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        for form in forms(&key) {
            assert!(!contains(&bytes, &form), "the key is in {}", path.display());
        }
    }
    assert!(
        !home.path().join("device-token").exists() && !home.path().join("identity.key").exists(),
        "no plaintext secret files"
    );

    // Make room for the next device (the test plan allows three).
    system
        .relay()
        .state
        .store
        .revoke_device(&system.relay_user_id(), &device_id)
        .await
        .unwrap();
    // Clean up the keychain entries of this home.
    let pass = FixedPassphrase(Zeroizing::new(PASSPHRASE.into()));
    SecretStore::open(home.path(), BackendChoice::Auto, &pass)
        .unwrap()
        .destroy()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_key_stays_on_the_desktop() {
    let system = System::start().await;
    // Everything the relay splices is copied here too.
    let (tap_tx, mut tap) = tokio::sync::mpsc::unbounded_channel();
    system
        .relay()
        .state
        .traffic
        .observe_splices(std::sync::Arc::new(tap_tx));
    // The kernel keychain is no longer a store (it forgets at a reboot); the OS
    // keychains are tested by scripts/secret-service-test.sh and scripts/wine-test.sh.
    one_backend(&system, "file", &mut tap).await;
    system.relay().state.traffic.stop_observing();
}
