//! Desktop notifications for install requests, through the real `desktop-node` binary
//! on a real relay on loopback and a real notification daemon: Debian's `dunst`, on a
//! private D-Bus session bus (a `dbus-daemon` this test starts with a configuration of
//! its own, so nothing else answers as `org.freedesktop.Notifications`) and a private
//! X server (`Xvfb`, which dunst draws on).
//!
//! - `an_install_request_is_announced_and_the_click_opens_the_face`: a browser-role
//!   client sends INSTALL_APP; dunst receives a notification from "AI SuperApp" naming
//!   the app and what it wants, with the `default` action, and draws it on the screen
//!   (kept as `target/notify-artifacts/notification.png`); `dunstctl action 0` clicks it
//!   and the node opens the face's login URL (through `AISA_NODE_OPENER`, a recording
//!   script); that URL signs in and approves; the browser's install ends `installed`
//!   and the notification is withdrawn. The tray icon, through a real
//!   StatusNotifierWatcher (Debian's `status-notifier-watcher`) with the test as the
//!   panel (host): registered, asking for attention while the request waits, calm
//!   after; its click opens the face; its menu's Quit stops the node cleanly.
//! - `without_a_session_bus_the_node_says_so_once_and_installs`: no D-Bus session (a
//!   server): one log line each for notifications and the tray, and the install is
//!   approved and completes as ever.
//!
//! Needs `dbus-daemon`, `Xvfb`, `dunst`, `dunstctl`, `status-notifier-watcher` and
//! `gdbus` (scripts/prereqs.sh installs them); the first test is skipped without them,
//! unless `CI` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aisa_testkit::system::{self, System, WAIT};
use aisa_tunnel::{Body, Envelope, MAX_FRAME_LEN, StreamKind};
use common::{Killed, node_cmd, run_to_end};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, ORIGIN};

const PASSPHRASE: &str = "notify test passphrase";
const APP: &str = "notify-echo";
const NAME: &str = "Notify Echo";
/// How long an approved install may take: the node compiles the app's module, which a
/// debug build on a busy 2-core machine has taken over 20 s to do.
const INSTALL_WAIT: Duration = Duration::from_secs(120);

