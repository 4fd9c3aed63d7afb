#!/usr/bin/env bash
# The one check command, for developers and CI alike: installs what the tests need
# (scripts/prereqs.sh), then formatting, lints, the Rust tests (the system tests twice:
# on SQLite and on a PostgreSQL server it starts on loopback), a fuzz smoke of every
# target, the TypeScript checks and unit tests, the browser tests in real Chromium, and a
# smoke of the browser flows in Firefox ESR and WebKitGTK.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# Each step says how far into the run it starts (bash's SECONDS), to see where CI's time goes.
# In CI it also says the disk left (a run once ran out of it).
step() {
  local disk=
  [ -z "${CI:-}" ] || disk=", $(df -h --output=avail . | tail -1 | tr -d ' ') free"
  printf '\n=== %s (at %d s%s)\n' "$*" "$SECONDS" "$disk"
}

# CI starts from a clean clone on a disk of unknown size (one run ran out of it): there,
# a target dir no later step reads is removed once its step is done. Locally it is kept
# for the next run.
prune() { if [ -n "${CI:-}" ]; then rm -rf "$@"; fi; }

step "prerequisites"
# As root, installs what is missing (Debian packages: build-essential, clang-14, llvm-14,
# chromium, postgresql, python3; the wasm32 target, rustfmt and clippy); otherwise names
# the one command that does and stops. The same script dev-up.sh runs (its `dev` part).
scripts/prereqs.sh test

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
# The guests were built above, so the node carries the JS runtime: its absence fails.
AISA_EXPECT_EMBEDDED_JS_RUNTIME=1 cargo test --workspace --locked

step "desktop node: secrets in a real Secret Service (private D-Bus session, gnome-keyring)"
scripts/secret-service-test.sh

step "desktop node: cross check for Windows (x86_64-pc-windows-gnu)"
# Type-checks every cfg(windows) path; the Wine run of the tests is scripts/wine-test.sh
# (in scripts/test-full.sh). Its own target dir: the host build's stays untouched.
rustup target list --installed | grep -qx x86_64-pc-windows-gnu || rustup target add x86_64-pc-windows-gnu
cargo check --locked -p aisa-node --target x86_64-pc-windows-gnu --target-dir target/windows
prune target/windows

step "desktop node: type check for macOS (aarch64-apple-darwin; C stubbed, nothing linked)"
# docs/desktop.md, "macOS: what is checked"; both Apple targets in scripts/test-full.sh.
scripts/cross-macos-check.sh aarch64-apple-darwin
prune target/macos

# The test runs below select their tests with `--workspace --test NAME` rather than `-p`:
# `-p` resolves the dependencies' features for that one package, which differ from the
# workspace's, so each `-p` run rebuilt ring, rustls, quinn, sqlx and ours (~4 minutes
# of CI in all); with `--workspace` they reuse the workspace step's build.
step "desktop TCP fallback: UDP really dropped in a network namespace (nftables)"
# A relay, a desktop-node in its own namespace whose UDP to the relay nftables drops:
# the node falls back to TCP within a second, actions stream, it moves back to QUIC when
# UDP returns; a UDP cut mid-stream (~1 min). Skips, saying why, without root.
cargo test --locked --workspace --test fallback

step "system tests again, the relay on PostgreSQL"
eval "$(scripts/services.sh start)"
trap '"$ROOT/scripts/services.sh" stop || true' EXIT
cargo test --locked --workspace --test system --test install
# oidc: the identity table of sign-in with OpenID Connect providers (migration 0007);
# accounts: sessions' auth_time, accounts without a password, pending devices (0008, ~5 s).
cargo test --locked --workspace --test marketplace --test hardening --test oidc --test accounts
# The cluster system test on PostgreSQL: three relay processes, a Redis of its own, a
# desktop on relay 1 and a browser on relay 2; relay 1 killed, then Redis stopped (~20 s).
cargo test --locked --workspace --test cluster three_relay_processes
# Shared state on Redis: two relays against the single Redis and the 3-master Redis
# Cluster that services.sh started (~10 s). Only those: the cases that start their own
# servers (Redis restarted, Sentinel failover, a starting node) ran in the workspace step.
cargo test --locked --workspace --test cluster_state -- single_redis_ redis_cluster_
# PostgreSQL over TLS (sslmode=verify-full with the test CA), migrations from several
# nodes at once (advisory lock), the operator's settings on PostgreSQL, and bundles in
# the S3-compatible store (moto) that services.sh started.
cargo test --locked --workspace --test postgres_tls --test operator --test object_store

