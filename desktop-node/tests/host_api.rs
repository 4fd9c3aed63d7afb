//! The permissioned host API through the sandbox: small WAT guests call each import of
//! `aisapp_v1` and emit the answers they get, and the tests read those answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aisa_node::ai::AiError;
use aisa_node::permissions::Grants;
use aisa_node::sandbox::{ActionContext, ActionError, Sandbox};
use aisa_testkit::fakes::NoAi;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// `"..."` for a WAT data string, every byte escaped.
fn wat_bytes(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for b in bytes {
        out.push_str(&format!("\\{b:02x}"));
    }
    out.push('"');
    out
}

/// A guest that makes `calls` in order (import name, request JSON) and emits each
/// answer as one chunk (answers up to 60 KiB).
fn guest(calls: &[(&str, String)]) -> String {
    let mut imports: Vec<&str> = calls.iter().map(|(i, _)| *i).collect();
    imports.sort();
    imports.dedup();
    let mut wat = String::from("(module\n");
    for import in &imports {
        wat.push_str(&format!(
            "  (import \"aisapp_v1\" \"{import}\" (func ${import} (param i32 i32) (result i32)))\n"
        ));
    }
    wat.push_str(
        "  (import \"aisapp_v1\" \"result\" (func $result (param i32 i32) (result i32)))\n\
         (import \"aisapp_v1\" \"emit\" (func $emit (param i32 i32)))\n\
         (memory (export \"memory\") 4)\n\
         (func (export \"aisapp_alloc\") (param i32) (result i32) i32.const 196608)\n",
    );
    let mut offset = 0usize;
    let mut body = String::new();
    for (import, request) in calls {
        wat.push_str(&format!(
            "  (data (i32.const {offset}) {})\n",
            wat_bytes(request.as_bytes())
        ));
        body.push_str(&format!(
            "    (drop (call ${import} (i32.const {offset}) (i32.const {len})))\n\
             (local.set $n (call $result (i32.const 131072) (i32.const 61440)))\n\
             (call $emit (i32.const 131072) (local.get $n))\n",
            len = request.len()
        ));
        offset += request.len();
    }
    assert!(offset < 131072, "requests too large for the test guest");
    wat.push_str(&format!(
        "  (func (export \"aisapp_run\") (param i32 i32) (result i32) (local $n i32)\n{body}    i32.const 0))\n"
    ));
    wat
}

/// Runs a guest making `calls` with `ctx` and returns the answers it received.
async fn answers(sandbox: &Sandbox, ctx: &ActionContext, calls: &[(&str, Value)]) -> Vec<Value> {
    let calls: Vec<(&str, String)> = calls.iter().map(|(i, r)| (*i, r.to_string())).collect();
    let module = sandbox.load(guest(&calls).as_bytes()).expect("load");
    let (tx, mut rx) = mpsc::channel(64);
    sandbox.run(&module, ctx, "{}", tx).await.expect("run");
    let mut out = Vec::new();
    while let Ok(chunk) = rx.try_recv() {
        out.push(serde_json::from_str(&chunk).unwrap_or_else(|e| panic!("{e}: {chunk}")));
    }
    assert_eq!(out.len(), calls.len());
    out
}

async fn answer(sandbox: &Sandbox, ctx: &ActionContext, import: &str, request: Value) -> Value {
    answers(sandbox, ctx, &[(import, request)]).await.remove(0)
}

fn error_code(answer: &Value) -> &str {
    answer["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error, got {answer}"))
}

struct World {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    sandbox: Sandbox,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::create_dir_all(root.join("private")).unwrap();
        std::fs::write(root.join("docs/notes.txt"), "hello from docs").unwrap();
        std::fs::write(root.join("private/secret.txt"), "secret").unwrap();
        World {
            _dir: dir,
            root,
            sandbox: Sandbox::new().expect("sandbox"),
        }
    }

    fn home(&self) -> std::path::PathBuf {
        self.root.join("node")
    }

    fn ctx(&self, grants: Grants) -> ActionContext {
        ActionContext::new("test-app", "1.2.3", self.home(), Arc::new(NoAi)).with_grants(grants)
    }

    fn docs(&self) -> std::path::PathBuf {
        self.root.join("docs")
    }
}

fn read_docs(world: &World) -> Grants {
    Grants {
        read: vec![world.docs()],
        ..Grants::default()
    }
}

