//! The `aisapp` binary end to end, as an author uses it: new → validate → pack → keygen →
//! sign → verify for a JS app, and verify refusing a bundle changed after signing.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::path::Path;
use std::process::{Command, Output};

fn aisapp(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aisapp"))
        .current_dir(dir)
        .args(args)
        .env_remove("AISAPP_TOKEN")
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = aisapp(dir, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "aisapp {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn fails(dir: &Path, args: &[&str]) -> String {
    let out = aisapp(dir, args);
    assert!(!out.status.success(), "aisapp {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_js_app_from_template_to_verified_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    assert!(ok(d, &["new", "SEO Writer", "--kind", "js"]).contains("seo-writer"));
    assert!(d.join("seo-writer/bot-logic.js").is_file());
    assert!(ok(d, &["validate", "seo-writer"]).contains("passes every check"));
    assert!(ok(d, &["build", "seo-writer"]).contains("nothing to compile"));
    let packed = ok(d, &["pack", "seo-writer", "-o", "app.aisapp"]);
    assert!(packed.contains("packed app.aisapp"), "{packed}");
    assert!(ok(d, &["validate", "app.aisapp"]).contains("unsigned"));

    let keys = ok(d, &["keygen", "--out", "author.key"]);
    let public = std::fs::read_to_string(d.join("author.key.pub")).unwrap();
    assert!(keys.contains(public.trim()), "{keys}");
    assert!(fails(d, &["keygen", "--out", "author.key"]).contains("exists"));

    // Not signed yet: verify says so.
    let err = fails(
        d,
        &["verify", "app.aisapp", "--trusted-key", "author.key.pub"],
    );
    assert!(err.contains("not signed"), "{err}");

    assert!(ok(d, &["sign", "app.aisapp", "--key", "author.key"]).contains("signed app.aisapp"));
    let verified = ok(d, &["verify", "app.aisapp", "--trusted-key", public.trim()]);
    assert!(verified.contains("signed by trusted key"), "{verified}");
    ok(
        d,
        &["verify", "app.aisapp", "--trusted-key", "author.key.pub"],
    );

    // Another key does not verify it.
    ok(d, &["keygen", "--out", "other.key"]);
    let err = fails(
        d,
        &["verify", "app.aisapp", "--trusted-key", "other.key.pub"],
    );
    assert!(err.contains("not a trusted key"), "{err}");

    // A file changed after signing is named.
    let zip = std::fs::read(d.join("app.aisapp")).unwrap();
    let mut bundle = aisa_miniapp::Bundle::from_zip_bytes(&zip).unwrap();
    bundle
        .insert(
            "bot-logic.js",
            b"export function write() { return 'hi'; }\n".to_vec(),
        )
        .unwrap();
    std::fs::write(d.join("tampered.aisapp"), bundle.to_zip_bytes()).unwrap();
    let err = fails(
        d,
        &[
            "verify",
            "tampered.aisapp",
            "--trusted-key",
            "author.key.pub",
        ],
    );
    assert!(
        err.contains("bot-logic.js was changed after the bundle was signed"),
        "{err}"
    );
}

#[test]
fn checks_fail_loudly_and_every_subcommand_has_help() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["new", "bad", "--kind", "js"]);
    std::fs::write(
        d.join("bad/bot-logic.js"),
        "const x = require('child_process');\nexport function write() {}\n",
    )
    .unwrap();
    let err = fails(d, &["pack", "bad"]);
    assert!(
        err.contains("bot-logic.js:1: `require(` is not allowed"),
        "{err}"
    );
    assert!(!d.join("bad-0.1.0.aisapp").exists());
    assert!(fails(d, &["new", "bad"]).contains("not empty"));
    let err = fails(d, &["publish", "bad", "--relay", "http://127.0.0.1:9"]);
    assert!(err.contains("checks failed"), "{err}");

    for sub in [
        "new", "build", "validate", "pack", "sign", "keygen", "verify", "publish",
    ] {
        let help = ok(d, &[sub, "--help"]);
        assert!(help.contains("Usage: aisapp"), "{sub}: {help}");
    }
}

#[test]
fn a_rust_template_validates_before_its_first_build() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["new", "Rusty", "--kind", "rust", "--dir", "rusty"]);
    let cargo = std::fs::read_to_string(d.join("rusty/Cargo.toml")).unwrap();
    assert!(cargo.contains("aisapp-guest = { path = "), "{cargo}");
    let out = ok(d, &["validate", "rusty"]);
    assert!(out.contains("run `aisapp build rusty`"), "{out}");
    let err = fails(d, &["pack", "rusty"]);
    assert!(err.contains("the bundle has no logic.wasm"), "{err}");
}

#[test]
fn the_example_apps_pass_the_checks() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let tmp = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("manifest.json").is_file() {
            continue;
        }
        seen += 1;
        let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
        if manifest.contains("\"wasm\"") {
            // The real module is built by scripts/build-guests.sh; a module with the same
            // imports and exports stands in for it here.
            let module = wat::parse_str(
                r#"(module
                  (import "aisapp_v1" "emit" (func (param i32 i32)))
                  (import "aisapp_v1" "ai_generate" (func (param i32 i32) (result i32)))
                  (import "aisapp_v1" "ai_next" (func (param i32 i32 i32) (result i32)))
                  (import "aisapp_v1" "fail" (func (param i32 i32)))
                  (memory (export "memory") 1)
                  (func (export "aisapp_alloc") (param i32) (result i32) i32.const 0)
                  (func (export "aisapp_run") (param i32 i32) (result i32) i32.const 0))"#,
            )
            .unwrap();
            let wasm = tmp.path().join("logic.wasm");
            std::fs::write(&wasm, module).unwrap();
            let out = tmp.path().join("example.aisapp");
            let packed = ok(
                tmp.path(),
                &[
                    "pack",
                    dir.to_str().unwrap(),
                    "--wasm",
                    wasm.to_str().unwrap(),
                    "-o",
                    out.to_str().unwrap(),
                ],
            );
            assert!(packed.contains("entry wasm"), "{packed}");
        } else {
            let out = ok(tmp.path(), &["validate", dir.to_str().unwrap()]);
            assert!(out.contains("passes every check"), "{out}");
        }
    }
    assert!(seen >= 1, "no example apps found in {}", examples.display());
}
