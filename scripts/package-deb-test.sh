#!/usr/bin/env bash
# Installs the desktop node's .deb (scripts/package-deb.sh) on this machine, runs the
# installed node against a relay on loopback, and removes the package again:
#
#   scripts/package-deb-test.sh target/packages/aisa-node_<version>_<arch>.deb
#
# As root (CI is; dpkg -i needs it; without root it says so and skips). Steps, each of
# which fails the script:
#   1. dpkg -i; the package is "install ok installed"; /usr/bin/desktop-node runs and says
#      the package's version; it carries the JavaScript runtime
#      (scripts/package-check-runtime.py on the installed file); the installed user unit
#      passes `systemd-analyze verify` now that its ExecStart binary exists.
#   2. A relay (target/debug/relay-edge, or $AISA_BIN_DIR/relay-edge) on loopback with
#      `releases_dir` set; the installed node logs in with a password, runs, and the
#      relay lists the device online; SIGTERM stops it cleanly (exit 0).
#      The node is started directly, not by `systemd-run --user`: CI machines (and this
#      one: PID 1 is not systemd) have no user systemd instance to start it.
#   3. The relay serves a release signed with `aisapp release` under /releases/, and the
#      installed node's `update --check` finds it there (its default manifest_url,
#      {relay_url}/releases). A user who is not root cannot replace the packaged binary
#      with `desktop-node update --yes`: it fails and /usr/bin/desktop-node is unchanged.
#   4. dpkg -r (and dpkg -P if dpkg kept anything): every file the package installed is
#      gone and dpkg lists the package as not installed.
# Refuses to run when aisa-node is already installed (it would remove someone's install).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DEB=${1:?usage: $0 PATH.deb}
BIN=${AISA_BIN_DIR:-$ROOT/target/debug}
JS_RUNTIME=${AISA_JS_RUNTIME_WASM:-target/guest/wasm32-unknown-unknown/release/aisa_js_runtime.wasm}

