//! The `desktop-node` process on each platform, against a real relay on loopback.
//!
//! * Stopping: SIGTERM in the middle of an action lets it finish (every chunk and its
//!   STREAM_END reach the browser), the process exits 0, and the relay sees the node
//!   leave at once (the node closes with code 3, "shutting down"), not after its
//!   heartbeat timeout (Unix). Under Wine (`AISA_NODE_RUNNER=wine`), the same with the
//!   Windows build and a console Ctrl-C.
//! * A smoke test of a node built for another platform: with `AISA_NODE_EXE` (and
//!   `AISA_NODE_RUNNER`, e.g. `wine`) set, that binary logs in, stores a provider key in
//!   the OS's own secret store (`auto`), installs an app and runs an action through the
//!   relay. `scripts/wine-test.sh` runs it for the Windows build under Wine; without
//!   the variables it runs the host's own binary the same way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aisa_testkit::system::{self, System};
use aisa_tunnel::Body;
use common::{Killed, run_to_end};

/// The binary under test and how to start it.
fn node_command() -> Command {
    let exe = std::env::var("AISA_NODE_EXE").unwrap_or_else(|_| common::NODE.to_owned());
    match std::env::var("AISA_NODE_RUNNER") {
        Ok(runner) if !runner.is_empty() => {
            let mut cmd = Command::new(runner);
            cmd.arg(exe);
            cmd
        }
        _ => Command::new(exe),
    }
}

fn node(home: &Path) -> Command {
    let mut cmd = node_command();
    cmd.arg("--home")
        .arg(home)
        .env("AISA_PASSPHRASE", "node process test")
        .env_remove("AISA_SECRETS_BACKEND")
        .env_remove("OPENAI_API_KEY")
        .env_remove("AISA_NODE_HOME")
        .env("AISA_JS_RUNTIME", "/nonexistent-probe");
    cmd
}

