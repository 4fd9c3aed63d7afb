#!/usr/bin/env bash
# Brings up the whole system on this machine, on embedded defaults:
#   relay-edge (SQLite, self-signed certificate, the web app) on http://localhost:8080
#   and udp 4433, the example mini-apps built from source and published to its
#   marketplace (first start only), a desktop node signed in as the demo user with
#   hello-ai installed from that marketplace,
#   and an AI provider: OpenAI when OPENAI_API_KEY is set, otherwise the local
#   echo provider (a stand-in that speaks OpenAI's streaming format).
# Everything it keeps lives in .local/ (delete it to start over). Ctrl-C stops it all.
# What it needs (a C toolchain, clang-14, the wasm32 target, Node.js and the web app's
# packages) is checked first by scripts/prereqs.sh, which installs it when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

HTTP_PORT=${HTTP_PORT:-8080}
QUIC_PORT=${QUIC_PORT:-4433}
DEMO_EMAIL=${DEMO_EMAIL:-demo@aisuperapp.local}
DEMO_PASSWORD=${DEMO_PASSWORD:-demo-password}
STATE=.local
BIN=target/debug
mkdir -p "$STATE"

echo "==> prerequisites"
# Installs what is missing when run as root (Debian packages, the wasm32 target, the web
# app's npm packages); otherwise names the one command that does, and stops here.
scripts/prereqs.sh dev

echo "==> building (first time: a few minutes)"
cargo build --locked --workspace --quiet
scripts/build-guests.sh >/dev/null
(cd browser-client && npm run build --silent >/dev/null)

pids=()
cleanup() {
  trap - INT TERM EXIT
  # INT lets each process drain; a process still starting up has not installed its
  # handler yet (background jobs ignore INT until then), so TERM follows after a grace.
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

if [ -n "${OPENAI_API_KEY:-}" ]; then
  AI_BASE_URL=${AI_BASE_URL:-https://api.openai.com/v1}
  echo "==> AI provider: $AI_BASE_URL"
else
  "$BIN/fake-provider" --listen 127.0.0.1:0 > "$STATE/provider.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do grep -qs 'fake-provider: ' "$STATE/provider.log" && break; sleep 0.1; done
  AI_BASE_URL=$(sed -n 's/^fake-provider: //p' "$STATE/provider.log")
  [ -n "$AI_BASE_URL" ] || { echo "the local provider did not start:" >&2; cat "$STATE/provider.log" >&2; exit 1; }
  echo "==> AI provider: local echo provider at $AI_BASE_URL (set OPENAI_API_KEY to use OpenAI)"
fi

"$BIN/relay-edge" --data-dir "$STATE/relay" user add "$DEMO_EMAIL" --password "$DEMO_PASSWORD" --if-missing >/dev/null
"$BIN/relay-edge" --data-dir "$STATE/relay" serve \
  --http-listen "127.0.0.1:$HTTP_PORT" --quic-listen "0.0.0.0:$QUIC_PORT" \
  --web-root browser-client/dist > "$STATE/relay.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do grep -qs 'relay-edge: http' "$STATE/relay.log" && break; sleep 0.1; done
grep -q 'relay-edge: http' "$STATE/relay.log" || { cat "$STATE/relay.log"; exit 1; }

# The example mini-apps, built from source above, are published once by the demo user
# (the portal checks and signs them with the relay's platform key).
if [ ! -f "$STATE/examples-published" ]; then
  mkdir -p "$STATE/bundles"
  for app in examples/*/; do
    [ -f "$app/manifest.json" ] || continue
    name=$(basename "$app")
    wasm=()
    # A Rust app's module is built by scripts/build-guests.sh under its crate's name.
    [ -f "$app/Cargo.toml" ] && wasm=(--wasm "target/guest/wasm32-unknown-unknown/release/${name//-/_}.wasm")
    "$BIN/aisapp" pack "$app" "${wasm[@]}" -o "$STATE/bundles/$name.aisapp" >/dev/null
    AISA_PASSWORD="$DEMO_PASSWORD" "$BIN/aisapp" publish "$STATE/bundles/$name.aisapp" \
      --relay "http://127.0.0.1:$HTTP_PORT" --email "$DEMO_EMAIL" >/dev/null
    echo "==> published $name to the marketplace"
  done
  touch "$STATE/examples-published"
fi

NODE_HOME="$STATE/desktop"
# The demo node keeps its secrets in the OS secret store where there is one. On a bare
# machine or in a container (no D-Bus session) it uses the encrypted file, which needs a
# passphrase: this demo keeps one in its state folder (mode 0600), for this demo only.
if [ -z "${DBUS_SESSION_BUS_ADDRESS:-}" ] && [ -z "${AISA_PASSPHRASE:-}" ] && [ -z "${AISA_PASSPHRASE_FILE:-}" ]; then
  [ -f "$STATE/demo-passphrase" ] || (umask 077 && head -c 24 /dev/urandom | base64 > "$STATE/demo-passphrase")
  export AISA_PASSPHRASE_FILE="$STATE/demo-passphrase"
fi
export AISA_JS_RUNTIME=target/guest/wasm32-unknown-unknown/release/aisa_js_runtime.wasm
if [ ! -f "$NODE_HOME/node.toml" ]; then
  printf '%s' "$DEMO_PASSWORD" | "$BIN/desktop-node" --home "$NODE_HOME" login \
    --relay "http://127.0.0.1:$HTTP_PORT" --email "$DEMO_EMAIL" --password-stdin --name "this computer"
fi
if ! "$BIN/desktop-node" --home "$NODE_HOME" apps list | grep -q '^hello-ai'; then
  "$BIN/desktop-node" --home "$NODE_HOME" apps install hello-ai --yes
fi
OPENAI_API_KEY=${OPENAI_API_KEY:-local} "$BIN/desktop-node" --home "$NODE_HOME" run \
  --ai-base-url "$AI_BASE_URL" > "$STATE/desktop.log" 2>&1 &
pids+=($!)
# The first start compiles the JS runtime (seconds; the compiled code is cached after).
for _ in $(seq 600); do grep -qs 'connected to the relay' "$STATE/desktop.log" && break; sleep 0.2; done
grep -q 'connected to the relay' "$STATE/desktop.log" || { cat "$STATE/desktop.log"; exit 1; }

cat <<MSG

  AI SuperApp is running.
    Open   http://localhost:$HTTP_PORT   in Chromium or Firefox
    Login  $DEMO_EMAIL / $DEMO_PASSWORD
    Logs   $STATE/relay.log, $STATE/desktop.log
  Ctrl-C stops everything.

MSG
wait
