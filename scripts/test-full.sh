#!/usr/bin/env bash
# The heavy checks CI cannot afford, run by hand or nightly. scripts/test.sh first (it
# installs what the tests need and builds the guests); then each step below. Add a step
# by appending a `step` line and its commands; keep each bounded in time.
#
#   scripts/test-full.sh            # every step
#   SKIP_CHAOS=1 scripts/test-full.sh
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

if [ -z "${SKIP_CHAOS:-}" ]; then
  # docs/security.md, "Load and chaos": 1,000 concurrent echo streams for 60 s through a
  # relay-edge and a desktop-node process on loopback, killed and restarted at random
  # (seed printed; CHAOS_SEED replays it), then two calm rounds that measure memory.
  # The binaries are release builds: a debug relay and node measure the debug build.
  step "load and chaos: ${CHAOS_STREAMS:=1000} streams for ${CHAOS_SECS:=60} s"
  # The same package set as the benches build, so the two share their release artifacts.
  cargo build --release --locked -p aisa-benches -p aisa-relay -p aisa-node
  AISA_BIN_DIR="$PWD/target/release" \
    CHAOS_STREAMS="$CHAOS_STREAMS" CHAOS_SECS="$CHAOS_SECS" \
    CHAOS_NODE_KILLS="${CHAOS_NODE_KILLS:-3}" CHAOS_RELAY_KILLS="${CHAOS_RELAY_KILLS:-2}" \
    CHAOS_CALM_SECS="${CHAOS_CALM_SECS:-20}" \
    cargo test --locked -p aisa-testkit --test chaos -- --nocapture
fi

if [ -z "${SKIP_ENGINES:-}" ]; then
  # browser-client/test/browser/engines.test.ts: every browser flow (sign-in, run, cancel,
  # install, pairing, encrypted action, errors, history, schema form, onboarding, phone
  # width, staying signed in, files: browse and upload, the model choice, OpenID sign-in
  # and sign-in methods, sessions and sign out everywhere, a run across screens, a desktop
  # going offline, and one killed mid-run, the Devices page, a denied install) in Chromium,
  # Firefox ESR and WebKitGTK (~3 min), each
  # against its own relay and node (scripts/test.sh built the binaries, guests and web
  # app). Records and screenshots: browser-client/test-artifacts/engines/<engine>/.
  step "browser flows in every engine"
  (cd browser-client && AISA_BROWSER_ENGINES=all npm run test:engines)
fi

if [ -z "${SKIP_ENGINE_SUITES:-}" ]; then
  # The web app's main browser suites (every browser-client/test/browser/*.test.ts but the
  # engine flows and the harness's own rules: sign-in and sessions, onboarding, pairing and
  # encryption, installs, history, OIDC, errors, phone width, the WebSocket path, and any
  # suite added later) in Firefox ESR, driven by playwright-core over WebDriver BiDi
  # (AISA_BROWSER_ENGINE, test/browser/chromium.ts). Tests an engine cannot run skip with
  # the reason. WebKit is not here: playwright drives only its own WebKit build and
  # Debian's WebKitWebDriver speaks classic WebDriver only, so WebKit runs the engine
  # flows (the step above). Screenshots: browser-client/test-artifacts/firefox/.
  step "web app suites in Firefox ESR"
  (cd browser-client && AISA_BROWSER_ENGINE=firefox npm run test:browser:suites)
fi

if [ -z "${SKIP_UDP_BLOCKED:-}" ]; then
  # browser-client/test/browser/udp-blocked.test.ts, every case (~2 min, root): the
  # desktop and Chromium in a network namespace whose UDP to the relay is dropped; both
  # legs on TCP, UDP back and new streams on QUIC, WebTransport disabled in the page,
  # and UDP cut mid-stream (the running action fails clearly, the next goes over TCP).
  step "web app with UDP really dropped: every case"
  (cd browser-client && AISA_UDP_BLOCKED=full npx vitest run test/browser/udp-blocked.test.ts)
fi

if [ -z "${SKIP_FUZZ:-}" ]; then
  # docs/security.md, "Fuzzing": a campaign of every target, one after the other, each
  # for FUZZ_SECONDS or until 10 million executions.
  step "fuzz campaign: ${FUZZ_SECONDS:=600} s per target"
  FUZZ_SECONDS="$FUZZ_SECONDS" FUZZ_RUNS="${FUZZ_RUNS:-10000000}" scripts/fuzz.sh
fi

if [ -z "${SKIP_WINE:-}" ]; then
  # docs/desktop.md, "Windows": the node built for Windows with mingw-w64, its unit
  # tests and a login + action smoke test against a relay on loopback, under Wine.
  step "desktop node for Windows under Wine"
  scripts/wine-test.sh
fi

if [ -z "${SKIP_MACOS:-}" ]; then
  # docs/desktop.md, "macOS: what is checked": every Rust crate of the node type-checked
  # for both Apple targets (C compiled by a stub, nothing linked: no Apple SDK here).
  step "desktop node: type check for macOS (aarch64 and x86_64)"
  MACOS_CHECK_TESTS=1 scripts/cross-macos-check.sh aarch64-apple-darwin x86_64-apple-darwin
fi

if [ -z "${SKIP_PACKAGES:-}" ]; then
  # docs/desktop.md, "Building the packages": the .deb of a release build (xz), installed,
  # run against a relay on loopback and removed; then, unless SKIP_WINE, the Windows
  # installer of the exe scripts/wine-test.sh cross-built (debug; zlib), installed
  # silently under Wine in a fresh prefix, checked, reinstalled without autostart and
  # uninstalled.
  step "packages: release .deb installed and run; Windows installer under Wine"
  cargo build --release --locked -p aisa-benches -p aisa-relay -p aisa-node
  deb=$(scripts/package-deb.sh --binary target/release/desktop-node | tail -1)
  scripts/package-deb-test.sh "$deb"
  if [ -z "${SKIP_WINE:-}" ]; then
    setup=$(scripts/package-windows.sh --fast \
      --exe target/windows/x86_64-pc-windows-gnu/debug/desktop-node.exe | tail -1)
    scripts/package-windows-test.sh "$setup"
  fi
fi

if [ -z "${SKIP_CONTAINER:-}" ]; then
  # deploy/README.md, "Containers": the relay image built with podman from this host's
  # release relay-edge and web app (no base image is pulled), then its binary run from
  # the image's exported root filesystem: /healthz, /readyz, /api/session, the web app.
  step "relay container image: podman build and smoke"
  command -v podman >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman >/dev/null
  cargo build --release --locked -p aisa-relay --bin relay-edge
  [ -f browser-client/dist/index.html ] || (cd browser-client && npm run build)
  deploy/container/build.sh build target/release/relay-edge
  deploy/container/build.sh smoke
fi
