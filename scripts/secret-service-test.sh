#!/usr/bin/env bash
# The node's secrets in a real Secret Service: a private D-Bus session
# (dbus-run-session) with gnome-keyring-daemon's secrets component, unlocked with a
# throwaway password. Runs the store's Secret Service unit test (auto picks it, round
# trip, delete) and the real binary's login + keys + one action through a relay
# (desktop-node/tests/node_process.rs, which expects "secret-service" when a session
# bus is there). Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
have() { command -v "$1" >/dev/null 2>&1; }
missing=()
have dbus-run-session || missing+=(dbus)
have gnome-keyring-daemon || missing+=(gnome-keyring)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "${1:-}" != inside ]; then
  exec dbus-run-session -- "$0" inside
fi
# Inside the private session: a keyring daemon of our own, in a throwaway home.
keyring_home=$(mktemp -d)
export XDG_DATA_HOME=$keyring_home/data XDG_RUNTIME_DIR=$keyring_home/run
mkdir -p "$XDG_DATA_HOME" "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR"
printf 'throwaway' | gnome-keyring-daemon --unlock --components=secrets --foreground \
  >"$keyring_home/daemon.log" 2>&1 &
daemon=$!
trap 'kill "$daemon" 2>/dev/null || true; rm -rf "$keyring_home"' EXIT
owned() {
  dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q true
}
for _ in $(seq 1 100); do
  owned && break
  sleep 0.1
done
owned || {
  cat "$keyring_home/daemon.log" >&2
  echo "gnome-keyring-daemon did not take org.freedesktop.secrets" >&2
  exit 1
}
echo "==> Secret Service on $DBUS_SESSION_BUS_ADDRESS (gnome-keyring-daemon $daemon)"
# --workspace, not -p: the same dependency features as the workspace's build, so nothing
# is rebuilt (the filters pick the two tests).
AISA_TEST_SECRET_SERVICE=1 cargo test --locked --workspace --lib -- \
  secrets::keychain::tests::secret_service_is_what_auto_picks_on_a_linux_desktop --exact
AISA_NODE_EXPECT_STORE=secret-service cargo test --locked --workspace --test node_process -- \
  a_node_logs_in_keeps_its_key_in_the_os_store_and_runs_an_action
