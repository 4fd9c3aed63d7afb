#!/usr/bin/env bash
# Builds the example mini-apps from source into wasm (target/guest/…/hello_ai.wasm).
set -euo pipefail
cd "$(dirname "$0")/.."
# The same command as testkit's guest builder (testkit/src/guest.rs): keep them in step.
cargo build --quiet --locked --release -p hello-ai --target wasm32-unknown-unknown \
  --target-dir target/guest --config profile.release.debug=false --config profile.release.strip=true
echo "built target/guest/wasm32-unknown-unknown/release/hello_ai.wasm"
