//! Builds the guests from source into wasm, once per test process: the example mini-app
//! and the JavaScript runtime (QuickJS).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace")
        .to_owned()
}

/// A `cargo` command for a test to run: the `cargo` that runs the tests (`$CARGO`),
/// without the variables cargo sets for the test process itself (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_*`, `CARGO_BIN_EXE_*`, `OUT_DIR`, ...).
///
/// Build scripts read some of those (ring's reads `CARGO_MANIFEST_DIR` and
/// `CARGO_PKG_NAME`): inherited, they differ from what a build from a shell sees, so a
/// build started by a test reran ring's build script and rebuilt everything above ring
/// (rustls, quinn, sqlx, reqwest and our crates), and the next ordinary build did it all
/// again: about two minutes of CI each way.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if is_set_for_the_test(name) {
            command.env_remove(name);
        }
    }
    command
}

/// Whether cargo sets `name` for a test or build script it runs (rather than a person
/// for every cargo command: `CARGO_HOME`, `CARGO_TARGET_DIR`, `CARGO_INCREMENTAL`, ...).
fn is_set_for_the_test(name: &str) -> bool {
    const PREFIXES: [&str; 5] = [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_BIN_",
        "CARGO_CFG_",
        "DEP_",
    ];
    const NAMES: [&str; 5] = [
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// Path of `hello_ai.wasm`, built with `cargo build --target wasm32-unknown-unknown` in a
/// separate target directory (so that it does not wait on the outer build's lock).
pub fn hello_ai_wasm() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        let target_dir = root.join("target/guest");
        let status = cargo()
            .current_dir(&root)
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "hello-ai",
                "--target",
                "wasm32-unknown-unknown",
                "--target-dir",
            ])
            .arg(&target_dir)
            // As scripts/build-guests.sh: no debug info in the module.
            .args([
                "--config",
                "profile.release.debug=false",
                "--config",
                "profile.release.strip=true",
            ])
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building hello-ai for wasm32 failed (rustup target add wasm32-unknown-unknown?)"
        );
        target_dir.join("wasm32-unknown-unknown/release/hello_ai.wasm")
    })
}

/// Path of `aisa_js_runtime.wasm`, the JavaScript mini-app runtime (QuickJS), built
/// from `runtimes/js` for wasm32 with clang-14 compiling QuickJS, into `target/guest`.
/// The same command as `scripts/build-guests.sh`: keep them in step.
pub fn js_runtime_wasm() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        let target_dir = root.join("target/guest");
        let status = cargo()
            .current_dir(&root)
            .env("CC_wasm32_unknown_unknown", "clang-14")
            .env("AR_wasm32_unknown_unknown", "llvm-ar-14")
            .args([
                "build",
                "--quiet",
                "--locked",
                "--release",
                "--manifest-path",
                "runtimes/js/Cargo.toml",
                "--target",
                "wasm32-unknown-unknown",
                "--target-dir",
            ])
            .arg(&target_dir)
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building the JS runtime for wasm32 failed (needs clang-14 and llvm-ar-14: \
             apt-get install clang-14 llvm-14)"
        );
        target_dir.join("wasm32-unknown-unknown/release/aisa_js_runtime.wasm")
    })
}

/// A signed-bundle-ready zip of an "echo" mini-app running `hello_ai.wasm`: version 0.1.0,
/// one `echo` action taking `text`, permissions `ai` and `api.example.com`. The id, name
/// and description are the caller's (tests tell their apps apart by them).
pub fn echo_bundle(id: &str, name: &str, description: &str) -> Vec<u8> {
    let json = |v: serde_json::Value| serde_json::to_vec_pretty(&v).expect("json");
    let mut files = std::collections::BTreeMap::new();
    files.insert(
        "manifest.json".to_owned(),
        json(serde_json::json!({
            "id": id, "name": name, "version": "0.1.0",
            "description": description,
            "category": "writing", "author": {"name": "Test Author"},
            "entry": "wasm", "runtime": ">=0.1.0, <0.2.0"
        })),
    );
    files.insert(
        "action-schema.json".to_owned(),
        json(serde_json::json!({
            "echo": {"type": "object", "required": ["text"],
                     "properties": {"text": {"type": "string"}}}
        })),
    );
    files.insert("ui-schema.json".to_owned(), json(serde_json::json!({})));
    files.insert(
        "permissions.json".to_owned(),
        json(serde_json::json!({"ai": true, "network": ["api.example.com"]})),
    );
    files.insert(
        "logic.wasm".to_owned(),
        std::fs::read(hello_ai_wasm()).expect("hello_ai.wasm"),
    );
    aisa_miniapp::Bundle::from_files(files)
        .expect("a valid bundle")
        .to_zip_bytes()
}

#[cfg(test)]
mod tests {
    use super::is_set_for_the_test;

    #[test]
    fn only_what_cargo_sets_for_a_test_is_removed() {
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_BIN_EXE_relay-edge",
            "OUT_DIR",
        ] {
            assert!(is_set_for_the_test(name), "{name}");
        }
        for name in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_INCREMENTAL",
            "PATH",
            "RUSTUP_TOOLCHAIN",
        ] {
            assert!(!is_set_for_the_test(name), "{name}");
        }
    }
}
