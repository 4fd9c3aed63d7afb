#!/usr/bin/env bash
# The one check command, for developers and CI alike: installs what the tests need,
# then formatting, lints, the Rust tests (the system tests twice: on SQLite and on a
# PostgreSQL server it starts on loopback), a fuzz smoke of every target, the TypeScript
# checks and unit tests, and the end-to-end test in real Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

step() { printf '\n=== %s\n' "$*"; }

step "prerequisites"
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing: sudo apt-get install chromium" >&2
    exit 1
  fi
fi
# clang-14 + llvm-ar-14 compile QuickJS for the JS runtime guest (runtimes/js).
if ! command -v clang-14 >/dev/null 2>&1 || ! command -v llvm-ar-14 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang-14 llvm-14 >/dev/null
  else
    echo "clang-14 is missing: sudo apt-get install clang-14 llvm-14" >&2
    exit 1
  fi
fi
if command -v rustup >/dev/null 2>&1; then
  rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target add wasm32-unknown-unknown
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "guests (wasm32, from source): the example mini-app and the JS runtime"
scripts/build-guests.sh
# runtimes/js is its own workspace (built only for wasm32): its own fmt and clippy.
cargo fmt --manifest-path runtimes/js/Cargo.toml -- --check
CC_wasm32_unknown_unknown=clang-14 AR_wasm32_unknown_unknown=llvm-ar-14 \
  cargo clippy --locked --release --manifest-path runtimes/js/Cargo.toml \
  --target wasm32-unknown-unknown --target-dir target/guest -- -D warnings

step "cargo build"
cargo build --workspace --locked

step "cargo test (relay on embedded SQLite)"
cargo test --workspace --locked

step "system tests again, the relay on PostgreSQL"
eval "$(scripts/services.sh start)"
trap '"$ROOT/scripts/services.sh" stop || true' EXIT
cargo test --locked -p testkit --test system --test install
cargo test --locked -p relay-edge --test marketplace --test hardening

step "fuzz smoke: every target of fuzz/ for a few seconds (docs/security.md, Fuzzing)"
# Unoptimised build (quick to build); campaigns use scripts/fuzz.sh's release default.
FUZZ_SECONDS=${FUZZ_SECONDS:-5} FUZZ_PROFILE=${FUZZ_PROFILE:-dev} scripts/fuzz.sh

step "browser-client: npm ci, type check, build, unit tests"
cd browser-client
npm ci --no-audit --no-fund --loglevel=error
npm run check
npm run build
npm test

step "end to end in Chromium"
npx vitest run test/e2e
