//! `desktop-node update` through the real binary (a copy "installed" in a temp folder)
//! against release manifests served over HTTP on loopback: every refusal leaves the
//! installed binary as it was; a good release is swapped in, restarted, connects to a
//! real relay and confirms itself; a release that never connects is rolled back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use aisa_miniapp::SecretKey;
use aisa_miniapp::release::{self, Release, SignedRelease};
use aisa_testkit::system::{self, System};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use common::{NODE, run_to_end};

const PASSPHRASE: &str = "update test passphrase";

/// A static file server on loopback whose files the test replaces at will.
#[derive(Clone, Default)]
struct Files(Arc<Mutex<HashMap<String, Vec<u8>>>>);

impl Files {
    async fn serve(&self) -> String {
        let app = axum::Router::new()
            .route(
                "/{*path}",
                axum::routing::get(
                    |State(files): State<Files>, UrlPath(path): UrlPath<String>| async move {
                        match files.0.lock().unwrap().get(&path) {
                            Some(bytes) => Ok(bytes.clone()),
                            None => Err(StatusCode::NOT_FOUND),
                        }
                    },
                ),
            )
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn put(&self, path: &str, bytes: Vec<u8>) {
        self.0.lock().unwrap().insert(path.into(), bytes);
    }
}

/// A node home and an installed copy of the binary.
struct Install {
    _dir: tempfile::TempDir,
    home: PathBuf,
    binary: PathBuf,
    original: Vec<u8>,
}

impl Install {
    fn new() -> Install {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        let binary = bin.join("desktop-node");
        // A hard link, not a copy: the debug binary is ~140 MB and the updater only
        // renames files, never writes into one, so the build's binary stays intact.
        if std::fs::hard_link(NODE, &binary).is_err() {
            std::fs::copy(NODE, &binary).unwrap();
        }
        let original = std::fs::read(&binary).unwrap();
        Install {
            _dir: dir,
            home,
            binary,
            original,
        }
    }

    /// A node.toml without a login (enough for the refusals), with `[update]`.
    fn configure(&self, update: &str) {
        std::fs::write(
            self.home.join("node.toml"),
            format!(
                "relay_url = \"http://127.0.0.1:9\"\nquic_addr = \"127.0.0.1:9\"\nserver_name = \"localhost\"\ndevice_id = \"dev-test\"\n\n{update}"
            ),
        )
        .unwrap();
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--home")
            .arg(&self.home)
            .env("AISA_SECRETS_BACKEND", "file")
            .env("AISA_PASSPHRASE", PASSPHRASE)
            .env_remove("OPENAI_API_KEY")
            .env_remove("AISA_NODE_HOME")
            // No JS apps here: skip compiling the built-in JS runtime at start (minutes
            // in a debug build on a busy machine; the grace period is for connecting).
            .env("AISA_JS_RUNTIME", self.home.join("no-js-runtime.wasm"))
            .stdin(Stdio::null());
        cmd
    }

    fn update(&self) -> Output {
        self.cmd().args(["update", "--yes"]).output().unwrap()
    }