step "deploy/: compose file, Kubernetes manifests and systemd units validate"
docker-compose --env-file deploy/compose/example.env -f deploy/compose/docker-compose.yml config -q
kubernetes-validate --strict --quiet -k 1.29.0 deploy/kubernetes/*.yaml
# Only its syntax and keys: the binaries it names are not installed here.
# (Not `tee /dev/stderr`: when stderr is a file, opening it again truncates the log.)
for unit in deploy/relay-edge.service deploy/desktop-node.service; do
  problems=$(systemd-analyze verify "$unit" 2>&1 | grep -v 'is not executable\|No such file or directory' || true)
  if [ -n "$problems" ]; then
    printf '%s: %s\n' "$unit" "$problems" >&2
    exit 1
  fi
done

step "packages: the .deb installed and run, the Windows installer script, the macOS archive"
# docs/desktop.md, "Building the packages" (~1 min): the .deb of the debug node built
# (gzip), installed with dpkg -i, run against a relay on loopback (online, SIGTERM, an
# update found on the relay's /releases/, not replaceable by a user), then removed;
# makensis -WX compiles the Windows installer around a placeholder exe (the cross-built
# exe, installed under Wine: scripts/test-full.sh); the macOS archive's layout, agent plist
# and install scripts, with the Linux binary standing in.
deb=$(scripts/package-deb.sh --binary target/debug/desktop-node --fast --out target/packages/ci | tail -1)
scripts/package-deb-test.sh "$deb"
scripts/package-windows.sh --placeholder --out target/packages/ci >/dev/null
scripts/package-macos-test.sh target/debug/desktop-node
rm -rf target/packages/ci

step "fuzz smoke: every target of fuzz/ for a few seconds (docs/security.md, Fuzzing)"
# Unoptimised build (quick to build); campaigns use scripts/fuzz.sh's release default.
FUZZ_SECONDS=${FUZZ_SECONDS:-5} FUZZ_PROFILE=${FUZZ_PROFILE:-dev} scripts/fuzz.sh
prune target/fuzz

step "browser-client: npm ci, type check, build, unit tests"
cd browser-client
npm ci --no-audit --no-fund --loglevel=error
npm run check
npm run build
npm test

step "browser tests in Chromium"
# Includes the smoke of test/browser/udp-blocked.test.ts (~20 s, root): the relay on a
# veth pair, the desktop and Chromium in a network namespace whose UDP to the relay
# nftables drops; both legs on TCP, an action streams. The full set: test-full.sh.
npm run test:browser

step "desktop face in Chromium (smoke): a browser's install approved by clicking Approve"
# desktop-node/tests/face.rs's Chromium test (docs/desktop.md, "The desktop face"): the
# real relay and `desktop-node run --face`, Chromium under Xvfb opens the face's URL and
# clicks Approve; screenshots kept in target/face-artifacts/. ~40 s (built above).
(cd .. && scripts/face-screenshots.sh)

step "browser flows in Firefox ESR and WebKitGTK (smoke: one flow each)"
# test/browser/engines.test.ts, engines installed by scripts/browsers.sh. Firefox: run
# (sign-in, a WebTransport session, chunks streaming to STREAM_END: the flow the relay's
# held STOP_SENDING fixed, relay-edge/src/splice.rs STOP_GRACE).
# WebKit: run (sign-in through WebDriver, then an action streamed over the WebSocket
# transport: WebKitGTK has no WebTransport) and encrypted (pairing, then a sealed action:
# WebKitGTK cannot keep an X25519 CryptoKey in IndexedDB, src/e2e/keystore.ts falls back
# to the wrapped key). Every flow in every engine: scripts/test-full.sh.
AISA_BROWSER_ENGINES=firefox AISA_BROWSER_FLOWS=run npm run test:engines
AISA_BROWSER_ENGINES=webkit AISA_BROWSER_FLOWS=run,encrypted npm run test:engines
