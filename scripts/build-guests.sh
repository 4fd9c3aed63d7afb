#!/usr/bin/env bash
# Builds the guests from source into wasm: the example mini-app
# (target/guest/…/hello_ai.wasm) and the JavaScript mini-app runtime, QuickJS compiled
# with clang-14 (target/guest/…/aisa_js_runtime.wasm).
set -euo pipefail
cd "$(dirname "$0")/.."
# The same commands as testkit's guest builder (testkit/src/guest.rs): keep them in step.
cargo build --quiet --locked --release -p hello-ai --target wasm32-unknown-unknown \
  --target-dir target/guest --config profile.release.debug=false --config profile.release.strip=true
echo "built target/guest/wasm32-unknown-unknown/release/hello_ai.wasm"
# The notes example (file access through the guest SDK): the browser tests' file-field
# app (browser-client/test/browser/files.test.ts).
cargo build --quiet --locked --release -p notes --target wasm32-unknown-unknown \
  --target-dir target/guest --config profile.release.debug=false --config profile.release.strip=true
echo "built target/guest/wasm32-unknown-unknown/release/notes.wasm"

for tool in clang-14 llvm-ar-14; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$tool is missing (it compiles QuickJS for wasm32): apt-get install clang-14 llvm-14" >&2
    exit 1
  fi
done
# runtimes/js is its own workspace (never built for the host); its release profile is
# opt-level "s", LTO, stripped.
CC_wasm32_unknown_unknown=clang-14 AR_wasm32_unknown_unknown=llvm-ar-14 \
  cargo build --quiet --locked --release --manifest-path runtimes/js/Cargo.toml \
  --target wasm32-unknown-unknown --target-dir target/guest
js=target/guest/wasm32-unknown-unknown/release/aisa_js_runtime.wasm
echo "built $js ($(stat -c %s "$js") bytes)"