    /// The installed binary is the original, and nothing was left beside it or in home.
    fn assert_untouched(&self) {
        assert!(
            std::fs::read(&self.binary).unwrap() == self.original,
            "the installed binary changed"
        );
        let beside: Vec<_> = std::fs::read_dir(self.binary.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside.len(), 1, "left beside the binary: {beside:?}");
        assert!(!self.home.join("update-pending.json").exists());
    }
}

fn key(seed: u8) -> SecretKey {
    SecretKey::from_bytes(&[seed; 32])
}

fn update_section(base: &str, trusted: &SecretKey, extra: &str) -> String {
    format!(
        "[update]\nmanifest_url = \"{base}/releases\"\ntrusted_keys = [\"{}\"]\ncheck_in_background = false\n{extra}",
        trusted.public_key().to_base64()
    )
}

fn manifest_path() -> String {
    format!("releases/stable/{}.json", release::platform())
}

fn release_of(base: &str, bytes: &[u8], version: &str) -> Release {
    Release {
        channel: "stable".into(),
        platform: release::platform(),
        version: version.into(),
        url: format!("{base}/files/desktop-node-{version}"),
        size: bytes.len() as u64,
        sha256: aisa_miniapp::checksum::sha256_hex(bytes),
        protocol: aisa_node::update::protocol(),
        published_at: 1_790_000_000,
    }
}

fn publish(files: &Files, release: &Release, signed: &SignedRelease, bytes: Vec<u8>) {
    files.put(&manifest_path(), serde_json::to_vec(signed).unwrap());
    let file = release.url.rsplit_once("/files/").unwrap().1;
    files.put(&format!("files/{file}"), bytes);
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_releases_change_nothing() {
    let files = Files::default();
    let base = files.serve().await;
    let trusted = key(1);
    let new_bytes = b"#!/bin/sh\necho a new desktop-node\n".to_vec();
    let good = release_of(&base, &new_bytes, "99.0.0");

    let signed_by = |release: &Release, seed: u8| release::sign(release, &key(seed));
    let mut forged = signed_by(&good, 1);
    let mut evil = good.clone();
    evil.url = evil.url.replace("99.0.0", "evil");
    forged.manifest = base64_of(&serde_json::to_vec(&evil).unwrap());
    let mut other_platform = good.clone();
    other_platform.platform = "riscv64-plan9".into();
    let mut flipped = new_bytes.clone();
    flipped[12] ^= 1;
    let mut longer = new_bytes.clone();
    longer.extend_from_slice(b"more");
    let cases = [
        (
            "a bad signature",
            forged,
            new_bytes.clone(),
            "signature does not verify",
        ),
        (
            "an unknown key",
            signed_by(&good, 2),
            new_bytes.clone(),
            "does not trust",
        ),
        (
            "a downgrade",
            signed_by(&release_of(&base, &new_bytes, "0.0.1"), 1),
            new_bytes.clone(),
            "not newer",
        ),
        (
            "a manifest for another platform",
            signed_by(&other_platform, 1),
            new_bytes.clone(),
            "is for riscv64-plan9",
        ),
        (
            "a truncated download",
            signed_by(&good, 1),
            new_bytes[..new_bytes.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "other bytes of the same length",
            signed_by(&good, 1),
            flipped,
            "SHA-256",
        ),
        (
            "a longer download",
            signed_by(&good, 1),
            longer,
            "more than the announced",
        ),
    ];
    for (what, signed, bytes, expected) in cases {
        let install = Install::new();
        install.configure(&update_section(&base, &trusted, ""));
        publish(&files, &good, &signed, bytes);
        let out = install.update();
        let said = text(&out);
        assert!(!out.status.success(), "{what}: accepted: {said}");
        assert!(
            said.contains(expected),
            "{what}: expected {expected:?} in {said}"
        );
        install.assert_untouched();
    }

    // No trusted release key at all: refused with what to do.
    let install = Install::new();
    install.configure("[update]\ncheck_in_background = false\n");
    let out = install.update();
    assert!(!out.status.success());
    assert!(text(&out).contains("trusted_keys"), "{}", text(&out));
    install.assert_untouched();
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Logs a node home in at the test relay (as `desktop-node login` does).
fn log_in(install: &Install, system: &System) {
    let mut login = install.cmd();
    login.args([
        "login",
        "--relay",
        &format!("http://{}", system.relay().http_addr),
        "--email",
        "alice@example.com",
        "--password-stdin",
        "--name",
        "update-test",
    ]);
    run_to_end(login, system::PASSWORD);
}

/// `[update] restart_command`: starts the installed binary's `run` in the background
/// (as a service manager would), counting restarts in `restarts`.
fn restart_command(install: &Install) -> String {
    let home = install.home.display();
    let script = format!(
        "echo restart >> {home}/restarts; nohup {} --home {home} run >>{home}/run.log 2>&1 & echo $! >> {home}/run.pids",
        install.binary.display()
    );
    format!(
        "restart_command = [\"/bin/sh\", \"-c\", {}]\n",
        toml_string(&script)
    )
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Replaces the `[update]` table of the node.toml `login` wrote with `section`.
fn set_update_section(path: &Path, section: &str) {
    let mut config: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
    let mut update: toml::Table = section.parse().unwrap();
    config.insert("update".into(), update.remove("update").unwrap());
    std::fs::write(path, toml::to_string(&config).unwrap()).unwrap();
}

/// Kills the nodes the restart command started.
fn kill_started(install: &Install) {
    if let Ok(pids) = std::fs::read_to_string(install.home.join("run.pids")) {
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").arg(pid).status();
        }
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_good_release_is_swapped_in_restarted_and_confirmed() {
    let system = System::start().await;
    let files = Files::default();
    let base = files.serve().await;
    let trusted = key(1);
    let install = Install::new();
    log_in(&install, &system);
    // The release: this same node, made a different file (trailing bytes do not change
    // what an executable does), so its SHA-256 tells it apart from the old one.
    let mut new_bytes = install.original.clone();
    new_bytes.extend_from_slice(b"\0aisa test release 99.0.0\0");
    let good = release_of(&base, &new_bytes, "99.0.0");
    publish(
        &files,
        &good,
        &release::sign(&good, &trusted),
        new_bytes.clone(),
    );
    set_update_section(
        &install.home.join("node.toml"),
        &format!(
            "{}grace_secs = 60\n{}",
            update_section(&base, &trusted, ""),
            restart_command(&install)
        ),
    );

    let out = tokio::task::spawn_blocking({
        let mut cmd = install.cmd();
        cmd.args(["update", "--yes"]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    kill_started(&install);
    let said = text(&out);
    let mut log = std::fs::read_to_string(install.home.join("run.log")).unwrap_or_default();
    for file in std::fs::read_dir(install.home.join("logs"))
        .into_iter()
        .flatten()
    {
        log.push_str(&std::fs::read_to_string(file.unwrap().path()).unwrap_or_default());
    }
    let home_files: Vec<_> = std::fs::read_dir(&install.home)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        out.status.success(),
        "{said}\nrestarts: {}, home: {home_files:?}\nrun.log:\n{log}",
        restarts(&install)
    );
    assert!(said.contains("desktop-node 99.0.0 is running"), "{said}");
    assert!(std::fs::read(&install.binary).unwrap() == new_bytes);
    assert!(!install.home.join("update-pending.json").exists());
    assert!(!release_backup(&install).exists(), "the backup is removed");
    assert_eq!(restarts(&install), 1);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_release_that_never_connects_is_rolled_back() {
    let files = Files::default();
    let base = files.serve().await;
    let trusted = key(1);
    let install = Install::new();
    // A "new version" that exits at once: it can never confirm itself.
    let new_bytes = b"#!/bin/sh\nexit 3\n".to_vec();
    let bad = release_of(&base, &new_bytes, "99.0.0");
    publish(&files, &bad, &release::sign(&bad, &trusted), new_bytes);
    install.configure(&format!(
        "{}grace_secs = 2\n{}",
        update_section(&base, &trusted, ""),
        restart_command(&install)
    ));
    let out = install.update();
    kill_started(&install);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("rolled back to"), "{said}");
    assert_eq!(
        restarts(&install),
        2,
        "restarted after the swap and after the rollback"
    );
    install.assert_untouched();

    // And `update --rollback` says so when there is nothing to go back to.
    install.configure("");
    let out = install
        .cmd()
        .args(["update", "--rollback"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("no previous version"), "{}", text(&out));
}

fn release_backup(install: &Install) -> PathBuf {
    aisa_node::update::swap::backup_path(&install.binary)
}

fn restarts(install: &Install) -> usize {
    std::fs::read_to_string(install.home.join("restarts"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn version_names_the_protocol_and_platform() {
    let out = Command::new(NODE).arg("version").output().unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains(&format!("protocol {}", aisa_node::update::protocol())));
    assert!(said.contains(&release::platform()));
}