#[tokio::test]
async fn reads_in_granted_folders_and_is_refused_outside() {
    let w = World::new();
    let ctx = w.ctx(read_docs(&w));
    let notes = w.docs().join("notes.txt");
    let secret = w.root.join("private/secret.txt");
    let escape = w.docs().join("../private/secret.txt");
    let got = answers(
        &w.sandbox,
        &ctx,
        &[
            ("fs", json!({"op": "read", "path": notes})),
            ("fs", json!({"op": "read", "path": secret})),
            ("fs", json!({"op": "read", "path": escape})),
            ("fs", json!({"op": "read_base64", "path": notes})),
            (
                "fs",
                json!({"op": "read", "path": w.docs().join("missing")}),
            ),
            ("fs", json!({"op": "read", "path": "docs/notes.txt"})),
            (
                "fs",
                json!({"op": "write", "path": w.docs().join("new.txt"), "content": "x"}),
            ),
            ("fs", json!({"op": "list", "path": w.docs()})),
            ("fs", json!({"op": "frobnicate", "path": notes})),
        ],
    )
    .await;
    assert_eq!(got[0], json!({"ok": "hello from docs"}));
    assert_eq!(error_code(&got[1]), "permission_denied");
    assert_eq!(error_code(&got[2]), "permission_denied");
    assert_eq!(got[3], json!({"ok": "aGVsbG8gZnJvbSBkb2Nz"}));
    assert_eq!(error_code(&got[4]), "not_found");
    assert_eq!(error_code(&got[5]), "invalid", "relative paths");
    assert_eq!(error_code(&got[6]), "permission_denied", "read-only grant");
    assert!(!w.docs().join("new.txt").exists());
    assert_eq!(
        got[7],
        json!({"ok": [{"name": "notes.txt", "dir": false, "size": 15}]})
    );
    assert_eq!(error_code(&got[8]), "invalid");
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_out_of_a_granted_folder_is_refused() {
    let w = World::new();
    std::os::unix::fs::symlink(w.root.join("private/secret.txt"), w.docs().join("leak")).unwrap();
    std::os::unix::fs::symlink(w.docs().join("notes.txt"), w.docs().join("alias")).unwrap();
    let grants = Grants {
        read: vec![w.docs()],
        write: vec![w.docs()],
        ..Grants::default()
    };
    let got = answers(
        &w.sandbox,
        &w.ctx(grants),
        &[
            ("fs", json!({"op": "read", "path": w.docs().join("leak")})),
            ("fs", json!({"op": "read", "path": w.docs().join("alias")})),
            (
                "fs",
                json!({"op": "write", "path": w.docs().join("leak"), "content": "pwned"}),
            ),
        ],
    )
    .await;
    assert_eq!(error_code(&got[0]), "permission_denied");
    assert_eq!(got[1], json!({"ok": "hello from docs"}));
    assert_eq!(error_code(&got[2]), "permission_denied");
    assert_eq!(
        std::fs::read_to_string(w.root.join("private/secret.txt")).unwrap(),
        "secret"
    );
}

#[tokio::test]
async fn app_data_is_the_apps_own_folder_without_any_grant() {
    let w = World::new();
    let ctx = w.ctx(Grants::default());
    let got = answers(
        &w.sandbox,
        &ctx,
        &[
            (
                "fs",
                json!({"op": "write", "path": "$APP_DATA/out/report.md", "content": "# r"}),
            ),
            (
                "fs",
                json!({"op": "read", "path": "$APP_DATA/out/report.md"}),
            ),
            ("fs", json!({"op": "list", "path": "$APP_DATA"})),
            ("storage", json!({"op": "set", "key": "k", "value": 1})),
            (
                "fs",
                json!({"op": "read", "path": "$APP_DATA/../storage.json"}),
            ),
            (
                "fs",
                json!({"op": "read", "path": w.docs().join("notes.txt")}),
            ),
        ],
    )
    .await;
    assert_eq!(got[0], json!({"ok": null}));
    assert_eq!(got[1], json!({"ok": "# r"}));
    assert_eq!(
        got[2],
        json!({"ok": [{"name": "out", "dir": true, "size": got[2]["ok"][0]["size"]}]})
    );
    assert_eq!(got[3], json!({"ok": null}));
    assert_eq!(
        error_code(&got[4]),
        "permission_denied",
        "the store is not a file of $APP_DATA"
    );
    assert_eq!(error_code(&got[5]), "permission_denied");
    assert_eq!(
        std::fs::read_to_string(w.home().join("data/test-app/files/out/report.md")).unwrap(),
        "# r"
    );
}

/// A minimal one-page PDF showing `text` in Helvetica, with a correct xref table.
fn tiny_pdf(text: &str) -> Vec<u8> {
    let stream = format!("BT /F1 24 Tf 72 700 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{stream}\nendstream", stream.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_owned(),
    ];
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

#[tokio::test]
async fn pdf_text_extracts_the_words_of_a_granted_pdf() {
    let w = World::new();
    std::fs::write(w.docs().join("hello.pdf"), tiny_pdf("Quarterly report")).unwrap();
    std::fs::write(w.docs().join("broken.pdf"), b"%PDF-1.4 not really").unwrap();
    let got = answers(
        &w.sandbox,
        &w.ctx(read_docs(&w)),
        &[
            (
                "fs",
                json!({"op": "pdf_text", "path": w.docs().join("hello.pdf")}),
            ),
            (
                "fs",
                json!({"op": "pdf_text", "path": w.docs().join("broken.pdf")}),
            ),
            (
                "fs",
                json!({"op": "pdf_text", "path": w.root.join("private/secret.txt")}),
            ),
        ],
    )
    .await;
    let text = got[0]["ok"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", got[0]));
    assert!(text.contains("Quarterly report"), "{text:?}");
    assert_eq!(error_code(&got[1]), "failed");
    assert_eq!(error_code(&got[2]), "permission_denied");
}

/// A local HTTP server: `/hello` answers text, `/away` redirects to `location`.
async fn server(location: String, hits: Arc<AtomicUsize>) -> std::net::SocketAddr {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/hello",
            get(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async { ([("x-test", "yes")], "hello over http") }
            }),
        )
        .route(
            "/echo",
            post(|body: String| async move { format!("got {body}") }),
        )
        .route(
            "/away",
            get(move || {
                let location = location.clone();
                async move { axum::response::Redirect::temporary(&location) }
            }),
        )
        .route("/big", get(|| async { "x".repeat(5 << 20) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn http_reaches_granted_hosts_only_and_follows_redirects_only_to_them() {
    let w = World::new();
    // The second server plays an ungranted host; it must never be reached.
    let other_hits = Arc::new(AtomicUsize::new(0));
    let other = server("/hello".into(), other_hits.clone()).await;
    let hits = Arc::new(AtomicUsize::new(0));
    let granted = server(format!("http://{other}/hello"), hits.clone()).await;
    let local = server("/hello".into(), Arc::new(AtomicUsize::new(0))).await;
    let grants = Grants {
        hosts: vec![granted.to_string(), local.to_string()],
        ..Grants::default()
    };
    let got = answers(
        &w.sandbox,
        &w.ctx(grants),
        &[
            ("http", json!({"op": "fetch", "url": format!("http://{granted}/hello")})),
            ("http", json!({"op": "fetch", "url": format!("http://{other}/hello")})),
            ("http", json!({"op": "fetch", "url": format!("http://{granted}/away")})),
            ("http", json!({"op": "fetch", "url": format!("http://{local}/away")})),
            ("http", json!({"op": "fetch", "url": format!("http://{granted}/echo"), "method": "POST", "body": "abc"})),
            ("http", json!({"op": "fetch", "url": format!("http://{granted}/big")})),
            ("http", json!({"op": "fetch", "url": "file:///etc/passwd"})),
        ],
    )
    .await;
    assert_eq!(got[0]["ok"]["status"], 200);
    assert_eq!(got[0]["ok"]["body"], "hello over http");
    assert_eq!(got[0]["ok"]["headers"]["x-test"], "yes");
    assert_eq!(error_code(&got[1]), "permission_denied");
    assert_eq!(
        error_code(&got[2]),
        "permission_denied",
        "redirect to an ungranted host"
    );
    assert!(
        got[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("redirect")
    );
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "the ungranted host was never reached"
    );
    assert_eq!(
        got[3]["ok"]["body"], "hello over http",
        "a redirect within a granted host"
    );
    assert_eq!(got[4]["ok"]["body"], "got abc");
    assert_eq!(error_code(&got[5]), "too_large");
    assert_eq!(error_code(&got[6]), "invalid");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn csv_env_and_clipboard() {
    let w = World::new();
    let got = answers(
        &w.sandbox,
        &w.ctx(Grants::default()),
        &[
            (
                "tool",
                json!({"op": "csv_parse", "text": "a,b\n1,\"x, y\"\n"}),
            ),
            ("env", json!({"op": "get"})),
            ("clipboard", json!({"op": "read"})),
        ],
    )
    .await;
    assert_eq!(
        got[0],
        json!({"ok": {"headers": ["a", "b"], "rows": [["1", "x, y"]]}})
    );
    let env = got[1]["ok"].as_object().expect("env object");
    let keys: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["app_id", "app_version", "arch", "node_version", "os"]
    );
    assert_eq!(env["app_id"], "test-app");
    assert_eq!(env["app_version"], "1.2.3");
    let text = got[1].to_string();
    for secret in [
        std::env::var("HOME").ok(),
        std::env::var("USER").ok(),
        std::env::var("PATH").ok(),
    ]
    .into_iter()
    .flatten()
    .filter(|s| s.len() > 3)
    {
        assert!(!text.contains(&secret), "env leaks {secret:?}");
    }
    assert!(!text.contains(&*w.root.to_string_lossy()));
    assert_eq!(error_code(&got[2]), "permission_denied");

    let granted = w.ctx(Grants {
        clipboard: true,
        ..Grants::default()
    });
    let got = answer(
        &w.sandbox,
        &granted,
        "clipboard",
        json!({"op": "write", "text": "x"}),
    )
    .await;
    assert_eq!(error_code(&got), "unavailable");
}

#[tokio::test]
async fn storage_persists_across_actions_and_apps_do_not_share_it() {
    let w = World::new();
    let ctx = w.ctx(Grants::default());
    let first = answers(
        &w.sandbox,
        &ctx,
        &[
            (
                "storage",
                json!({"op": "set", "key": "count", "value": {"n": 1, "tags": ["a"]}}),
            ),
            (
                "storage",
                json!({"op": "set", "key": "gone", "value": true}),
            ),
            ("storage", json!({"op": "delete", "key": "gone"})),
        ],
    )
    .await;
    assert!(first.iter().all(|a| *a == json!({"ok": null})), "{first:?}");
    let second = answers(
        &w.sandbox,
        &ctx,
        &[
            ("storage", json!({"op": "get", "key": "count"})),
            ("storage", json!({"op": "get", "key": "gone"})),
            ("storage", json!({"op": "keys"})),
            ("storage", json!({"op": "get", "key": ""})),
        ],
    )
    .await;
    assert_eq!(second[0], json!({"ok": {"n": 1, "tags": ["a"]}}));
    assert_eq!(second[1], json!({"ok": null}));
    assert_eq!(second[2], json!({"ok": ["count"]}));
    assert_eq!(error_code(&second[3]), "invalid");
    let other = ActionContext::new("other-app", "1.0.0", w.home(), Arc::new(NoAi));
    let got = answer(&w.sandbox, &other, "storage", json!({"op": "keys"})).await;
    assert_eq!(got, json!({"ok": []}));
    assert!(w.home().join("data/test-app/storage.json").is_file());
}

/// Runs a hand-written guest body and returns the action's outcome and output.
async fn run_wat(
    sandbox: &Sandbox,
    ctx: &ActionContext,
    wat: &str,
) -> (Result<(), ActionError>, Vec<String>) {
    let module = sandbox.load(wat.as_bytes()).expect("load");
    let (tx, mut rx) = mpsc::channel(64);
    let result = sandbox.run(&module, ctx, "{}", tx).await;
    let mut out = Vec::new();
    while let Ok(chunk) = rx.try_recv() {
        out.push(chunk);
    }
    (result, out)
}

#[tokio::test]
async fn ai_generate_needs_the_ai_grant() {
    let w = World::new();
    let wat = r#"(module
      (import "aisapp_v1" "ai_generate" (func $gen (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "{\"prompt\":\"p\"}")
      (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "aisapp_run") (param i32 i32) (result i32)
        (drop (call $gen (i32.const 0) (i32.const 14))) i32.const 0))"#;
    let (denied, _) = run_wat(&w.sandbox, &w.ctx(Grants::default()), wat).await;
    let err = denied.expect_err("no ai grant");
    assert!(err.to_string().contains("permission denied: ai"), "{err}");
    let allowed = w.ctx(Grants {
        ai: true,
        ..Grants::default()
    });
    let (reached, _) = run_wat(&w.sandbox, &allowed, wat).await;
    assert!(
        matches!(reached, Err(ActionError::Ai(AiError::NoKey(_)))),
        "with the grant the call reaches the provider: {reached:?}"
    );
}

#[tokio::test]
async fn result_returns_minus_one_without_an_answer_or_room_and_bad_requests_trap() {
    let w = World::new();
    let ctx = w.ctx(Grants::default());
    // result before any call; env; result with a 4-byte buffer; result with room.
    let wat = r#"(module
      (import "aisapp_v1" "env" (func $env (param i32 i32) (result i32)))
      (import "aisapp_v1" "result" (func $result (param i32 i32) (result i32)))
      (import "aisapp_v1" "emit" (func $emit (param i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "{\"op\":\"get\"}")
      (func $show (param i32)
        (i32.store8 (i32.const 4000) (i32.add (i32.const 48) (i32.add (local.get 0) (i32.const 1))))
        (call $emit (i32.const 4000) (i32.const 1)))
      (func (export "aisapp_alloc") (param i32) (result i32) i32.const 8192)
      (func (export "aisapp_run") (param i32 i32) (result i32) (local $len i32)
        (call $show (call $result (i32.const 1024) (i32.const 1024)))
        (local.set $len (call $env (i32.const 0) (i32.const 12)))
        (call $show (call $result (i32.const 1024) (i32.const 4)))
        (call $emit (i32.const 1024) (call $result (i32.const 1024) (local.get $len)))
        (call $emit (i32.const 1024) (call $result (i32.const 1024) (local.get $len)))
        i32.const 0))"#;
    let (result, out) = run_wat(&w.sandbox, &ctx, wat).await;
    result.expect("runs");
    assert_eq!(out[0], "0", "-1 before any call");
    assert_eq!(out[1], "0", "-1 when the buffer is too small");
    let env: Value = serde_json::from_str(&out[2]).unwrap();
    assert_eq!(env["ok"]["app_id"], "test-app");
    assert_eq!(out[2], out[3], "the answer stays until the next call");

    let not_json = r#"(module
      (import "aisapp_v1" "fs" (func $fs (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "{op: read")
      (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "aisapp_run") (param i32 i32) (result i32)
        (drop (call $fs (i32.const 0) (i32.const 9))) i32.const 0))"#;
    let (result, _) = run_wat(&w.sandbox, &ctx, not_json).await;
    assert!(result.expect_err("traps").to_string().contains("not JSON"));
    let out_of_bounds = r#"(module
      (import "aisapp_v1" "fs" (func $fs (param i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "aisapp_alloc") (param i32) (result i32) i32.const 1024)
      (func (export "aisapp_run") (param i32 i32) (result i32)
        (drop (call $fs (i32.const 65530) (i32.const 100))) i32.const 0))"#;
    let (result, _) = run_wat(&w.sandbox, &ctx, out_of_bounds).await;
    assert!(
        result
            .expect_err("traps")
            .to_string()
            .contains("out of bounds")
    );
}

#[tokio::test]
async fn imports_outside_the_host_api_are_still_refused_at_load() {
    let sandbox = Sandbox::new().expect("sandbox");
    for (module, name) in [
        ("aisapp_v1", "exec"),
        ("wasi_snapshot_preview1", "fd_write"),
        ("env", "fs"),
    ] {
        let wat = format!(
            r#"(module (import "{module}" "{name}" (func (param i32 i32) (result i32)))
              (memory (export "memory") 1)
              (func (export "aisapp_alloc") (param i32) (result i32) i32.const 0)
              (func (export "aisapp_run") (param i32 i32) (result i32) i32.const 0))"#
        );
        let err = sandbox.load(wat.as_bytes()).err().expect("refused");
        assert!(
            err.to_string().contains(&format!("{module}::{name}")),
            "{err}"
        );
    }
    // Every capability import loads.
    let calls: Vec<(&str, String)> = ["fs", "http", "clipboard", "tool", "storage", "env"]
        .iter()
        .map(|i| (*i, "{}".to_owned()))
        .collect();
    sandbox
        .load(guest(&calls).as_bytes())
        .expect("the host API loads");
}

#[tokio::test]
async fn an_app_id_that_cannot_name_a_folder_is_refused() {
    let w = World::new();
    let ctx = ActionContext::new("../escape", "1.0.0", w.home(), Arc::new(NoAi));
    let (result, _) = run_wat(
        &w.sandbox,
        &ctx,
        r#"(module (memory (export "memory") 1)
          (func (export "aisapp_alloc") (param i32) (result i32) i32.const 0)
          (func (export "aisapp_run") (param i32 i32) (result i32) i32.const 0))"#,
    )
    .await;
    assert!(result.is_err());
    assert!(!Path::new(&w.root.join("escape")).exists());
}

#[tokio::test]
async fn a_granted_name_reaches_this_machine_only_as_localhost() {
    let w = World::new();
    let addr = server("/hello".into(), Arc::new(AtomicUsize::new(0))).await;
    let port = addr.port();
    let by_localhost = w.ctx(Grants {
        hosts: vec![format!("localhost:{port}")],
        ..Grants::default()
    });
    let got = answer(
        &w.sandbox,
        &by_localhost,
        "http",
        json!({"op": "fetch", "url": format!("http://localhost:{port}/hello")}),
    )
    .await;
    assert_eq!(got["ok"]["body"], "hello over http", "{got}");

    // This machine's own name usually resolves to a loopback address: granted by name,
    // it is not reached.
    let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") else {
        return;
    };
    let name = name.trim().to_ascii_lowercase();
    let local_only = tokio::net::lookup_host((name.as_str(), port))
        .await
        .map(|a| a.collect::<Vec<_>>())
        .is_ok_and(|a| !a.is_empty() && a.iter().all(|a| a.ip().is_loopback()));
    if name == "localhost" || !local_only {
        eprintln!("skipped: {name:?} does not resolve to loopback only");
        return;
    }
    let by_name = w.ctx(Grants {
        hosts: vec![format!("{name}:{port}")],
        ..Grants::default()
    });
    let got = answer(
        &w.sandbox,
        &by_name,
        "http",
        json!({"op": "fetch", "url": format!("http://{name}:{port}/hello")}),
    )
    .await;
    assert_eq!(error_code(&got), "failed", "{got}");
    assert!(
        got["error"]["message"].as_str().unwrap().contains("public"),
        "{got}"
    );
}

/// A one-page PDF whose content stream is `data` under `filter`.
fn pdf_with_stream(filter: &str, data: &[u8]) -> Vec<u8> {
    let mut pdf = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    let objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_vec(),
        {
            let mut s = format!("<< /Filter {filter} /Length {} >>\nstream\n", data.len()).into_bytes();
            s.extend_from_slice(data);
            s.extend_from_slice(b"\nendstream");
            s
        },
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_vec(),
    ];
    for (i, body) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        pdf.extend_from_slice(body);
        pdf.extend_from_slice(b"\nendobj\n");
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

fn zlib(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn a_pdf_bomb_in_app_data_is_refused_without_being_inflated() {
    let w = World::new();
    let files = w.home().join("data/test-app/files");
    std::fs::create_dir_all(&files).unwrap();
    // A content stream of 64 MiB of spaces, compressed to well under a megabyte: twice
    // what all of a PDF's streams may inflate to.
    let bomb = zlib(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 1 << 20);
    std::fs::write(
        files.join("bomb.pdf"),
        pdf_with_stream("/FlateDecode", &bomb),
    )
    .unwrap();
    // The same bomb compressed twice, declared with an escaped filter name.
    let double = zlib(&bomb);
    std::fs::write(
        files.join("double.pdf"),
        pdf_with_stream("[/FlateDecode /Fl#61teDecode]", &double),
    )
    .unwrap();
    // A small compressed page still reads.
    std::fs::write(
        files.join("fine.pdf"),
        pdf_with_stream(
            "/FlateDecode",
            &zlib(b"BT /F1 24 Tf 72 700 Td (fine) Tj ET"),
        ),
    )
    .unwrap();
    let got = answers(
        &w.sandbox,
        &w.ctx(Grants::default()),
        &[
            (
                "fs",
                json!({"op": "pdf_text", "path": "$APP_DATA/bomb.pdf"}),
            ),
            (
                "fs",
                json!({"op": "pdf_text", "path": "$APP_DATA/double.pdf"}),
            ),
            (
                "fs",
                json!({"op": "pdf_text", "path": "$APP_DATA/fine.pdf"}),
            ),
        ],
    )
    .await;
    for refused in &got[..2] {
        assert_eq!(error_code(refused), "too_large", "{refused}");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("the PDF's streams inflate to more than"),
            "{message}"
        );
    }
    assert!(
        got[2]["ok"].as_str().unwrap_or_default().contains("fine"),
        "{}",
        got[2]
    );
}

/// A guest that sends `tool` `csv_parse` a text of `commas` commas (built in its memory,
/// too big for a data segment) and emits the answer's first 60 KiB.
fn csv_of_commas_guest(commas: u32) -> String {
    let prefix = r#"{"op":"csv_parse","has_headers":false,"text":""#;
    let p = prefix.len() as u32;
    let end = p + commas;
    let out = (end + 2).div_ceil(65536) * 65536;
    let pages = (out + 65536) / 65536 + 1;
    format!(
        r#"(module
  (import "aisapp_v1" "tool" (func $tool (param i32 i32) (result i32)))
  (import "aisapp_v1" "result" (func $result (param i32 i32) (result i32)))
  (import "aisapp_v1" "emit" (func $emit (param i32 i32)))
  (memory (export "memory") {pages})
  (data (i32.const 0) {prefix_bytes})
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const {out})
  (func (export "aisapp_run") (param i32 i32) (result i32) (local $n i32)
    (memory.fill (i32.const {p}) (i32.const 44) (i32.const {commas}))
    (i32.store16 (i32.const {end}) (i32.const 0x7d22))
    (drop (call $tool (i32.const 0) (i32.const {len})))
    (local.set $n (call $result (i32.const {out}) (i32.const 61440)))
    (call $emit (i32.const {out}) (local.get $n))
    i32.const 0))"#,
        prefix_bytes = wat_bytes(prefix.as_bytes()),
        len = end + 2,
    )
}

#[tokio::test]
async fn a_huge_csv_is_refused_while_it_is_parsed() {
    let w = World::new();
    // 4 Mi commas: 4 Mi empty fields. As JSON values that is far more memory than the
    // text (and an answer of ~12 MB); parsing stops at the bound instead.
    let wat = csv_of_commas_guest(4 << 20);
    let (result, out) = run_wat(&w.sandbox, &w.ctx(Grants::default()), &wat).await;
    result.expect("the action runs");
    let answer: Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(error_code(&answer), "too_large", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("the parsed CSV would pass"), "{message}");
    // A small one still parses.
    let wat = csv_of_commas_guest(3);
    let (result, out) = run_wat(&w.sandbox, &w.ctx(Grants::default()), &wat).await;
    result.expect("the action runs");
    let answer: Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(
        answer,
        json!({"ok": {"headers": [], "rows": [["", "", "", ""]]}})
    );
}

#[tokio::test]
async fn app_data_and_storage_writes_over_the_quota_are_refused() {
    let w = World::new();
    let sandbox = Sandbox::with_config(aisa_node::sandbox::SandboxConfig {
        host_quotas: aisa_node::host::Quotas {
            storage_bytes: 1000,
            app_data_bytes: 40_000,
            app_data_entries: 10_000,
        },
        ..Default::default()
    })
    .expect("sandbox");
    let write = |path: &str, len: usize| {
        (
            "fs",
            json!({"op": "write", "path": path, "content": "x".repeat(len)}),
        )
    };
    let got = answers(
        &sandbox,
        &w.ctx(Grants::default()),
        &[
            write("$APP_DATA/a.txt", 25_000),
            write("$APP_DATA/sub/b.txt", 20_000),
            // Replacing a file counts its new size, not both.
            write("$APP_DATA/a.txt", 10_000),
            write("$APP_DATA/sub/b.txt", 20_000),
            (
                "storage",
                json!({"op": "set", "key": "k", "value": "v".repeat(2000)}),
            ),
            (
                "storage",
                json!({"op": "set", "key": "k", "value": "v".repeat(500)}),
            ),
        ],
    )
    .await;
    assert_eq!(got[0], json!({"ok": null}));
    assert_eq!(error_code(&got[1]), "too_large", "{}", got[1]);
    let message = got[1]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("$APP_DATA would hold 45000 bytes; this app may keep 40000"),
        "{message}"
    );
    assert_eq!(got[2], json!({"ok": null}));
    assert_eq!(got[3], json!({"ok": null}));
    let files = w.home().join("data/test-app/files");
    assert_eq!(
        std::fs::metadata(files.join("a.txt")).unwrap().len(),
        10_000
    );
    assert_eq!(
        std::fs::metadata(files.join("sub/b.txt")).unwrap().len(),
        20_000
    );
    assert_eq!(error_code(&got[4]), "too_large", "{}", got[4]);
    assert_eq!(got[5], json!({"ok": null}));
    // Files and folders are counted too, and a refused write creates no folder.
    let few = Sandbox::with_config(aisa_node::sandbox::SandboxConfig {
        host_quotas: aisa_node::host::Quotas {
            app_data_entries: 4,
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("sandbox");
    let other = ActionContext::new("few-files", "1.0.0", w.home(), Arc::new(NoAi));
    let got = answers(
        &few,
        &other,
        &[
            write("$APP_DATA/one.txt", 1),
            write("$APP_DATA/a/b/c/d/deep.txt", 1),
            write("$APP_DATA/a/two.txt", 1),
        ],
    )
    .await;
    assert_eq!(got[0], json!({"ok": null}));
    assert_eq!(error_code(&got[1]), "too_large", "{}", got[1]);
    assert!(!w.home().join("data/few-files/files/a/b").exists());
    assert_eq!(got[2], json!({"ok": null}));
    // The defaults: 256 MiB of files, a 1 MiB store.
    let defaults = aisa_node::host::Quotas::default();
    assert_eq!(defaults.app_data_bytes, 256 << 20);
    assert_eq!(defaults.storage_bytes, 1 << 20);
}

#[tokio::test]
async fn the_node_home_is_out_of_reach_even_when_a_parent_folder_is_granted() {
    let w = World::new();
    // The node's home (config, secrets, compiled modules, apps, other apps' data) lies
    // inside the granted folder, as ~/.config/aisuperapp/desktop lies inside $HOME.
    std::fs::create_dir_all(w.home().join("data/other-app/files")).unwrap();
    std::fs::create_dir_all(w.home().join("cache/modules")).unwrap();
    std::fs::write(w.home().join("node.toml"), "relay_url = \"x\"").unwrap();
    std::fs::write(w.home().join("data/other-app/files/notes.txt"), "theirs").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(w.home().join("node.toml"), w.docs().join("config-link")).unwrap();
    let everything = Grants {
        read: vec![w.root.clone()],
        write: vec![w.root.clone()],
        ..Grants::default()
    };
    let got = answers(
        &w.sandbox,
        &w.ctx(everything),
        &[
            ("fs", json!({"op": "read", "path": w.home().join("node.toml")})),
            ("fs", json!({"op": "list", "path": w.home()})),
            (
                "fs",
                json!({"op": "read", "path": w.home().join("data/other-app/files/notes.txt")}),
            ),
            (
                "fs",
                json!({"op": "write", "path": w.home().join("cache/modules/planted"), "content": "x"}),
            ),
            (
                "fs",
                json!({"op": "read", "path": "$APP_DATA/../../other-app/files/notes.txt"}),
            ),
            ("fs", json!({"op": "read", "path": w.docs().join("config-link")})),
            // Still reachable: the rest of the grant and the app's own folder.
            ("fs", json!({"op": "read", "path": w.docs().join("notes.txt")})),
            ("fs", json!({"op": "write", "path": "$APP_DATA/mine.txt", "content": "ok"})),
            ("fs", json!({"op": "read", "path": "$APP_DATA/mine.txt"})),
        ],
    )
    .await;
    for refused in &got[..6] {
        assert_eq!(error_code(refused), "permission_denied", "{refused}");
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains("the node's own folder"), "{message}");
    }
    assert!(!w.home().join("cache/modules/planted").exists());
    assert_eq!(got[6], json!({"ok": "hello from docs"}));
    assert_eq!(got[7], json!({"ok": null}));
    assert_eq!(got[8], json!({"ok": "ok"}));
}

#[tokio::test]
async fn a_request_over_the_input_cap_is_refused_before_it_is_read() {
    let w = World::new();
    // 17 MiB of request (not even JSON): answered too_large, not copied or parsed.
    let len = 17u32 << 20;
    let wat = format!(
        r#"(module
  (import "aisapp_v1" "fs" (func $fs (param i32 i32) (result i32)))
  (import "aisapp_v1" "result" (func $result (param i32 i32) (result i32)))
  (import "aisapp_v1" "emit" (func $emit (param i32 i32)))
  (memory (export "memory") 300)
  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 65536)
  (func (export "aisapp_run") (param i32 i32) (result i32) (local $n i32)
    (drop (call $fs (i32.const 131072) (i32.const {len})))
    (local.set $n (call $result (i32.const 0) (i32.const 65536)))
    (call $emit (i32.const 0) (local.get $n))
    i32.const 0))"#
    );
    let (result, out) = run_wat(&w.sandbox, &w.ctx(Grants::default()), &wat).await;
    result.expect("the action runs");
    let answer: Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(error_code(&answer), "too_large", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests are limited to"),
        "{answer}"
    );
}