/// A bundle of the hello-ai module as `APP` 0.1.0 asking for the model and one host.
fn bundle() -> Vec<u8> {
    aisa_testkit::guest::echo_bundle(APP, NAME, "Echoes text; announced on the desktop.")
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits up to `limit` for `check` to answer `Some`.
async fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A private desktop session: an X server, a session bus and dunst on both.
struct Desktop {
    dir: tempfile::TempDir,
    bus: String,
    display: String,
    // Dropped (killed) in this order: the tray watcher, dunst, then the bus, then X.
    _watcher: Killed,
    _dunst: Killed,
    _bus: Killed,
    _x: Killed,
}

impl Desktop {
    /// Starts one, or `None` (the test is skipped) when a program is missing outside CI.
    async fn start() -> Option<Desktop> {
        let missing: Vec<&str> = [
            "dbus-daemon",
            "Xvfb",
            "dunst",
            "dunstctl",
            "status-notifier-watcher",
            "gdbus",
        ]
        .into_iter()
        .filter(|p| !have(p))
        .collect();
        if !missing.is_empty() {
            assert!(
                std::env::var_os("CI").is_none(),
                "missing {missing:?} in CI (scripts/prereqs.sh test installs them)"
            );
            eprintln!("skipped: missing {missing:?} (scripts/prereqs.sh test installs them)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bus");
        // A session bus of our own that can start nothing (no <servicedir>): only the
        // dunst started below can own org.freedesktop.Notifications.
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let bus_process = Killed(
            Command::new("dbus-daemon")
                .arg(format!("--config-file={}", config.display()))
                .arg("--nofork")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("bus.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        let bus = format!("unix:path={}", socket.display());
        wait_for(WAIT, "the session bus", || socket.exists().then_some(())).await;

        // An X display nobody uses: the first free number from a per-process start.
        let mut x = None;
        for n in 0..50 {
            let number = 100 + (std::process::id() as usize + n) % 400;
            if Path::new(&format!("/tmp/.X{number}-lock")).exists() {
                continue;
            }
            let mut child = Command::new("Xvfb")
                .args([
                    &format!(":{number}"),
                    "-screen",
                    "0",
                    "1024x768x24",
                    "-nolisten",
                    "tcp",
                    // A black root window, and the screen as an XWD file (screenshots).
                    "-br",
                    "-fbdir",
                ])
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("xvfb.log")).unwrap())
                .spawn()
                .unwrap();
            let socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            let up = loop {
                if socket.exists() {
                    break true;
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let child = Killed(child);
            if up {
                x = Some((format!(":{number}"), child));
                break;
            }
        }
        let (display, x) = x.expect("an X display for dunst");

        std::fs::write(dir.path().join("dunstrc"), "").unwrap();
        let dunst = Killed(
            Command::new("dunst")
                .arg("-print")
                .arg("-config")
                .arg(dir.path().join("dunstrc"))
                .env("DISPLAY", &display)
                .env("DBUS_SESSION_BUS_ADDRESS", &bus)
                .stdout(std::fs::File::create(dir.path().join("dunst.out")).unwrap())
                .stderr(std::fs::File::create(dir.path().join("dunst.err")).unwrap())
                .spawn()
                .unwrap(),
        );
        // The tray's StatusNotifierWatcher (Debian's haskell-status-notifier-item-utils).
        let watcher = Killed(
            Command::new("status-notifier-watcher")
                .env("DBUS_SESSION_BUS_ADDRESS", &bus)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("watcher.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        let desktop = Desktop {
            dir,
            bus,
            display,
            _watcher: watcher,
            _dunst: dunst,
            _bus: bus_process,
            _x: x,
        };
        // dunst owns org.freedesktop.Notifications once dunstctl gets an answer.
        wait_for(WAIT, "dunst on the bus", || {
            desktop.dunstctl(&["is-paused"]).map(|_| ()).ok()
        })
        .await;
        // The test is the tray's host (what a panel is): it registers with the watcher,
        // then reads the items and clicks them over D-Bus as a panel does.
        wait_for(WAIT, "the StatusNotifierWatcher", || {
            desktop
                .gdbus(
                    "org.kde.StatusNotifierWatcher",
                    "/StatusNotifierWatcher",
                    "org.kde.StatusNotifierWatcher.RegisterStatusNotifierHost",
                    &["org.kde.StatusNotifierHost-notify-test"],
                )
                .ok()
        })
        .await;
        Some(desktop)
    }

    /// `gdbus call` of `method` on `dest` `path` with `args` (GVariant text).
    fn gdbus(&self, dest: &str, path: &str, method: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new("gdbus")
            .args([
                "call",
                "--session",
                "--dest",
                dest,
                "--object-path",
                path,
                "--method",
                method,
                "--",
            ])
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The D-Bus name of the one tray item registered with the watcher.
    fn tray_item(&self) -> Option<String> {
        let items = self
            .gdbus(
                "org.kde.StatusNotifierWatcher",
                "/StatusNotifierWatcher",
                "org.freedesktop.DBus.Properties.Get",
                &[
                    "org.kde.StatusNotifierWatcher",
                    "RegisteredStatusNotifierItems",
                ],
            )
            .ok()?;
        // `(<['org.kde.StatusNotifierItem-123-0']>,)`, perhaps with a path after a `/`.
        let start = items.find("org.kde.StatusNotifierItem-")?;
        let name: String = items[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            .collect();
        Some(name)
    }

    /// A property of the tray item `item`, as gdbus prints it.
    fn tray_property(&self, item: &str, name: &str) -> String {
        self.gdbus(
            item,
            "/StatusNotifierItem",
            "org.freedesktop.DBus.Properties.Get",
            &["org.kde.StatusNotifierItem", name],
        )
        .unwrap()
    }

    /// `dunstctl ARGS` on this desktop: its output, or its error output.
    fn dunstctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("dunstctl")
            .args(args)
            .env("DISPLAY", &self.display)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The screen as an RGB image: (width, height, pixels), from the XWD file Xvfb keeps
    /// (`-fbdir`: big-endian header, colour map, then 32-bit little-endian pixels).
    fn screen(&self) -> (usize, usize, Vec<[u8; 3]>) {
        let xwd = std::fs::read(self.dir.path().join("Xvfb_screen0")).unwrap();
        let field =
            |i: usize| u32::from_be_bytes(xwd[i * 4..i * 4 + 4].try_into().unwrap()) as usize;
        let (header, width, height) = (field(0), field(4), field(5));
        let (byte_order, bits_per_pixel, bytes_per_line, colours) =
            (field(7), field(11), field(12), field(19));
        assert_eq!(
            (byte_order, bits_per_pixel),
            (0, 32),
            "an LSB-first 32-bit screen"
        );
        let start = header + colours * 12;
        let mut pixels = Vec::with_capacity(width * height);
        for y in 0..height {
            let row = &xwd[start + y * bytes_per_line..];
            for x in 0..width {
                let p = &row[x * 4..x * 4 + 4];
                pixels.push([p[2], p[1], p[0]]);
            }
        }
        (width, height, pixels)
    }

    /// Every notification dunst received, as it printed them.
    fn received(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dunst.out")).unwrap_or_default()
    }
}

/// Writes an RGB image as a PNG (stored with zlib, no filter).
fn write_png(path: &Path, width: usize, height: usize, pixels: &[[u8; 3]]) {
    use std::io::Write;
    let mut raw = Vec::with_capacity(height * (1 + width * 3));
    for row in pixels.chunks(width) {
        raw.push(0);
        raw.extend(row.iter().flatten());
    }
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    zlib.write_all(&raw).unwrap();
    let idat = zlib.finish().unwrap();
    let mut ihdr = Vec::new();
    ihdr.extend((width as u32).to_be_bytes());
    ihdr.extend((height as u32).to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &idat), (b"IEND", &Vec::new())] {
        png.extend((data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        png.extend(kind);
        png.extend(data.iter());
        png.extend(crc.sum().to_be_bytes());
    }
    std::fs::write(path, png).unwrap();
}

/// A relay with the app published and a real node logged in as a device of the test
/// user, running with `--face` and the session bus `bus` (`None`: no session bus).
struct Setup {
    system: System,
    home: tempfile::TempDir,
    console: tempfile::TempDir,
    device_id: String,
    node: Killed,
    /// The login URL `desktop-node face --print` gave.
    login_url: String,
    /// What the node opened (one per line), through the recording opener.
    opened: PathBuf,
}

fn node(home: &Path) -> Command {
    node_cmd(home, "file", PASSPHRASE)
}

impl Setup {
    async fn start(bus: Option<&str>) -> Setup {
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
            "notify-test",
        ]);
        run_to_end(login, system::PASSWORD);
        let config = std::fs::read_to_string(home.path().join("node.toml")).unwrap();
        let device_id = config
            .lines()
            .find_map(|l| l.strip_prefix("device_id = "))
            .unwrap()
            .trim_matches('"')
            .to_owned();
        // `login` writes the default: notifications on.
        assert!(config.contains("[notify]\nenabled = true"), "{config}");

        let opened = console.path().join("opened.txt");
        let opener = console.path().join("opener.sh");
        std::fs::write(
            &opener,
            format!("#!/bin/sh\necho \"$1\" >> '{}'\n", opened.display()),
        )
        .unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut run = node(home.path());
        run.env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env("AISA_NODE_OPENER", &opener)
            .env("AISA_JS_RUNTIME", "/nonexistent-probe")
            // Nothing of the test runner's own desktop session.
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("XDG_RUNTIME_DIR")
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
        match bus {
            Some(bus) => run.env("DBUS_SESSION_BUS_ADDRESS", bus),
            None => run.env_remove("DBUS_SESSION_BUS_ADDRESS"),
        };
        let node_process = Killed(run.spawn().unwrap());

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
        let setup = Setup {
            system,
            home,
            console,
            device_id,
            node: node_process,
            login_url,
            opened,
        };
        // Connected, so that the browser's request reaches it.
        wait_for(Duration::from_secs(60), "the node to connect", || {
            setup
                .node_log()
                .contains("connected to the relay")
                .then_some(())
        })
        .await;
        setup
    }

    fn node_log(&self) -> String {
        format!(
            "stdout: {}\nstderr: {}",
            std::fs::read_to_string(self.console.path().join("stdout")).unwrap_or_default(),
            std::fs::read_to_string(self.console.path().join("stderr")).unwrap_or_default()
        )
    }

    /// `http://127.0.0.1:PORT`.
    fn base(&self) -> String {
        let host = self
            .login_url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .unwrap();
        format!("http://{host}")
    }
}

/// An INSTALL_APP stream from a browser of the test user to the test device.
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
    ($setup:expr, $recv:expr, $want:expr) => {
        read_states!($setup, $recv, $want, WAIT)
    };
    ($setup:expr, $recv:expr, $want:expr, $limit:expr) => {{
        let mut last: Option<serde_json::Value> = None;
        let mut end: Option<Envelope> = None;
        loop {
            let frame = tokio::time::timeout(
                $limit,
                aisa_tunnel::io::read_frame(&mut $recv, MAX_FRAME_LEN),
            )
            .await
            .unwrap_or_else(|_| panic!("no install state in time\n{}", $setup.node_log()))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_request_is_announced_and_the_click_opens_the_face() {
    let Some(desktop) = Desktop::start().await else {
        return;
    };
    let setup = Setup::start(Some(&desktop.bus)).await;
    wait_for(WAIT, "the node's notifications to be on", || {
        setup
            .node_log()
            .contains("desktop notifications on")
            .then_some(())
    })
    .await;
    assert!(
        setup.node_log().contains("dunst"),
        "the log names the service: {}",
        setup.node_log()
    );
    assert_eq!(desktop.received(), "", "nothing announced before a request");

    let (_session, mut send, mut recv) = request_install!(setup);
    let (state, end) = read_states!(setup, recv, "pending_approval");
    assert!(end.is_none(), "{end:?}");
    let sha256 = state.unwrap()["sha256"].as_str().unwrap().to_owned();

    // dunst received it: from us, naming the app and what it wants, clickable.
    let received = wait_for(WAIT, "the notification at dunst", || {
        let received = desktop.received();
        received.contains(NAME).then_some(received)
    })
    .await;
    for expected in [
        "appname: 'AI SuperApp'",
        "summary: 'Install request: Notify Echo 0.1.0'",
        "body: 'Notify Echo wants: use your AI provider (with your key, on this machine); connect to api.example.com.\nClick to review it in the desktop face.'",
        "timeout: 0",
        "\"default\": \"Review\"",
    ] {
        assert!(
            received.contains(expected),
            "no {expected:?} in:\n{received}"
        );
    }
    assert_eq!(desktop.dunstctl(&["count", "displayed"]).unwrap(), "1");
    // And drew it: dunst's normal background (#285577) is on the black screen.
    let (width, height, pixels) = wait_for(WAIT, "dunst to draw the notification", || {
        let (width, height, pixels) = desktop.screen();
        let drawn = pixels.iter().filter(|p| **p == [0x28, 0x55, 0x77]).count();
        (drawn > 1000).then_some((width, height, pixels))
    })
    .await;
    let artifacts = std::env::var_os("AISA_NOTIFY_ARTIFACTS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/notify-artifacts"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&artifacts).unwrap();
    write_png(&artifacts.join("notification.png"), width, height, &pixels);

    // The tray icon, as the panel sees it: registered, asking for attention.
    let item = wait_for(WAIT, "the tray item at the watcher", || desktop.tray_item()).await;
    assert_eq!(desktop.tray_property(&item, "Title"), "(<'AI SuperApp'>,)");
    wait_for(WAIT, "the tray to show the waiting request", || {
        (desktop.tray_property(&item, "Status") == "(<'NeedsAttention'>,)").then_some(())
    })
    .await;
    let tip = desktop.tray_property(&item, "ToolTip");
    assert!(
        tip.contains("Connected to the relay; 1 install request waits"),
        "{tip}"
    );

    // The person clicks it: the node opens its face (the login URL with this launch's
    // token), and nothing else.
    assert!(!setup.opened.exists());
    desktop.dunstctl(&["action", "0"]).unwrap();
    let opened = wait_for(WAIT, "the node to open the face", || {
        std::fs::read_to_string(&setup.opened).ok()
    })
    .await;
    assert_eq!(opened.trim(), setup.login_url, "{}", setup.node_log());

    // That URL signs in, and the request is approved there.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = http.get(opened.trim()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let pending: serde_json::Value = http
        .get(format!("{}/api/pending", setup.base()))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pending["pending"][0]["name"], NAME, "{pending}");
    let decided = http
        .post(format!("{}/api/pending/decide", setup.base()))
        .header(COOKIE, &cookie)
        .header(ORIGIN, setup.base())
        .json(&serde_json::json!({
            "id": APP, "version": "0.1.0", "sha256": sha256, "decision": "approve"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), StatusCode::OK, "{}", setup.node_log());
    let (last, end) = read_states!(setup, recv, "never", INSTALL_WAIT);
    assert_eq!(last.unwrap()["state"], "installed");
    assert!(matches!(end.map(|e| e.body), Some(Body::StreamEnd { .. })));
    let _ = send.finish().await;
    assert!(setup.home.path().join("miniapps").join(APP).exists());

    // Decided: the notification is withdrawn.
    wait_for(WAIT, "the notification to be withdrawn", || {
        (desktop.dunstctl(&["count", "displayed"]).unwrap() == "0").then_some(())
    })
    .await;
    assert_eq!(
        desktop.received().matches("appname: 'AI SuperApp'").count(),
        1,
        "one notification per request"
    );

    // The tray: nothing waits any more; a click opens the face.
    wait_for(WAIT, "the tray to be calm", || {
        (desktop.tray_property(&item, "Status") == "(<'Active'>,)").then_some(())
    })
    .await;
    desktop
        .gdbus(
            &item,
            "/StatusNotifierItem",
            "org.kde.StatusNotifierItem.Activate",
            &["0", "0"],
        )
        .unwrap();
    wait_for(WAIT, "the tray's click to open the face", || {
        let opened = std::fs::read_to_string(&setup.opened).unwrap_or_default();
        (opened.lines().count() == 2).then_some(())
    })
    .await;
    let opened = std::fs::read_to_string(&setup.opened).unwrap();
    assert!(opened.lines().all(|l| l == setup.login_url), "{opened}");

    // Its menu, as the panel shows it: the state, Open, Quit. Quit stops the node
    // cleanly, as SIGTERM does.
    let layout = desktop
        .gdbus(
            &item,
            "/MenuBar",
            "com.canonical.dbusmenu.GetLayout",
            &["0", "-1", "[]"],
        )
        .unwrap();
    for label in ["'Connected to the relay'", "'Open'", "'Quit'"] {
        assert!(layout.contains(label), "no {label} in {layout}");
    }
    let quit_id = layout
        .split("<(")
        .find(|entry| entry.contains("'label': <'Quit'>"))
        .and_then(|entry| entry.split(',').next())
        .expect("the Quit item's id")
        .trim()
        .to_owned();
    let clicked = desktop.gdbus(
        &item,
        "/MenuBar",
        "com.canonical.dbusmenu.Event",
        &[&quit_id, "'clicked'", "<0>", "0"],
    );
    // The node may be gone before its answer is (it quits, as asked).
    if let Err(err) = clicked {
        assert!(err.contains("NoReply"), "{err}");
    }
    let mut node = setup.node;
    let status = wait_for(
        Duration::from_secs(30),
        "the node to stop after Quit",
        || node.0.try_wait().unwrap(),
    )
    .await;
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(setup.console.path().join("stderr")).unwrap();
    assert!(log.contains("tray: Quit chosen"), "{log}");
    // Gone from the panel.
    wait_for(WAIT, "the tray item to leave", || {
        desktop.tray_item().is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_bus_the_node_says_so_once_and_installs() {
    let setup = Setup::start(None).await;
    let (_session, mut send, mut recv) = request_install!(setup);
    let (state, end) = read_states!(setup, recv, "pending_approval");
    assert!(end.is_none(), "{end:?}");
    assert_eq!(state.unwrap()["state"], "pending_approval");

    // Approved from the CLI, as on a server.
    let mut approve = node(setup.home.path());
    approve.args(["apps", "approve", APP]);
    run_to_end(approve, "");
    let (last, end) = read_states!(setup, recv, "never", INSTALL_WAIT);
    assert_eq!(last.unwrap()["state"], "installed", "{}", setup.node_log());
    assert!(matches!(end.map(|e| e.body), Some(Body::StreamEnd { .. })));
    let _ = send.finish().await;

    let log = setup.node_log();
    assert_eq!(
        log.matches("no desktop notifications").count(),
        1,
        "said once: {log}"
    );
    assert!(log.contains("no D-Bus session bus"), "{log}");
    assert!(!log.contains("desktop notifications on"), "{log}");
    assert_eq!(log.matches("no tray icon").count(), 1, "said once: {log}");
}