/// Logs a new device in with the binary, installs hello-ai, stores `key`; returns the
/// device id and what `keys set` said.
fn set_up(system: &System, home: &Path, key: &str) -> (String, String) {
    let relay_url = format!("http://{}", system.relay().http_addr);
    let mut login = node(home);
    login.args([
        "login",
        "--relay",
        &relay_url,
        "--email",
        "alice@example.com",
        "--password-stdin",
        "--name",
        "process-test",
    ]);
    run_to_end(login, system::PASSWORD);
    let mut set = node(home);
    set.args(["keys", "set", "openai", "--stdin"]);
    let said = run_to_end(set, &format!("{key}\n"));
    let mut install = node(home);
    install
        .args(["apps", "install-local"])
        .arg(aisa_testkit::guest::hello_ai_wasm())
        .args(["--id", "hello-ai", "--action", "write,echo"]);
    run_to_end(install, "");
    let config = std::fs::read_to_string(home.join("node.toml")).unwrap();
    let device_id = config
        .lines()
        .find_map(|l| l.strip_prefix("device_id = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    (device_id, said)
}

/// A system, a fake provider that takes any key, the node's home set up by [`set_up`], a
/// folder for the node's console output, and the device id.
async fn keyless_set_up() -> (
    System,
    aisa_testkit::provider::FakeProvider,
    tempfile::TempDir,
    tempfile::TempDir,
    String,
) {
    let system = System::start().await;
    let fake = aisa_testkit::provider::start(([127, 0, 0, 1], 0).into(), None)
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let console = tempfile::tempdir().unwrap();
    let (device_id, _) = set_up(&system, home.path(), "sk-unused-by-the-fake");
    (system, fake, home, console, device_id)
}

fn start_run(home: &Path, base_url: &str, console: &Path) -> Killed {
    start_run_with(home, base_url, console, &[])
}

/// Starts `cmd` with no stdin and its stdout and stderr in `console`'s files.
fn spawn_logged(mut cmd: Command, console: &Path) -> Killed {
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(console.join("stdout")).unwrap())
        .stderr(std::fs::File::create(console.join("stderr")).unwrap());
    Killed(cmd.spawn().unwrap())
}

/// Waits for the node to exit, failing 15 s after `since` (when it was told to stop,
/// by `how`); returns its exit status.
async fn stopped(
    node: &mut Killed,
    since: Instant,
    how: &str,
    console: &Path,
) -> std::process::ExitStatus {
    loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            since.elapsed() < Duration::from_secs(15),
            "the node did not stop after {how}: {}",
            std::fs::read_to_string(console.join("stderr")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 2 s) until the relay no longer lists `device_id`: the node closed its
/// connection saying it is leaving.
async fn relay_sees_it_leave(system: &System, device_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while system
        .relay()
        .state
        .devices
        .registry
        .get(device_id)
        .is_some()
    {
        assert!(Instant::now() < deadline, "the relay still lists the node");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `write` until the node is online and it succeeds; returns the reply text.
async fn run_one(system: &System, device_id: &str, topic: &str, console: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "no action succeeded on the node (stdout: {:?}, stderr: {:?})",
            std::fs::read_to_string(console.join("stdout")),
            std::fs::read_to_string(console.join("stderr"))
        );
        let reply = system::run_action(
            system,
            device_id,
            system::execute("hello-ai", "write", serde_json::json!({ "topic": topic })),
        )
        .await;
        match reply.last().map(|e| &e.body) {
            Some(Body::StreamEnd { .. }) => return system::chunks_text(&reply),
            Some(Body::Error { code, .. }) if code == "device_offline" => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            other => panic!(
                "action failed: {other:?} (stderr: {:?})",
                std::fs::read_to_string(console.join("stderr"))
            ),
        }
    }
}

async fn make_room(system: &System, device_id: &str) {
    system
        .relay()
        .state
        .store
        .revoke_device(&system.relay_user_id(), device_id)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_logs_in_keeps_its_key_in_the_os_store_and_runs_an_action() {
    let system = System::start().await;
    let key = format!("sk-process-test-{}", std::process::id());
    let fake = aisa_testkit::provider::start(([127, 0, 0, 1], 0).into(), Some(key.clone()))
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let console = tempfile::tempdir().unwrap();
    let (device_id, said) = set_up(&system, home.path(), &key);
    // `auto` chose the OS's durable store: the Credential Manager on Windows; on a
    // Linux without a desktop session, the encrypted file.
    let expected = if std::env::var("AISA_NODE_EXPECT_STORE").is_ok() {
        std::env::var("AISA_NODE_EXPECT_STORE").unwrap()
    } else if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() {
        "secret-service".to_owned()
    } else {
        "file".to_owned()
    };
    assert!(said.contains(&format!("in the {expected} store")), "{said}");
    let _node = start_run(home.path(), &fake.base_url(), console.path());
    let text = run_one(&system, &device_id, "platform smoke", console.path()).await;
    assert!(text.contains("platform smoke"), "{text}");
    // Which way the node reached the relay (under Wine: TCP, as Wine 8 refuses a UDP
    // socket option quinn sets), for the script's log.
    let stderr = std::fs::read_to_string(console.path().join("stderr")).unwrap_or_default();
    for line in stderr
        .lines()
        .filter(|l| l.contains("connected to the relay") || l.contains("UDP"))
    {
        eprintln!("node: {line}");
    }
    assert!(
        fake.stats
            .completed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1,
        "the provider got the stored key and answered"
    );
    make_room(&system, &device_id).await;
}

/// SIGTERM while an action runs: the action finishes, the node exits 0 and the relay
/// sees it leave at once.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_action_finish_and_tells_the_relay() {
    if std::env::var_os("AISA_NODE_RUNNER").is_some() {
        return; // signals to a binary under another runner: the next test
    }
    stop_mid_action(libc::SIGTERM, "SIGTERM").await;
}

/// The Windows build under Wine (`AISA_NODE_RUNNER=wine`): Wine turns a SIGINT to the
/// process into the console's CTRL_C_EVENT, which the node drains on like SIGTERM (the
/// same handler path as Ctrl-Break and console close, which Wine cannot raise from
/// outside the process). Without a runner it does nothing: the test above covers it.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_ctrl_c_lets_the_running_action_finish_under_wine() {
    if std::env::var_os("AISA_NODE_RUNNER").is_none() {
        return;
    }
    stop_mid_action(libc::SIGINT, "Ctrl-C").await;
}

/// Starts a slow action, sends `signal` once its first chunk is here, and checks that
/// it finishes, the node exits 0 naming `said` and the relay sees it leave at once.
#[cfg(unix)]
async fn stop_mid_action(signal: libc::c_int, said: &str) {
    let (system, fake, home, console, device_id) = keyless_set_up().await;
    let mut node = start_run(home.path(), &fake.base_url(), console.path());
    run_one(&system, &device_id, "warm up", console.path()).await;

    // A slow action (a chunk every 200 ms); SIGTERM once its first chunk is here.
    let session = system.browser().await;
    let request = system::execute(
        "hello-ai",
        "write",
        serde_json::json!({ "topic": "[slow] draining" }),
    );
    let header = system.header(&device_id);
    let (_send, mut recv) = system::open(&session, &[header.encode(), request.encode()]).await;
    let first = aisa_tunnel::io::read_frame(&mut recv, aisa_tunnel::MAX_FRAME_LEN)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        aisa_tunnel::Envelope::decode(&first).unwrap().body,
        Body::StreamChunk { .. }
    ));
    let pid = node.0.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid, with a plain signal number.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0);
    let signalled = Instant::now();

    // The rest of the action arrives, ending with STREAM_END.
    let rest = system::read_reply(&mut recv).await;
    assert!(
        matches!(rest.last().map(|e| &e.body), Some(Body::StreamEnd { .. })),
        "the running action was finished, not cut: {rest:?}"
    );
    assert!(system::chunks_text(&rest).contains("draining") || rest.len() > 1);

    // The process ends on its own, successfully, within the drain bound.
    let status = stopped(&mut node, signalled, said, console.path()).await;
    assert!(status.success(), "exit status {status:?}");
    let stderr = std::fs::read_to_string(console.path().join("stderr")).unwrap();
    assert!(stderr.contains(said), "{stderr}");
    // The relay knows at once (its heartbeat watch would take three intervals, QUIC's
    // idle timeout longer): the node closed its connection saying it is leaving.
    relay_sees_it_leave(&system, &device_id).await;
    make_room(&system, &device_id).await;
}

