//! A Rust mini-app built from source with the guest SDK (`examples/notes`), run in the
//! desktop node's sandbox with grants: storage across actions, files in `$APP_DATA` and in
//! a granted folder, CSV through the host, env, and refusals outside the grants.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use aisa_node::permissions::Grants;
use aisa_node::sandbox::{ActionContext, LoadedModule, Sandbox};
use aisa_testkit::fakes::NoAi;
use tokio::sync::mpsc;

/// Builds `examples/notes` for wasm32 as `scripts/build-guests.sh` builds hello-ai.
fn notes_wasm() -> PathBuf {
    let root = aisa_testkit::guest::workspace_root();
    let target_dir = root.join("target/guest");
    let status = aisa_testkit::guest::cargo()
        .current_dir(&root)
        .args(["build", "--quiet", "--release", "-p", "notes"])
        .args(["--target", "wasm32-unknown-unknown", "--target-dir"])
        .arg(&target_dir)
        .args(["--config", "profile.release.debug=false"])
        .args(["--config", "profile.release.strip=true"])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building notes for wasm32 failed");
    target_dir.join("wasm32-unknown-unknown/release/notes.wasm")
}

async fn run(
    sandbox: &Sandbox,
    module: &LoadedModule,
    ctx: &ActionContext,
    action: &str,
    payload: serde_json::Value,
) -> Result<String, String> {
    let input = serde_json::json!({ "action": action, "payload": payload }).to_string();
    let (tx, mut rx) = mpsc::channel(64);
    let result = sandbox.run(module, ctx, &input, tx).await;
    let mut out = String::new();
    while let Ok(chunk) = rx.try_recv() {
        out.push_str(&chunk);
    }
    result.map(|()| out).map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_rust_sdk_guest_uses_storage_files_csv_and_env_within_its_grants() {
    let wasm = std::fs::read(notes_wasm()).expect("notes.wasm");
    let sandbox = Sandbox::new().expect("sandbox");
    let module = sandbox
        .load(&wasm)
        .expect("the SDK's imports are all host API");
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let docs = root.join("Documents");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("in.csv"), "when,note\nmon,\"water, plants\"\n").unwrap();
    std::fs::write(root.join("secret.csv"), "note\nsecret\n").unwrap();
    let home = root.join("node");
    let ctx = ActionContext::new("notes", "0.3.0", &home, Arc::new(NoAi)).with_grants(Grants {
        read: vec![docs.clone()],
        write: vec![docs.clone()],
        ..Grants::default()
    });
    let r = |action: &'static str, payload: serde_json::Value| {
        let (sandbox, module, ctx) = (&sandbox, &module, &ctx);
        async move { run(sandbox, module, ctx, action, payload).await }
    };

    assert_eq!(
        r("add", serde_json::json!({"text": "buy milk"}))
            .await
            .unwrap(),
        "saved note 1"
    );
    // A new instance for every action: the note survived in the app's storage.
    assert_eq!(
        r("add", serde_json::json!({"text": "call Bo"}))
            .await
            .unwrap(),
        "saved note 2"
    );
    let imported = r("import", serde_json::json!({"path": docs.join("in.csv")})).await;
    assert_eq!(imported.unwrap(), "imported 1 notes");
    assert_eq!(
        r("list", serde_json::json!({})).await.unwrap(),
        "1. buy milk\n2. call Bo\n3. water, plants\n"
    );
    assert_eq!(
        std::fs::read_to_string(home.join("data/notes/files/notes.md")).unwrap(),
        "- buy milk\n- call Bo\n- water, plants\n"
    );
    let export = docs.join("out/notes.md");
    let exported = r("export", serde_json::json!({"path": export}))
        .await
        .unwrap();
    assert!(exported.starts_with("exported 3 notes"), "{exported}");
    assert!(
        std::fs::read_to_string(&export)
            .unwrap()
            .contains("- call Bo")
    );

    let outside = r(
        "import",
        serde_json::json!({"path": root.join("secret.csv")}),
    )
    .await;
    let err = outside.expect_err("outside the grants");
    assert!(err.contains("permission_denied"), "{err}");
    let outside = r("export", serde_json::json!({"path": root.join("x.md")})).await;
    assert!(
        outside
            .expect_err("outside the grants")
            .contains("permission_denied")
    );
    assert!(!root.join("x.md").exists());

    let about = r("about", serde_json::json!({})).await.unwrap();
    assert!(about.starts_with("notes 0.3.0 on desktop-node "), "{about}");
    assert!(!about.contains(&*root.to_string_lossy()));
}
