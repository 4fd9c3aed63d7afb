//! Files for form file fields (`aisa_node::files`, docs/protocol.md "Files"): listing
//! stays inside what the app was granted (outside refused, `..`, symlink escapes,
//! absolute paths, the node's own folder), pages are bounded, typed paths with `~` and
//! `$DOCUMENTS` resolve; uploads are capped, sanitised, never replace a file, and leave
//! nothing behind when cancelled, cut off, or sent wrong.
//!
//! The wire through a real relay and a real `desktop-node run` is in the second half,
//! sealed end to end too (a paired browser: the relay splices neither a file's name nor
//! its bytes).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use aisa_node::files::{self, FileRefusal, MAX_PAGE, ProgressSink, Scope, Upload};
use aisa_node::permissions::UserDirs;
use aisa_tunnel::io::write_frame;
use aisa_tunnel::{Body, Envelope, ErrorCode, MAX_FRAME_LEN};

/// A person's folders and a node home, all in one temporary folder.
struct Desk {
    root: tempfile::TempDir,
}

impl Desk {
    fn new() -> Desk {
        let root = tempfile::tempdir().unwrap();
        for dir in [
            "home/Documents/notes",
            "home/Downloads",
            "home/.node/data/app/files",
            "elsewhere",
        ] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        std::fs::write(
            root.path().join("home/Documents/notes/meeting.md"),
            "ship friday",
        )
        .unwrap();
        std::fs::write(root.path().join("home/Documents/b.txt"), "bee").unwrap();
        std::fs::write(root.path().join("home/Documents/.hidden"), "x").unwrap();
        std::fs::write(root.path().join("home/Downloads/secret.txt"), "no").unwrap();
        std::fs::write(root.path().join("elsewhere/secret.txt"), "no").unwrap();
        Desk { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn dirs(&self) -> UserDirs {
        UserDirs {
            home: Some(self.path("home")),
            documents: Some(self.path("home/Documents")),
            downloads: Some(self.path("home/Downloads")),
            desktop: None,
        }
    }

    /// An app granted `read` (as written).
    fn scope(&self, read: &[&str]) -> Scope {
        let read: Vec<String> = read.iter().map(|s| (*s).to_owned()).collect();
        Scope::new(
            &read,
            &[],
            &self.dirs(),
            self.path("home/.node/data/app/files"),
            self.path("home/.node"),
        )
    }
}

fn names(entries: &[aisa_tunnel::message::FileEntry]) -> Vec<String> {
    entries.iter().map(|e| e.name.clone()).collect()
}

fn refused(
    result: Result<(u32, Vec<aisa_tunnel::message::FileEntry>), FileRefusal>,
) -> FileRefusal {
    match result {
        Err(refusal) => refusal,
        Ok(listing) => panic!("expected a refusal, got {listing:?}"),
    }
}

#[test]
fn the_granted_folders_are_the_roots_and_listing_stays_inside_them() {
    let desk = Desk::new();
    // An unresolvable grant ($DESKTOP is missing here) is left out, not guessed.
    let scope = desk.scope(&["$DOCUMENTS", "$DESKTOP"]);
    let (total, roots) = scope.list("", 0, 50).unwrap();
    assert_eq!(total, 2);
    assert_eq!(names(&roots), ["$APP_DATA", "$DOCUMENTS"]);
    assert!(roots.iter().all(|e| e.dir && e.path == e.name));

    // Folders first, then files, by name; dot files not listed; paths in the app's terms.
    let (total, entries) = scope.list("$DOCUMENTS", 0, 50).unwrap();
    assert_eq!(total, 2);
    assert_eq!(names(&entries), ["notes", "b.txt"]);
    assert_eq!(entries[0].path, "$DOCUMENTS/notes");
    assert!(entries[0].dir);
    assert_eq!(
        (entries[1].path.as_str(), entries[1].size),
        ("$DOCUMENTS/b.txt", 3)
    );
    let (_, notes) = scope.list("$DOCUMENTS/notes/", 0, 50).unwrap();
    assert_eq!(notes[0].path, "$DOCUMENTS/notes/meeting.md");

    // Typed paths: `~` and absolute ones inside the grant work, and name their entries
    // the way they were typed.
    let (_, tilde) = scope.list("~/Documents/notes", 0, 50).unwrap();
    assert_eq!(tilde[0].path, "~/Documents/notes/meeting.md");
    let absolute = desk.path("home/Documents/notes");
    let (_, abs) = scope.list(absolute.to_str().unwrap(), 0, 50).unwrap();
    assert_eq!(abs[0].path, format!("{}/meeting.md", absolute.display()));
}

#[test]
fn outside_the_grants_is_refused_in_plain_sentences() {
    let desk = Desk::new();
    let scope = desk.scope(&["$DOCUMENTS"]);
    // Another of the person's folders, by variable, by `~` and by absolute path.
    for path in [
        "$DOWNLOADS".to_owned(),
        "~/Downloads".to_owned(),
        "~".to_owned(),
        desk.path("elsewhere").display().to_string(),
        "/".to_owned(),
    ] {
        let refusal = refused(scope.list(&path, 0, 50));
        assert_eq!(refusal.code, ErrorCode::Denied, "{path}: {refusal}");
        assert_eq!(
            refusal.message,
            format!("This app may not open “{path}”: it is outside the folders it was granted.")
        );
    }
    // `..` is refused outright, even when it would stay inside.
    for path in [
        "$DOCUMENTS/..",
        "$DOCUMENTS/notes/../notes",
        "~/Documents/../Downloads",
    ] {
        let refusal = refused(scope.list(path, 0, 50));
        assert_eq!(refusal.code, ErrorCode::InvalidPayload, "{path}");
        assert!(refusal.message.contains("“..”"), "{refusal}");
    }
    // Not a path, a missing folder, a file, an unknown variable: sentences, no debug text.
    let cases = [
        ("notes", "is not a path this desktop understands"),
        (
            "$DOCUMENTS/nope",
            "There is no “$DOCUMENTS/nope” on your desktop.",
        ),
        (
            "$DOCUMENTS/b.txt",
            "“$DOCUMENTS/b.txt” is a file, not a folder.",
        ),
        ("$SECRETS/x", "is not a path this desktop understands"),
    ];
    for (path, want) in cases {
        let refusal = refused(scope.list(path, 0, 50));
        assert_eq!(refusal.code, ErrorCode::InvalidPayload, "{path}");
        assert!(refusal.message.contains(want), "{path}: {refusal}");
        assert!(refusal.message.ends_with('.'), "{refusal}");
    }
}

#[cfg(unix)]
#[test]
fn symlinks_never_lead_out_of_the_grants() {
    let desk = Desk::new();
    let docs = desk.path("home/Documents");
    std::os::unix::fs::symlink(desk.path("elsewhere"), docs.join("escape-dir")).unwrap();
    std::os::unix::fs::symlink(desk.path("elsewhere/secret.txt"), docs.join("escape.txt")).unwrap();
    std::os::unix::fs::symlink(docs.join("notes"), docs.join("inside")).unwrap();
    // Into the node's own folder (with $HOME granted, the node's home is inside it).
    std::os::unix::fs::symlink(desk.path("home/.node"), docs.join("node-home")).unwrap();
    let scope = desk.scope(&["$DOCUMENTS"]);
    let (_, entries) = scope.list("$DOCUMENTS", 0, 50).unwrap();
    // The links pointing out are not listed; the one inside is, as the folder it is.
    assert_eq!(names(&entries), ["inside", "notes", "b.txt"]);
    assert!(entries[0].dir);
    let refusal = refused(scope.list("$DOCUMENTS/escape-dir", 0, 50));
    assert_eq!(refusal.code, ErrorCode::Denied, "{refusal}");
    let (_, inside) = scope.list("$DOCUMENTS/inside", 0, 50).unwrap();
    assert_eq!(names(&inside), ["meeting.md"]);

    // Granting $HOME does not open the node's own folder, directly or by a link.
    let home_scope = desk.scope(&["$HOME"]);
    let refusal = refused(home_scope.list(desk.path("home/.node").to_str().unwrap(), 0, 50));
    assert_eq!(refusal.code, ErrorCode::Denied);
    assert!(
        refusal.message.contains("desktop node's own folder"),
        "{refusal}"
    );
    let refusal = refused(home_scope.list("$DOCUMENTS/node-home", 0, 50));
    assert_eq!(refusal.code, ErrorCode::Denied, "{refusal}");
    let (_, docs_entries) = home_scope.list("$HOME/Documents", 0, 50).unwrap();
    assert!(!names(&docs_entries).contains(&"node-home".to_owned()));
}

#[test]
fn pages_are_bounded() {
    let desk = Desk::new();
    let many = desk.path("home/Documents/many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..250 {
        std::fs::write(many.join(format!("f{i:03}.txt")), "x").unwrap();
    }
    let scope = desk.scope(&["$DOCUMENTS"]);
    let (total, first) = scope.list("$DOCUMENTS/many", 0, 10_000).unwrap();
    assert_eq!(total, 250);
    assert_eq!(first.len(), MAX_PAGE as usize);
    assert_eq!(first[0].name, "f000.txt");
    let (_, rest) = scope.list("$DOCUMENTS/many", 200, 100).unwrap();
    assert_eq!(rest.len(), 50);
    assert_eq!(rest[0].name, "f200.txt");
    let (_, none) = scope.list("$DOCUMENTS/many", 400, 10).unwrap();
    assert!(none.is_empty());
}

#[test]
fn the_app_data_folder_is_always_listable() {
    let desk = Desk::new();
    let scope = desk.scope(&[]);
    std::fs::write(scope.app_data().join("kept.txt"), "k").unwrap();
    let (_, roots) = scope.list("", 0, 50).unwrap();
    assert_eq!(names(&roots), ["$APP_DATA"]);
    let (_, entries) = scope.list("$APP_DATA", 0, 50).unwrap();
    assert_eq!(entries[0].path, "$APP_DATA/kept.txt");
    assert_eq!(
        refused(scope.list("$DOCUMENTS", 0, 50)).code,
        ErrorCode::Denied
    );
}

#[test]
fn typed_paths_with_a_tilde_resolve_to_the_home_folder() {
    let desk = Desk::new();
    let dirs = desk.dirs();
    let app_data = desk.path("app");
    assert_eq!(dirs.resolve("~", &app_data).unwrap(), desk.path("home"));
    assert_eq!(
        dirs.resolve("~/Documents/a.md", &app_data).unwrap(),
        desk.path("home/Documents/a.md")
    );
    assert_eq!(
        dirs.resolve("$DOCUMENTS/a.md", &app_data).unwrap(),
        desk.path("home/Documents/a.md")
    );
    // `~user` is not this person's home.
    assert!(dirs.resolve("~root/x", &app_data).is_err());
}

// --- uploads ---------------------------------------------------------------------------

fn uploads(app_data: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(app_data.join("uploads"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn uploads_are_capped_sanitised_and_never_replace_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let app_data = dir.path().join("files");
    // Over the cap: refused before anything is written.
    let refusal = Upload::begin(&app_data, "big.bin", 11, 10).unwrap_err();
    assert_eq!(refusal.code, ErrorCode::LimitExceeded);
    assert_eq!(
        refusal.message,
        "The file is 11 bytes; this desktop accepts uploads of up to 10 bytes (max_upload_bytes under [files] in its node.toml)."
    );
    assert!(uploads(&app_data).is_empty());

    for expected in [
        "$APP_DATA/uploads/my report_.txt",
        "$APP_DATA/uploads/my report_ (2).txt",
    ] {
        let mut upload = Upload::begin(&app_data, "../../my report?.txt", 5, 10).unwrap();
        upload.write(b"hel").unwrap();
        upload.write(b"lo").unwrap();
        assert_eq!(upload.finish().unwrap(), (expected.to_owned(), 5));
    }
    assert_eq!(uploads(&app_data), ["my report_ (2).txt", "my report_.txt"]);
    assert_eq!(
        std::fs::read_to_string(app_data.join("uploads/my report_.txt")).unwrap(),
        "hello"
    );

    // More than announced: refused; the partial file goes with the upload.
    let mut upload = Upload::begin(&app_data, "x", 2, 10).unwrap();
    let partial = upload.partial_path().to_owned();
    assert!(partial.exists());
    let refusal = upload.write(b"abc").unwrap_err();
    assert_eq!(refusal.code, ErrorCode::InvalidPayload);
    drop(upload);
    assert!(!partial.exists());
    // Fewer than announced: finishing is refused and nothing is kept.
    let mut upload = Upload::begin(&app_data, "short", 4, 10).unwrap();
    upload.write(b"ab").unwrap();
    let refusal = upload.finish().unwrap_err();
    assert_eq!(
        refusal.message,
        "The upload ended after 2 bytes of 4 bytes; nothing was kept."
    );
    assert_eq!(uploads(&app_data), ["my report_ (2).txt", "my report_.txt"]);
}

#[test]
fn uploads_are_held_to_the_app_data_quota() {
    let dir = tempfile::tempdir().unwrap();
    let app_data = dir.path().join("files");
    std::fs::create_dir_all(&app_data).unwrap();
    std::fs::write(app_data.join("kept.bin"), vec![0; 600]).unwrap();
    let quotas = aisa_node::host::Quotas {
        storage_bytes: 1 << 20,
        app_data_bytes: 1000,
        app_data_entries: 10,
    };
    // 600 kept + 401 is over 1000 bytes, though under the upload cap.
    let refusal = Upload::begin_within(&app_data, "a.bin", 401, 1 << 20, &quotas).unwrap_err();
    assert_eq!(refusal.code, ErrorCode::LimitExceeded);
    assert_eq!(
        refusal.message,
        "The app's folder on your desktop holds 600 bytes and may hold 1000 bytes; the 401 bytes file does not fit (delete files from it first)."
    );
    assert!(uploads(&app_data).is_empty());
    let mut upload = Upload::begin_within(&app_data, "a.bin", 400, 1 << 20, &quotas).unwrap();
    upload.write(&[1; 400]).unwrap();
    upload.finish().unwrap();
    // Entries: kept.bin, uploads/, a.bin and 7 more make 10, the limit.
    for i in 0..7 {
        std::fs::write(app_data.join(format!("f{i}")), "").unwrap();
    }
    let refusal = Upload::begin_within(&app_data, "b.bin", 0, 1 << 20, &quotas).unwrap_err();
    assert!(
        refusal
            .message
            .contains("already holds 10 files and folders"),
        "{refusal}"
    );
}

/// Two uploads started at the same instant into room for one: the second is checked
/// against the first's announced size (reserved at FILE_UPLOAD), not against its still
/// empty partial file, so exactly one starts. Each way an upload ends gives its bytes
/// back: dropped (cancel, failure) frees the room, stored counts the file instead.
#[test]
fn uploads_started_at_the_same_instant_cannot_together_pass_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let app_data = dir.path().join("files");
    let quotas = aisa_node::host::Quotas {
        storage_bytes: 1 << 20,
        app_data_bytes: 1000,
        app_data_entries: 100,
    };
    for round in 0..5 {
        let start = std::sync::Arc::new(std::sync::Barrier::new(2));
        let racers: Vec<_> = ["a.bin", "b.bin"]
            .into_iter()
            .map(|name| {
                let (start, app_data) = (start.clone(), app_data.clone());
                std::thread::spawn(move || {
                    start.wait();
                    Upload::begin_within(&app_data, name, 600, 1 << 20, &quotas)
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let (started, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
        assert_eq!(
            (started.len(), refused.len()),
            (1, 1),
            "round {round}: 600 + 600 bytes passed a 1000-byte quota: {refused:?}"
        );
        let refusal = refused.into_iter().next().unwrap().unwrap_err();
        assert_eq!(refusal.code, ErrorCode::LimitExceeded);
        assert_eq!(
            refusal.message,
            "The app's folder on your desktop holds 0 bytes, uploads under way will add 600 bytes, and it may hold 1000 bytes; the 600 bytes file does not fit (wait for them to finish, or delete files from it first)."
        );
        assert_eq!(Upload::reserved(&app_data), 600);
        // Cancelled or failed mid-way (dropped): the partial file and the reservation go.
        let mut upload = started.into_iter().next().unwrap().unwrap();
        upload.write(&[1; 300]).unwrap();
        drop(upload);
        assert_eq!(Upload::reserved(&app_data), 0);
        assert!(uploads(&app_data).is_empty(), "{:?}", uploads(&app_data));
    }

    // Half-received, an upload still holds its whole announced size.
    let mut first = Upload::begin_within(&app_data, "a.bin", 600, 1 << 20, &quotas).unwrap();
    first.write(&[1; 300]).unwrap();
    let refusal = Upload::begin_within(&app_data, "b.bin", 401, 1 << 20, &quotas).unwrap_err();
    assert!(refusal.message.contains("will add 600 bytes"), "{refusal}");
    let mut second = Upload::begin_within(&app_data, "b.bin", 400, 1 << 20, &quotas).unwrap();
    assert_eq!(Upload::reserved(&app_data), 1000);
    // Stored: the file counts as itself and its reservation is released.
    first.write(&[1; 300]).unwrap();
    first.finish().unwrap();
    assert_eq!(Upload::reserved(&app_data), 400);
    let refusal = Upload::begin_within(&app_data, "c.bin", 1, 1 << 20, &quotas).unwrap_err();
    assert_eq!(
        refusal.message,
        "The app's folder on your desktop holds 600 bytes, uploads under way will add 400 bytes, and it may hold 1000 bytes; the 1 bytes file does not fit (wait for them to finish, or delete files from it first)."
    );
    // A failed one (more bytes than announced) gives its room back when it ends.
    assert!(second.write(&[1; 401]).is_err());
    drop(second);
    assert_eq!(Upload::reserved(&app_data), 0);
    Upload::begin_within(&app_data, "c.bin", 400, 1 << 20, &quotas).unwrap();
    assert_eq!(uploads(&app_data), ["a.bin"]);
}

#[test]
fn names_are_made_safe() {
    let cases = [
        ("report.pdf", "report.pdf"),
        ("C:\\Users\\ada\\notes.md", "notes.md"),
        ("../../etc/passwd", "passwd"),
        ("..", "upload"),
        (".bashrc", "bashrc"),
        ("a:b*c?.txt", "a_b_c_.txt"),
        ("CON.txt", "_CON.txt"),
        ("com1", "_com1"),
        ("café ☃.txt", "café _.txt"),
        ("", "upload"),
        ("new\nline", "new_line"),
    ];
    for (given, want) in cases {
        assert_eq!(files::sanitize_name(given), want, "{given:?}");
    }
    let long = format!("{}.txt", "a".repeat(300));
    let safe = files::sanitize_name(&long);
    assert!(safe.len() <= 120 && safe.ends_with(".txt"), "{safe}");
}

/// Progress messages the desktop sent.
#[derive(Default)]
struct Sink(Vec<Envelope>);

impl ProgressSink for Sink {
    async fn send(&mut self, envelope: &Envelope) -> std::io::Result<()> {
        self.0.push(envelope.clone());
        Ok(())
    }
}

async fn send(writer: &mut tokio::io::DuplexStream, body: Body) {
    write_frame(writer, &Envelope::new(1, body).encode(), MAX_FRAME_LEN)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_upload_is_received_in_chunks_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let app_data = dir.path().join("files");
    let size = 600 << 10;
    let upload = Upload::begin(&app_data, "data.bin", size, 1 << 20).unwrap();
    let (mut browser, mut desktop) = tokio::io::duplex(1 << 20);
    let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let chunks = content.clone();
    let writer = tokio::spawn(async move {
        for chunk in chunks.chunks(files::MAX_CHUNK_BYTES) {
            send(
                &mut browser,
                Body::FileChunk {
                    data: chunk.to_vec(),
                },
            )
            .await;
        }
        browser
    });
    let mut sink = Sink::default();
    let answer = files::receive(upload, 1, &mut desktop, &mut None, &mut sink).await;
    let _browser = writer.await.unwrap();
    assert_eq!(
        answer.body,
        Body::FileStored {
            path: "$APP_DATA/uploads/data.bin".into(),
            size
        }
    );
    let progress: Vec<u64> = sink
        .0
        .iter()
        .map(|e| match e.body {
            Body::FileProgress { received } => received,
            ref other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(progress, [256 << 10, 512 << 10]);
    assert_eq!(
        std::fs::read(app_data.join("uploads/data.bin")).unwrap(),
        content
    );
    assert_eq!(uploads(&app_data), ["data.bin"]);
}

#[tokio::test]
async fn a_cancelled_or_cut_off_upload_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app_data = dir.path().join("files");

    // CANCEL after a chunk.
    let upload = Upload::begin(&app_data, "a.bin", 10, 100).unwrap();
    let (mut browser, mut desktop) = tokio::io::duplex(1 << 16);
    send(&mut browser, Body::FileChunk { data: vec![1; 4] }).await;
    send(&mut browser, Body::Cancel).await;
    let answer = files::receive(upload, 1, &mut desktop, &mut None, &mut Sink::default()).await;
    assert_eq!(
        answer.body,
        Body::Error {
            code: "cancelled".into(),
            message: "The upload was cancelled; nothing was kept.".into()
        }
    );
    assert!(uploads(&app_data).is_empty(), "{:?}", uploads(&app_data));

    // The browser's side ends early (a clean finish, or the connection dropped).
    let upload = Upload::begin(&app_data, "b.bin", 10, 100).unwrap();
    let (mut browser, mut desktop) = tokio::io::duplex(1 << 16);
    send(&mut browser, Body::FileChunk { data: vec![1; 4] }).await;
    drop(browser);
    let answer = files::receive(upload, 1, &mut desktop, &mut None, &mut Sink::default()).await;
    assert!(
        matches!(answer.body, Body::Error { ref code, .. } if code == "invalid_payload"),
        "{answer:?}"
    );
    assert!(uploads(&app_data).is_empty());

    // A chunk over the frame's allowance, and a message that is not a chunk.
    for body in [
        Body::FileChunk {
            data: vec![0; files::MAX_CHUNK_BYTES + 1],
        },
        Body::GetStatus,
    ] {
        let upload = Upload::begin(&app_data, "c.bin", 1 << 20, 2 << 20).unwrap();
        let (mut browser, mut desktop) = tokio::io::duplex(1 << 18);
        send(&mut browser, body).await;
        let answer = files::receive(upload, 1, &mut desktop, &mut None, &mut Sink::default()).await;
        assert!(
            matches!(answer.body, Body::Error { ref code, .. } if code == "invalid_payload"),
            "{answer:?}"
        );
        assert!(uploads(&app_data).is_empty());
    }
}

// --- through a real relay and node -------------------------------------------------------

use aisa_crypto::e2e;
use aisa_node::e2e::{MODE_ACTION, MODE_PAIR, key_id};
use aisa_testkit::system::{self, System};
use common::{Killed, run_to_end};

fn node_cmd(home: &Path) -> Command {
    common::node_cmd(home, "file", "files test passphrase")
}

/// Reads envelopes until FILE_STORED, FILES_PAGE, ERROR or the end.
async fn replies<R: tokio::io::AsyncRead + Unpin>(recv: &mut R) -> Vec<Envelope> {
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(
            system::WAIT,
            aisa_tunnel::io::read_frame(recv, MAX_FRAME_LEN),
        )
        .await
        .expect("an answer in time");
        let Ok(Some(body)) = frame else { return out };
        let env = Envelope::decode(&body).unwrap();
        let last = !matches!(env.body, Body::FileProgress { .. });
        out.push(env);
        if last {
            return out;
        }
    }
}

// Two workers: the relay runs in this process while the test blocks on `desktop-node login`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_and_uploads_through_a_real_relay_and_node() {
    let system = System::start().await;
    system.lift_plan_limits().await;
    // Everything the relay splices, to check what a sealed upload shows it.
    let (tap_tx, mut tap) = tokio::sync::mpsc::unbounded_channel();
    system
        .relay()
        .state
        .traffic
        .observe_splices(std::sync::Arc::new(tap_tx));
    let fake = aisa_testkit::provider::start(([127, 0, 0, 1], 0).into(), None)
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
        "files desk",
    ]);
    run_to_end(login, system::PASSWORD);
    let mut install = node_cmd(home.path());
    install
        .args(["apps", "install-local"])
        .arg(aisa_testkit::guest::hello_ai_wasm())
        .args(["--id", "hello-ai", "--action", "write,echo"]);
    run_to_end(install, "");
    let config_path = home.path().join("node.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    // login writes the default cap; a smaller one here.
    let default = format!(
        "[files]\nmax_upload_bytes = {}",
        files::DEFAULT_MAX_UPLOAD_BYTES
    );
    assert!(config.contains(&default), "{config}");
    let config = config.replace(&default, "[files]\nmax_upload_bytes = 200000");
    // A 1 MiB $APP_DATA quota, for the two uploads racing at the end.
    assert!(config.contains("app_data_mib = 256"), "{config}");
    let config = config.replace("app_data_mib = 256", "app_data_mib = 1");
    std::fs::write(&config_path, &config).unwrap();
    let device_id = config
        .lines()
        .find_map(|l| l.strip_prefix("device_id = "))
        .unwrap()
        .trim_matches('"')
        .to_owned();
    // A pairing link for the sealed upload at the end.
    let mut pair = node_cmd(home.path());
    pair.arg("pair");
    let printed = run_to_end(pair, "");
    let fragment = printed
        .lines()
        .find_map(|l| l.split_once("#pair=").map(|(_, f)| f.trim().to_owned()))
        .expect("a pairing link");
    let mut run = node_cmd(home.path());
    run.args(["run", "--ai-provider", "openai", "--ai-base-url"])
        .arg(fake.base_url())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(home.path().join("run.log")).unwrap());
    let _node = Killed(run.spawn().unwrap());
    let app_data = home.path().join("data/hello-ai/files");
    let session = system.browser().await;
    let mut control = system.header(&device_id);
    control.kind = aisa_tunnel::StreamKind::Control;
    let list = |path: &str, kind| {
        let mut header = system.header(&device_id);
        header.kind = kind;
        vec![
            header.encode(),
            Envelope::new(
                4,
                Body::FilesList {
                    app_id: "hello-ai".into(),
                    path: path.into(),
                    offset: 0,
                    limit: 50,
                },
            )
            .encode(),
        ]
    };
    // Until the node is online.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_s, mut recv) =
            system::open(&session, &list("", aisa_tunnel::StreamKind::Control)).await;
        let reply = replies(&mut recv).await;
        if let Some(Body::FilesPage { entries, .. }) = reply.first().map(|e| &e.body) {
            // hello-ai has no grants: its own folder only.
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0].path, "$APP_DATA");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node never came online: {reply:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Upload 150,000 bytes in chunks: progress, then the stored path.
    let content: Vec<u8> = (0..150_000u32).map(|i| (i % 253) as u8).collect();
    let mut frames = vec![
        control.encode(),
        Envelope::new(
            3,
            Body::FileUpload {
                app_id: "hello-ai".into(),
                name: "notes.txt".into(),
                size: 150_000,
            },
        )
        .encode(),
    ];
    for chunk in content.chunks(files::MAX_CHUNK_BYTES) {
        frames.push(
            Envelope::new(
                3,
                Body::FileChunk {
                    data: chunk.to_vec(),
                },
            )
            .encode(),
        );
    }
    let (_send, mut recv) = system::open(&session, &frames).await;
    let reply = replies(&mut recv).await;
    assert_eq!(
        reply.last().unwrap().body,
        Body::FileStored {
            path: "$APP_DATA/uploads/notes.txt".into(),
            size: 150_000
        },
        "{reply:?}"
    );
    assert_eq!(
        std::fs::read(app_data.join("uploads/notes.txt")).unwrap(),
        content
    );

    // The listing finds it inside the app's own folder.
    let (_s, mut recv) = system::open(
        &session,
        &list("$APP_DATA/uploads", aisa_tunnel::StreamKind::Control),
    )
    .await;
    let reply = replies(&mut recv).await;
    match &reply[0].body {
        Body::FilesPage {
            path,
            total,
            entries,
        } => {
            assert_eq!((path.as_str(), *total), ("$APP_DATA/uploads", 1));
            assert_eq!(entries[0].path, "$APP_DATA/uploads/notes.txt");
            assert_eq!(entries[0].size, 150_000);
        }
        other => panic!("{other:?}"),
    }
    // hello-ai was granted no folder of the person's.
    let (_s, mut recv) = system::open(&session, &list("~", aisa_tunnel::StreamKind::Control)).await;
    let (code, message) = system::error_of(&replies(&mut recv).await);
    assert_eq!(code, ErrorCode::Denied);
    assert_eq!(
        message,
        "This app may not open “~”: it is outside the folders it was granted."
    );
    // On an Action stream the request is refused (the stream kind rule).
    let (_s, mut recv) = system::open(&session, &list("", aisa_tunnel::StreamKind::Action)).await;
    let (code, message) = system::error_of(&replies(&mut recv).await);
    assert_eq!(code, ErrorCode::Unsupported, "{message}");
    assert!(
        message.contains("FilesList must be sent on a stream of kind Control"),
        "{message}"
    );

    // Over node.toml's cap: refused at once.
    let (_s, mut recv) = system::open(
        &session,
        &[
            control.encode(),
            Envelope::new(
                5,
                Body::FileUpload {
                    app_id: "hello-ai".into(),
                    name: "big".into(),
                    size: 200_001,
                },
            )
            .encode(),
        ],
    )
    .await;
    let (code, message) = system::error_of(&replies(&mut recv).await);
    assert_eq!(code, ErrorCode::LimitExceeded);
    assert!(message.contains("up to 195.3 KB"), "{message}");

    // Cut off mid-way (the browser's stream reset): the partial file is removed.
    let (mut send, mut recv) = system::open(
        &session,
        &[
            control.encode(),
            Envelope::new(
                6,
                Body::FileUpload {
                    app_id: "hello-ai".into(),
                    name: "cut.bin".into(),
                    size: 100_000,
                },
            )
            .encode(),
            Envelope::new(
                6,
                Body::FileChunk {
                    data: vec![7; 50_000],
                },
            )
            .encode(),
        ],
    )
    .await;
    // Wait until the desktop holds the partial file, then cut.
    let partial = || {
        std::fs::read_dir(app_data.join("uploads"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".partial-")
            })
            .count()
    };
    let deadline = std::time::Instant::now() + system::WAIT;
    while partial() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(partial(), 1, "the upload started");
    send.reset(0u32.into()).unwrap();
    let _ = replies(&mut recv).await;
    let deadline = std::time::Instant::now() + system::WAIT;
    while partial() != 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(partial(), 0, "the partial upload was removed");
    assert_eq!(uploads(&app_data), ["notes.txt"]);

    // Sealed end to end (a paired browser): FILE_UPLOAD and every FILE_CHUNK are sealed,
    // the relay splices neither the name nor the bytes.
    let parts: Vec<&str> = fragment.split('.').collect();
    let sk = [0x42; 32];
    let pk = e2e::public_of(&sk).unwrap();
    let desktop_pk: [u8; 32] = hex::decode(parts[1]).unwrap().try_into().unwrap();
    let seal = |mode: u8, plain: &[u8]| {
        let (sealed, opener) =
            e2e::seal_request(&desktop_pk, &sk, device_id.as_bytes(), plain, now()).unwrap();
        let mut e2e_header = vec![mode];
        if mode == MODE_PAIR {
            e2e_header.extend_from_slice(&pk);
        } else {
            e2e_header.extend_from_slice(&key_id(&pk));
        }
        e2e_header.extend_from_slice(&sealed[..e2e::REQUEST_HEADER_LEN]);
        let header = aisa_tunnel::OpenHeader {
            e2e: Some(e2e_header),
            ..control.clone()
        };
        (header, sealed[e2e::REQUEST_HEADER_LEN..].to_vec(), opener)
    };
    let pairing = serde_json::json!({ "secret": parts[2], "name": "files test" }).to_string();
    let (header, first, mut opener) = seal(MODE_PAIR, pairing.as_bytes());
    let (_s, mut recv) = system::open(&session, &[header.encode(), first]).await;
    let paired = sealed_replies(&mut recv, &mut opener).await;
    assert!(
        matches!(paired.last().unwrap().body, Body::StreamEnd { .. }),
        "{paired:?}"
    );

    let marker = b"sealed content 6502 ".repeat(5_000); // 100,000 bytes: two chunks
    let upload = Envelope::new(
        8,
        Body::FileUpload {
            app_id: "hello-ai".into(),
            name: "merger plans.txt".into(),
            size: marker.len() as u64,
        },
    );
    let (header, first, mut opener) = seal(MODE_ACTION, &upload.encode());
    let mut frames = vec![header.encode(), first];
    for chunk in marker.chunks(files::MAX_CHUNK_BYTES) {
        let env = Envelope::new(
            8,
            Body::FileChunk {
                data: chunk.to_vec(),
            },
        );
        frames.push(opener.seal_control(&env.encode()).unwrap());
    }
    let (_s, mut recv) = system::open(&session, &frames).await;
    let reply = sealed_replies(&mut recv, &mut opener).await;
    assert_eq!(
        reply.last().unwrap().body,
        Body::FileStored {
            path: "$APP_DATA/uploads/merger plans.txt".into(),
            size: 100_000
        },
        "{reply:?}"
    );
    assert_eq!(
        std::fs::read(app_data.join("uploads/merger plans.txt")).unwrap(),
        marker
    );
    let mut spliced = Vec::new();
    while let Ok(chunk) = tap.try_recv() {
        spliced.extend_from_slice(&chunk);
    }
    assert!(
        common::contains(&spliced, b"notes.txt"),
        "the tap sees plain uploads"
    );
    assert!(
        !common::contains(&spliced, b"merger plans"),
        "the relay saw the name"
    );
    assert!(
        !common::contains(&spliced, b"sealed content"),
        "the relay saw the bytes"
    );

    // Two uploads started at once into room for one of them (the 1 MiB quota less what
    // is kept: 150,000 bytes left, 100,000 each): one is refused at once, saying the
    // other is under way; the other goes on and is stored.
    std::fs::write(
        app_data.join("filler.bin"),
        vec![0; (1 << 20) - 250_000 - 150_000],
    )
    .unwrap();
    let racer = |id: u64, name: &str| {
        vec![
            control.encode(),
            Envelope::new(
                id,
                Body::FileUpload {
                    app_id: "hello-ai".into(),
                    name: name.into(),
                    size: 100_000,
                },
            )
            .encode(),
            Envelope::new(
                id,
                Body::FileChunk {
                    data: vec![1; 50_000],
                },
            )
            .encode(),
        ]
    };
    let (a, b) = (racer(9, "race a.bin"), racer(10, "race b.bin"));
    let ((send_a, mut recv_a), (send_b, mut recv_b)) =
        tokio::join!(system::open(&session, &a), system::open(&session, &b));
    // The refused one answers at once; the one under way says nothing yet.
    let early = std::time::Duration::from_secs(3);
    let (answer_a, answer_b) = tokio::join!(
        tokio::time::timeout(early, replies(&mut recv_a)),
        tokio::time::timeout(early, replies(&mut recv_b)),
    );
    let (mut send, mut recv, refused, kept) = match (answer_a, answer_b) {
        (Err(_), Ok(refused)) => (send_a, recv_a, refused, "race a.bin"),
        (Ok(refused), Err(_)) => (send_b, recv_b, refused, "race b.bin"),
        other => panic!("exactly one of two racing uploads is refused, got {other:?}"),
    };
    let (code, message) = system::error_of(&refused);
    assert_eq!(code, ErrorCode::LimitExceeded);
    assert!(
        message.contains("uploads under way will add 97.7 KB"),
        "{message}"
    );
    let id = if kept == "race a.bin" { 9 } else { 10 };
    write_frame(
        &mut send,
        &Envelope::new(
            id,
            Body::FileChunk {
                data: vec![1; 50_000],
            },
        )
        .encode(),
        MAX_FRAME_LEN,
    )
    .await
    .unwrap();
    let reply = replies(&mut recv).await;
    assert_eq!(
        reply.last().unwrap().body,
        Body::FileStored {
            path: format!("$APP_DATA/uploads/{kept}"),
            size: 100_000
        },
        "{reply:?}"
    );
    assert_eq!(
        uploads(&app_data),
        ["merger plans.txt", "notes.txt", kept],
        "nothing of the refused one, no partial file"
    );
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Opens a sealed answer's frames until the stream ends.
async fn sealed_replies<R: tokio::io::AsyncRead + Unpin>(
    recv: &mut R,
    opener: &mut e2e::ResponseOpener,
) -> Vec<Envelope> {
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout(
            system::WAIT,
            aisa_tunnel::io::read_frame(recv, MAX_FRAME_LEN),
        )
        .await
        .expect("an answer in time");
        let Ok(Some(body)) = frame else { return out };
        let plain = match opener.open_frame(&body).expect("an acceptable frame") {
            e2e::ResponseFrame::Data(data, _) => data,
            e2e::ResponseFrame::Plain(plain) => plain,
        };
        out.push(Envelope::decode(&plain).unwrap());
    }
}
