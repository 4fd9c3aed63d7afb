//! Embeds the JavaScript mini-app runtime (QuickJS compiled to wasm32 from
//! `runtimes/js` by `scripts/build-guests.sh`) into the `desktop-node` binary, so an
//! installed node runs JS mini-apps with nothing beside it.
//!
//! The module is taken from `$AISA_JS_RUNTIME_WASM` when set at build time, else from
//! `target/guest/wasm32-unknown-unknown/release/aisa_js_runtime.wasm` in the workspace
//! (where `scripts/build-guests.sh` puts it). Found: it is copied into `OUT_DIR` and the
//! crate is compiled with `--cfg aisa_embedded_js_runtime` (`js_apps::embedded_runtime`).
//! Not found: the build goes on with a warning and the node looks for the runtime at run
//! time only (`AISA_JS_RUNTIME`, beside the executable, `<data>/runtimes/`); with
//! `AISA_REQUIRE_JS_RUNTIME=1` (release packaging) it stops with an error instead.
//!
//! What this does not do: build the runtime. Cargo cannot build a wasm32 crate of
//! another workspace from a build script without nesting cargo invocations on the same
//! target directory lock; `scripts/build-guests.sh` builds it from source.

use std::path::{Path, PathBuf};

const ENV_WASM: &str = "AISA_JS_RUNTIME_WASM";
const ENV_REQUIRE: &str = "AISA_REQUIRE_JS_RUNTIME";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(aisa_embedded_js_runtime)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed={ENV_WASM}");
    println!("cargo::rerun-if-env-changed={ENV_REQUIRE}");
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let release_dir = manifest_dir.join("../target/guest/wasm32-unknown-unknown/release");
    let (wasm, explicit) = match std::env::var_os(ENV_WASM).filter(|v| !v.is_empty()) {
        Some(path) => (PathBuf::from(path), true),
        None => (release_dir.join("aisa_js_runtime.wasm"), false),
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"))
        .join("aisa-js-runtime.wasm");
    if is_wasm(&wasm) {
        std::fs::copy(&wasm, &out).expect("copy the JS runtime into OUT_DIR");
        println!("cargo::rerun-if-changed={}", wasm.display());
        println!("cargo::rustc-cfg=aisa_embedded_js_runtime");
        return;
    }
    let _ = std::fs::remove_file(&out);
    let wanted = std::env::var_os(ENV_REQUIRE).is_some_and(|v| v == "1");
    let message = format!(
        "the JavaScript runtime is not built ({} is missing or not wasm): run scripts/build-guests.sh; this desktop-node will look for it at run time only",
        wasm.display()
    );
    if explicit || wanted {
        panic!("{message} ({ENV_WASM} or {ENV_REQUIRE}=1 asked for it)");
    }
    println!("cargo::warning={message}");
    // A path that does not exist would make cargo run this script (and rebuild the
    // crate) on every build; the folder the runtime will appear in does not.
    if std::fs::create_dir_all(&release_dir).is_ok() {
        println!("cargo::rerun-if-changed={}", release_dir.display());
    }
}

fn is_wasm(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == *b"\0asm")
}