fail() { echo "package-deb-test: $*" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then
  echo "package-deb-test: skipped: installing a .deb needs root (CI runs as root)" >&2
  exit 0
fi
[ -x "$BIN/relay-edge" ] && [ -x "$BIN/aisapp" ] || fail "no relay-edge/aisapp in $BIN (cargo build)"
if dpkg-query -W -f '${Status}' aisa-node 2>/dev/null | grep -q ' installed$'; then
  fail "aisa-node is installed on this machine already; not touching it"
fi
version=$(dpkg-deb -f "$DEB" Version)
NODE=/usr/bin/desktop-node # the installed binary (not whatever `desktop-node` is first on PATH)

work=$(mktemp -d)
pids=()
installed=
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$installed" ] && dpkg -P aisa-node >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> dpkg -i $DEB"
dpkg -i "$DEB" >/dev/null
installed=1
dpkg-query -W -f '${Status} ${Version}\n' aisa-node | grep -qx "install ok installed $version" ||
  fail "dpkg does not list aisa-node $version as installed"
dpkg -L aisa-node >"$work/files"
# (Captured first: `grep -q` closing the pipe early would fail the binary's print.)
printed=$("$NODE" version)
grep -qx "desktop-node $version" <<<"$printed" || fail "the installed binary is not $version: $printed"
scripts/package-check-runtime.py "$NODE" "$JS_RUNTIME"
unit=/usr/lib/systemd/user/desktop-node.service
[ -f "$unit" ] || fail "no user unit at $unit"
problems=$(systemd-analyze verify "$unit" 2>&1 || true)
[ -z "$problems" ] || fail "systemd-analyze verify $unit: $problems"
grep -qx 'ExecStart=/usr/bin/desktop-node run' "$unit" || fail "the unit does not start /usr/bin/desktop-node"
[ -f /usr/share/doc/aisa-node/copyright ] || fail "no copyright file"

echo "==> a relay on loopback, with releases_dir"
email=deb@example.com
password=correct-horse-battery
releases=$work/releases
mkdir -p "$releases/stable"
"$BIN/relay-edge" --data-dir "$work/relay" user add "$email" --password "$password" >/dev/null
AISA_RELAY_RELEASES_DIR=$releases "$BIN/relay-edge" --data-dir "$work/relay" serve \
  --http-listen 127.0.0.1:0 --quic-listen 127.0.0.1:0 >"$work/relay.log" 2>&1 &
pids+=($!)
for _ in $(seq 300); do grep -qs 'relay-edge: http' "$work/relay.log" && break; sleep 0.1; done
relay=$(sed -n 's|^relay-edge: \(http://[0-9.:]*\) .*|\1|p' "$work/relay.log")
[ -n "$relay" ] || { cat "$work/relay.log" >&2; fail "the relay did not start"; }

echo "==> the installed node: login, run, listed online at $relay"
home=$work/node
# The file secret store (no Secret Service in CI), with its passphrase from the environment.
unset DBUS_SESSION_BUS_ADDRESS
export AISA_PASSPHRASE=deb-test-passphrase
printf '%s' "$password" | "$NODE" --home "$home" login --relay "$relay" \
  --email "$email" --password-stdin --name deb-test >/dev/null
"$NODE" --home "$home" run >"$work/node.log" 2>&1 &
node_pid=$!
pids+=("$node_pid")
for _ in $(seq 300); do grep -qs 'connected to the relay' "$work/node.log" && break; sleep 0.1; done
grep -q 'connected to the relay' "$work/node.log" || { cat "$work/node.log" >&2; fail "the node did not connect"; }
python3 - "$relay" "$email" "$password" <<'PY' || fail "the relay does not list deb-test online"
import json, sys, urllib.request
relay, email, password = sys.argv[1:]
login = urllib.request.Request(f"{relay}/api/auth/login", method="POST",
    data=json.dumps({"email": email, "password": password}).encode(),
    headers={"content-type": "application/json"})
token = json.load(urllib.request.urlopen(login))["token"]
listing = urllib.request.Request(f"{relay}/api/devices", headers={"authorization": f"Bearer {token}"})
devices = json.load(urllib.request.urlopen(listing))
print("   devices:", [(d["name"], d["online"]) for d in devices])
assert any(d["name"] == "deb-test" and d["online"] for d in devices), devices
PY
kill -TERM "$node_pid"
rc=0
wait "$node_pid" || rc=$?
[ "$rc" = 0 ] || { cat "$work/node.log" >&2; fail "the node exited $rc on SIGTERM"; }

echo "==> a release on the relay's /releases/, found by the installed node"
major=${version%%.*}
next="$((major + 1)).0.0"
"$BIN/aisapp" keygen --out "$work/release.key" >/dev/null
public=$(tr -d '[:space:]' <"$work/release.key.pub")
cp "$NODE" "$releases/desktop-node-$next"
protocol=$("$NODE" version | sed -n 's/^protocol //p')
platform=$("$NODE" version | sed -n 's/^platform //p')
"$BIN/aisapp" release "$releases/desktop-node-$next" --version "$next" --key "$work/release.key" \
  --protocol "$protocol" --url "$relay/releases/desktop-node-$next" \
  --out "$releases/stable/$platform.json" >/dev/null
# Trust the release key: node.toml's [update] (login wrote it with no keys).
python3 - "$home/node.toml" "$public" <<'PY'
import re, sys
path, key = sys.argv[1:]
text = open(path).read()
head, sep, update = text.partition("[update]\n")
assert sep, "node.toml has no [update] section"
m = re.search(r"(?m)^\[", update)
body, rest = (update[: m.start()], update[m.start():]) if m else (update, "")
body = re.sub(r"(?m)^trusted_keys = .*$", f'trusted_keys = ["{key}"]', body)
body = re.sub(r"(?m)^check_in_background = .*$", "check_in_background = false", body)
assert key in body, body
open(path, "w").write(head + sep + body + rest)
PY
"$NODE" --home "$home" update --check | tee "$work/check.txt"
grep -q "desktop-node $next is available (running $version)" "$work/check.txt" ||
  fail "update --check did not find $next on the relay"
# Someone who is not root: the packaged binary is not theirs to replace.
before=$(sha256sum "$NODE")
chmod -R a+rwX "$work"
if runuser -u nobody -- env HOME="$work" AISA_PASSPHRASE="$AISA_PASSPHRASE" \
  "$NODE" --home "$home" update --yes >"$work/update.txt" 2>&1; then
  cat "$work/update.txt" >&2
  fail "a user replaced the packaged /usr/bin/desktop-node"
fi
[ "$(sha256sum "$NODE")" = "$before" ] || fail "$NODE changed"
# It stops where it would write beside the packaged binary, saying so.
grep -q "Permission denied" "$work/update.txt" || { cat "$work/update.txt" >&2; fail "update as a user failed for another reason"; }
echo "   as a user: $(grep -m1 -i 'error' "$work/update.txt")"

echo "==> dpkg -r"
kill "${pids[0]}" 2>/dev/null || true
dpkg -r aisa-node >/dev/null
# No conffiles, so nothing is left for a purge; purge anyway when dpkg keeps a record.
if dpkg-query -W -f '${Status}' aisa-node 2>/dev/null | grep -q 'config-files$'; then
  dpkg -P aisa-node >/dev/null
fi
installed=
while read -r path; do
  [ -d "$path" ] && continue # shared folders (/usr/bin) stay
  [ -e "$path" ] && fail "$path is still there after dpkg -r"
done <"$work/files"
[ ! -e /usr/share/doc/aisa-node ] || fail "/usr/share/doc/aisa-node is still there"
if dpkg-query -W -f '${Status}' aisa-node 2>/dev/null | grep -qv 'not-installed$'; then
  fail "dpkg still lists aisa-node: $(dpkg-query -W -f '${Status}' aisa-node)"
fi
[ ! -e "$NODE" ] || fail "$NODE is still there"
echo "package-deb-test: passed (installed, ran against a relay, found an update, removed)"
