#!/usr/bin/env bash
# Builds the example mini-apps from source into wasm (target/guest/…/hello_ai.wasm).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked --release -p hello-ai --target wasm32-unknown-unknown --target-dir target/guest
echo "built target/guest/wasm32-unknown-unknown/release/hello_ai.wasm"
