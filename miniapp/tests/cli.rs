//! The `aisapp` binary end to end, as an author uses it: new → validate → pack → keygen →
//! sign → verify for a JS app, and verify refusing a bundle changed after signing.

#![allow(clippy::unwrap_used)] // a test that cannot set up should panic

use std::path::Path;
use std::process::{Command, Output};

fn aisapp(dir: &Path, args: &[&str]) -> Output {
    aisapp_with(dir, args, &[])
}

/// Runs `aisapp` with only these of its variables set (and no proxy in the way).
fn aisapp_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aisapp"));
    cmd.current_dir(dir).args(args);
    for var in [
        "AISA_TOKEN",
        "AISA_RELAY_URL",
        "AISAPP_TOKEN",
        "AISAPP_RELAY",
        "AISA_PASSWORD",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied()).output().unwrap()
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
    assert!(cargo.contains("aisa-guest = { path = "), "{cargo}");
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

/// A request the fake relay saw: method, path, lowercased headers, body.
type Seen = (String, String, String, Vec<u8>);

/// A stand-in for the relay's sign-in and portal endpoints, on loopback: answers each
/// request with `reply(method, path, headers, body)` and records what it saw.
fn fake_relay(
    reply: impl Fn(&str, &str, &str, &[u8]) -> (u16, String) + Send + 'static,
) -> (String, std::sync::mpsc::Receiver<Seen>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            loop {
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                    break;
                }
                let mut headers = String::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    headers.push_str(&line.to_ascii_lowercase());
                }
                let len: usize = headers
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                let mut parts = request_line.split_whitespace();
                let (method, path) = (parts.next().unwrap(), parts.next().unwrap());
                let (status, answer) = reply(method, path, &headers, &body);
                write!(
                    writer,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                    answer.len()
                )
                .unwrap();
                let _ = tx.send((method.to_owned(), path.to_owned(), headers, body));
            }
        }
    });
    (url, rx)
}

#[test]
fn publish_signs_in_and_uploads_the_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["new", "Pub", "--kind", "js"]);
    ok(d, &["pack", "pub", "-o", "pub.aisapp"]);
    let (relay, seen) = fake_relay(|_, path, headers, body| match path {
        "/api/auth/login" => {
            let creds: serde_json::Value = serde_json::from_slice(body).unwrap();
            if creds["password"] == "s3cret-pass" {
                (200, r#"{"token":"tok-1","refresh_token":"r","user_id":"u","email":"a@b.c","expires_in":900}"#.into())
            } else {
                (401, r#"{"error":"wrong email or password"}"#.into())
            }
        }
        "/api/portal/apps" if headers.contains("authorization: bearer tok-1") => {
            let bundle = aisa_miniapp::Bundle::from_zip_bytes(body).unwrap();
            let m = bundle.manifest().unwrap();
            (201, serde_json::json!({"id": m.id, "version": m.version.to_string(), "sha256": "ab", "size": body.len(), "key_id": "0011223344556677"}).to_string())
        }
        "/api/portal/apps" => (401, r#"{"error":"sign in first"}"#.into()),
        _ => (404, r#"{"error":"no such route"}"#.into()),
    });
    let out = aisapp_with(
        d,
        &[
            "publish",
            "pub.aisapp",
            "--relay",
            &relay,
            "--email",
            "a@b.c",
        ],
        &[("AISA_PASSWORD", "s3cret-pass")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("published pub 0.1.0"), "{stdout}");
    assert!(stdout.contains("0011223344556677"), "{stdout}");
    let (_, login_path, _, _) = seen.recv().unwrap();
    assert_eq!(login_path, "/api/auth/login");
    let (method, path, headers, body) = seen.recv().unwrap();
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", "/api/portal/apps")
    );
    assert!(
        headers.contains("content-type: application/zip"),
        "{headers}"
    );
    assert_eq!(body, std::fs::read(d.join("pub.aisapp")).unwrap());

    // A token from the environment, and the portal's refusal shown as it is.
    let (relay, _seen) = fake_relay(|_, _, _, _| {
        (
            409,
            r#"{"error":"pub 0.1.0 is already published; versions are immutable"}"#.into(),
        )
    });
    let out = aisapp_with(
        d,
        &["publish", "pub"],
        &[("AISA_TOKEN", "tok-1"), ("AISA_RELAY_URL", &relay)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("409") && stderr.contains("versions are immutable"),
        "{stderr}"
    );
    assert!(!stderr.contains("deprecated"), "{stderr}");
    // The old names still work, each with a one-line warning naming the new one.
    let out = aisapp_with(
        d,
        &["publish", "pub"],
        &[("AISAPP_TOKEN", "tok-1"), ("AISAPP_RELAY", &relay)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("409"), "{stderr}");
    assert!(
        stderr.contains("AISAPP_TOKEN is deprecated; set AISA_TOKEN instead")
            && stderr.contains("AISAPP_RELAY is deprecated; set AISA_RELAY_URL instead"),
        "{stderr}"
    );
    // A wrong password.
    let (relay, _seen) =
        fake_relay(|_, _, _, _| (401, r#"{"error":"wrong email or password"}"#.into()));
    let out = aisapp_with(
        d,
        &[
            "publish",
            "pub.aisapp",
            "--relay",
            &relay,
            "--email",
            "a@b.c",
        ],
        &[("AISA_PASSWORD", "nope")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("signing in failed") && stderr.contains("wrong email or password"),
        "{stderr}"
    );
}

#[test]
fn a_rust_app_builds_to_a_module_that_passes_the_checks() {
    // Compiles the template and the guest SDK for wasm32-unknown-unknown in a temporary
    // target folder (`rustup target add wasm32-unknown-unknown`; scripts/test.sh does).
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    ok(d, &["new", "Rusty Writer", "--kind", "rust"]);
    let target = d.join("target");
    let out = aisapp_with(
        d,
        &["build", "rusty-writer"],
        // Only crates the workspace already uses: no registry access needed.
        &[
            ("CARGO_TARGET_DIR", target.to_str().unwrap()),
            ("CARGO_NET_OFFLINE", "true"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("passes every check"), "{stdout}");
    let module = std::fs::read(d.join("rusty-writer/logic.wasm")).unwrap();
    let imports = aisa_miniapp::wasm::host_imports(&module);
    assert!(imports.iter().any(|i| i == "ai_generate"), "{imports:?}");
    let packed = ok(d, &["pack", "rusty-writer", "-o", "rusty.aisapp"]);
    assert!(packed.contains("entry wasm"), "{packed}");
}