/// The Windows build's tray icon under Wine, with a display (scripts/wine-test.sh runs
/// it on Xvfb and sets `AISA_TRAY_CLICK_EXE`; without that variable it does nothing):
/// the node adds its notification-area icon (Shell_NotifyIconW succeeds against Wine's
/// Explorer: the node logs "tray icon shown"); a click on it opens the desktop face (the
/// face's login URL reaches the opener); and choosing **Quit** in its menu stops the
/// node as Ctrl-C does: exit 0, and the relay sees it leave at once. The clicks come
/// from `tray-click.exe` (desktop-node/tests/windows/tray-click.c), which sends the
/// icon's window what Explorer sends for a click, waits for the node's popup menu to
/// show, and picks its last item, Quit, with the keyboard (the node logs the menu's
/// items: Wine does not let another process read a menu). The same program is the
/// node's face opener here (`AISA_NODE_OPENER`): it writes the URL it is given to a file.
///
/// Also the toast's id: with the installer's registration of the AppUserModelID (its
/// Start-menu shortcut and `HKCU\Software\Classes\AppUserModelId\AISuperApp.DesktopNode`,
/// made here as desktop-node.nsi makes them) the node takes it; without (a portable
/// run) it falls back to Windows PowerShell's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_tray_opens_the_face_and_quit_stops_the_node_under_wine() {
    let (Some(clicker), Ok(runner)) = (
        std::env::var_os("AISA_TRAY_CLICK_EXE"),
        std::env::var("AISA_NODE_RUNNER"),
    ) else {
        return;
    };
    let (system, fake, home, console, device_id) = keyless_set_up().await;

    let registration = InstallerAppId::register(&runner);
    let opened = console.path().join("opened.txt");
    let mut node = node(home.path());
    node.env("RUST_LOG", "info")
        .env("AISA_NODE_OPENER", windows_path(Path::new(&clicker)))
        .env("AISA_TRAY_OPENED", windows_path(&opened))
        .args(["run", "--face", "--ai-provider", "openai", "--ai-base-url"])
        .arg(fake.base_url());
    let mut node = spawn_logged(node, console.path());
    run_one(&system, &device_id, "tray", console.path()).await;
    let stderr = wait_for_line(console.path(), "tray icon shown (notification area)").await;
    assert!(
        stderr.contains("toasts as AI SuperApp (AppUserModelID AISuperApp.DesktopNode"),
        "{stderr}"
    );

    // A click on the icon opens the face: its login URL, with this launch's token.
    let clicked = tray_click(&runner, &clicker, "open");
    assert!(clicked.status.success(), "{clicked:?}");
    let face: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.path().join("face.json")).unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        if let Ok(url) = std::fs::read_to_string(&opened)
            && url.ends_with('\n')
        {
            break url.trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the click opened nothing: {}",
            std::fs::read_to_string(console.path().join("stderr")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(Some(url.as_str()), face["url"].as_str());
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let chose = tray_click(&runner, &clicker, "quit");
    let said = String::from_utf8_lossy(&chose.stdout).replace('\r', "");
    eprintln!("{said}");
    assert!(chose.status.success(), "{said}");
    let chosen = Instant::now();
    let status = stopped(&mut node, chosen, "Quit", console.path()).await;
    assert!(status.success(), "exit status {status:?}");
    let stderr = std::fs::read_to_string(console.path().join("stderr")).unwrap();
    // The menu the right click opened.
    assert!(
        stderr.contains("tray: menu opened: [Connected to the relay] [Open] [Quit]"),
        "{stderr}"
    );
    assert!(stderr.contains("tray: Quit chosen; stopping"), "{stderr}");
    relay_sees_it_leave(&system, &device_id).await;

    // A portable run (no installer's shortcut): the toasts fall back to PowerShell's id.
    drop(registration);
    let _node = start_run(home.path(), &fake.base_url(), console.path());
    let stderr = wait_for_line(console.path(), "desktop notifications on").await;
    assert!(stderr.contains("toasts as Windows PowerShell"), "{stderr}");
    make_room(&system, &device_id).await;
}

/// Runs `tray-click.exe` (`clicker`) under `runner` to do `what` (`open` or `quit`).
fn tray_click(runner: &str, clicker: &std::ffi::OsStr, what: &str) -> std::process::Output {
    Command::new(runner)
        .arg(clicker)
        .arg(what)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `path` as Wine's Windows programs name it (`winepath -w`).
fn windows_path(path: &Path) -> String {
    let out = Command::new("winepath")
        .arg("-w")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits (up to a minute: Wine starts slowly) until the node's stderr holds `line`;
/// returns that stderr.
async fn wait_for_line(console: &Path, line: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stderr = std::fs::read_to_string(console.join("stderr")).unwrap_or_default();
        if stderr.contains(line) {
            return stderr;
        }
        assert!(
            Instant::now() < deadline,
            "no '{line}' from the node: {stderr}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the Windows installer leaves for the toasts' id, in the Wine prefix: the
/// Start-menu shortcut (an empty stand-in: the node only looks for the file) and the
/// AppUserModelID's registration. Removed on drop.
struct InstallerAppId {
    runner: String,
    folder: std::path::PathBuf,
}

const APP_ID_KEY: &str = r"HKCU\Software\Classes\AppUserModelId\AISuperApp.DesktopNode";

impl InstallerAppId {
    fn register(runner: &str) -> InstallerAppId {
        let appdata = Command::new(runner)
            .args(["cmd", "/c", "echo", "%APPDATA%"])
            .output()
            .unwrap();
        let appdata = String::from_utf8_lossy(&appdata.stdout).trim().to_owned();
        let unix = Command::new("winepath")
            .args(["-u", &appdata])
            .output()
            .unwrap();
        let appdata = std::path::PathBuf::from(String::from_utf8_lossy(&unix.stdout).trim());
        assert!(
            appdata.is_dir(),
            "no %APPDATA% in the Wine prefix: {appdata:?}"
        );
        let folder = appdata.join("Microsoft/Windows/Start Menu/Programs/AI SuperApp");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("AI SuperApp desktop node.lnk"), b"").unwrap();
        let added = Command::new(runner)
            .args([
                "reg",
                "add",
                APP_ID_KEY,
                "/v",
                "DisplayName",
                "/d",
                "AI SuperApp",
                "/f",
            ])
            .output()
            .unwrap();
        assert!(added.status.success(), "{added:?}");
        InstallerAppId {
            runner: runner.to_owned(),
            folder,
        }
    }
}

impl Drop for InstallerAppId {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
        let _ = Command::new(&self.runner)
            .args(["reg", "delete", APP_ID_KEY, "/f"])
            .output();
    }
}

/// `run` with more environment (the models a run may choose).
fn start_run_with(home: &Path, base_url: &str, console: &Path, env: &[(&str, &str)]) -> Killed {
    let mut run = node(home);
    run.env("RUST_LOG", "info").envs(env.iter().copied());
    run.args(["run", "--ai-provider", "openai", "--ai-base-url", base_url]);
    spawn_logged(run, console)
}

/// Copies a folder's files (not sub-folders).
fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Protocol 1.2 on the real binary: DEVICE_STATUS names the provider and the models a
/// run may choose (never the key) and the installed apps the node cannot run, each with
/// a sentence; a run with a chosen model reaches the provider with that model, no model
/// means the default, and a model the node does not offer is refused in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_models_and_the_apps_that_cannot_run_and_a_run_uses_the_chosen_model() {
    let system = System::start().await;
    let key = format!("sk-models-test-{}", std::process::id());
    let fake = aisa_testkit::provider::start(([127, 0, 0, 1], 0).into(), Some(key.clone()))
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let console = tempfile::tempdir().unwrap();
    let (device_id, _) = set_up(&system, home.path(), &key);
    let apps = home.path().join("miniapps");
    // An installed app whose code no longer loads (a damaged install)…
    let mut install = node(home.path());
    install
        .args(["apps", "install-local"])
        .arg(aisa_testkit::guest::hello_ai_wasm())
        .args(["--id", "broken-app", "--action", "write"]);
    run_to_end(install, "");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(apps.join("broken-app/state.json")).unwrap())
            .unwrap();
    let broken_version = state["active"].as_str().unwrap().to_owned();
    std::fs::write(
        apps.join("broken-app")
            .join(&broken_version)
            .join("logic.wasm"),
        b"\0asm not really",
    )
    .unwrap();
    // …and a JavaScript app on a node without the JS runtime (`node()` points
    // AISA_JS_RUNTIME nowhere): the example's bundle files, as the installer leaves them.
    let examples = aisa_testkit::guest::workspace_root().join("examples/seo-writer");
    copy_files(&examples, &apps.join("seo-writer/0.1.0"));
    std::fs::write(
        apps.join("seo-writer/state.json"),
        r#"{"active":"0.1.0","enabled":true}"#,
    )
    .unwrap();

    let _node = start_run_with(
        home.path(),
        &fake.base_url(),
        console.path(),
        &[
            ("AISA_AI_MODEL", "fake-small"),
            ("AISA_AI_MODELS", "fake-large,fake-small"),
        ],
    );
    run_one(&system, &device_id, "warm up", console.path()).await;
    assert_eq!(
        fake.stats.models().last().map(String::as_str),
        Some("fake-small")
    );

    let reply = system::run_action(
        &system,
        &device_id,
        aisa_tunnel::Envelope::new(1, Body::GetStatus),
    )
    .await;
    let Some(Body::DeviceStatus {
        apps: running,
        providers,
        unloadable,
        ..
    }) = reply.last().map(|e| e.body.clone())
    else {
        panic!("no DEVICE_STATUS: {reply:?}");
    };
    assert_eq!(
        running.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["hello-ai"],
        "the apps that cannot run are not listed as running"
    );
    assert_eq!(
        providers,
        [aisa_tunnel::message::ProviderStatus {
            name: "openai".into(),
            models: vec!["fake-small".into(), "fake-large".into()],
            configured: true,
        }]
    );
    let reasons: Vec<(&str, &str, &str)> = unloadable
        .iter()
        .map(|u| (u.id.as_str(), u.version.as_str(), u.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(
        (reasons[0].0, reasons[0].1),
        ("broken-app", broken_version.as_str())
    );
    assert!(
        reasons[0]
            .2
            .starts_with("Its code does not load on this desktop"),
        "{reasons:?}"
    );
    assert_eq!((reasons[1].0, reasons[1].1), ("seo-writer", "0.1.0"));
    assert!(
        reasons[1]
            .2
            .starts_with("This desktop has no JavaScript runtime"),
        "{reasons:?}"
    );
    // Names only: the key is nowhere in the status bytes.
    let bytes = reply.last().unwrap().encode();
    assert!(!String::from_utf8_lossy(&bytes).contains(&key));

    // A run with a chosen model: the provider is asked for that model.
    let with_model = |model: &str| {
        aisa_tunnel::Envelope::new(
            2,
            Body::ExecuteAction {
                app_id: "hello-ai".into(),
                action: "write".into(),
                payload: serde_json::json!({ "topic": "models" }).to_string(),
                model: Some(model.into()),
            },
        )
    };
    let reply = system::run_action(&system, &device_id, with_model("fake-large")).await;
    assert!(
        matches!(reply.last().map(|e| &e.body), Some(Body::StreamEnd { .. })),
        "{reply:?}"
    );
    assert_eq!(
        fake.stats.models().last().map(String::as_str),
        Some("fake-large")
    );
    // One the node does not offer: refused with a sentence, the provider never asked.
    let asked = fake.stats.models().len();
    let reply = system::run_action(&system, &device_id, with_model("gpt-5")).await;
    let (code, message) = system::error_of(&reply);
    assert_eq!(code, aisa_tunnel::ErrorCode::InvalidPayload);
    assert_eq!(
        message,
        "This desktop does not offer the model “gpt-5”; it offers fake-small, fake-large."
    );
    assert_eq!(fake.stats.models().len(), asked);
    make_room(&system, &device_id).await;
}
