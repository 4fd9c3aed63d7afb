#!/usr/bin/env bash
# Tests the macOS archive's layout, its launchd agent plist and its install and uninstall
# scripts on Linux, with a Linux desktop-node standing in for the Mac binary (there is no
# Apple SDK here to link a real one; scripts/cross-macos-check.sh):
#
#   scripts/package-macos-test.sh [BINARY]      (default target/debug/desktop-node)
#
#   1. scripts/package-macos.sh builds the archive; a non-Mach-O binary is refused
#      without --allow-foreign-binary.
#   2. The archive holds exactly the expected files, with their modes, in one folder.
#   3. install.sh (HOME in a temporary folder; `launchctl` is a stub on PATH that records
#      its arguments, as is `plutil`, which is checked with Python's plistlib instead):
#      the binary lands in ~/.local/bin and runs; the agent plist in
#      ~/Library/LaunchAgents parses, names that binary with an absolute path, `run`,
#      RunAtLoad, KeepAlive on failure only, logs in ~/Library/Logs/…; before login the
#      agent is not started, after (node.toml present) `launchctl bootstrap gui/UID
#      PLIST` is called.
#   4. uninstall.sh: `launchctl bootout`, the plist and the binary are gone, the node's
#      data is not.
# What this cannot show: launchd itself loading the agent, Gatekeeper, the keychain.
set -euo pipefail
cd "$(dirname "$0")/.."
BINARY=${1:-target/debug/desktop-node}
fail() { echo "package-macos-test: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if scripts/package-macos.sh --binary "$BINARY" --platform x86_64-macos --out "$work" --fast >/dev/null 2>&1; then
  fail "a Linux binary was packaged for macOS without --allow-foreign-binary"
fi
archive=$(scripts/package-macos.sh --binary "$BINARY" --platform x86_64-macos --out "$work" \
  --fast --allow-foreign-binary | tail -1)
version=$(python3 -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["version"])')
name=aisa-node-$version-x86_64-macos
[ "$archive" = "$work/$name.tar.gz" ] || fail "unexpected archive name $archive"

echo "==> layout of $(basename "$archive")"
listing=$(tar -tvzf "$archive" | awk '{print $1, $2, $6}' | sort -k3)
echo "$listing"
expected="drwxr-xr-x 0/0 $name/
-rw-r--r-- 0/0 $name/COPYRIGHT.txt
-rw-r--r-- 0/0 $name/README.txt
-rw-r--r-- 0/0 $name/app.aisuperapp.desktop-node.plist
-rwxr-xr-x 0/0 $name/desktop-node
-rwxr-xr-x 0/0 $name/install.sh
-rwxr-xr-x 0/0 $name/uninstall.sh"
[ "$listing" = "$expected" ] || fail "the archive's layout is not the expected one"

echo "==> install.sh in a scratch HOME"
tar -C "$work" -xzf "$archive"
home=$work/home
stubs=$work/stubs
mkdir -p "$home" "$stubs"
cat >"$stubs/launchctl" <<SH
#!/bin/sh
echo "\$*" >>"$work/launchctl.calls"
SH
chmod +x "$stubs/launchctl"
run() { env HOME="$home" PATH="$stubs:$PATH" AISA_PACKAGE_TEST=1 "$@"; }
if env HOME="$home" PATH="$stubs:$PATH" "$work/$name/install.sh" >/dev/null 2>&1; then
  fail "install.sh ran on Linux without AISA_PACKAGE_TEST=1"
fi
run "$work/$name/install.sh" | tee "$work/install.out"
installed=$home/.local/bin/desktop-node
plist=$home/Library/LaunchAgents/app.aisuperapp.desktop-node.plist
[ -x "$installed" ] || fail "no executable $installed"
# (Its output captured first: `grep -q` closing the pipe early would fail the binary.)
printed=$("$installed" version)
grep -qx "desktop-node $version" <<<"$printed" || fail "the installed binary does not run: $printed"
[ ! -s "$work/launchctl.calls" ] || fail "the agent was started before login: $(cat "$work/launchctl.calls")"
grep -q "launchctl bootstrap gui/$(id -u) $plist" "$work/install.out" || fail "install.sh did not say how to start the agent"
python3 - "$plist" "$installed" "$home" <<'PY' || fail "the installed plist is wrong"
import plistlib, sys
plist, binary, home = sys.argv[1:]
with open(plist, "rb") as f:
    agent = plistlib.load(f)
assert agent["Label"] == "app.aisuperapp.desktop-node", agent
assert agent["ProgramArguments"] == [binary, "run"], agent["ProgramArguments"]
assert agent["RunAtLoad"] is True
assert agent["KeepAlive"] == {"SuccessfulExit": False}, agent["KeepAlive"]
assert agent["LimitLoadToSessionType"] == "Aqua"
logs = home + "/Library/Logs/app.aisuperapp.desktop/launchd.log"
assert agent["StandardOutPath"] == logs and agent["StandardErrorPath"] == logs, agent
assert "@" not in open(plist).read(), "a placeholder was left"
print("   plist:", agent["Label"], agent["ProgramArguments"])
PY

echo "==> install.sh again once logged in: the agent is started"
config="$home/Library/Application Support/app.aisuperapp.desktop"
mkdir -p "$config"
echo 'relay_url = "https://relay.example.net"' >"$config/node.toml"
run "$work/$name/install.sh" >/dev/null
grep -qx "bootstrap gui/$(id -u) $plist" "$work/launchctl.calls" ||
  fail "launchctl bootstrap was not called: $(cat "$work/launchctl.calls")"

echo "==> uninstall.sh"
touch "$installed.old"
run "$work/$name/uninstall.sh" >/dev/null
grep -qx "bootout gui/$(id -u)/app.aisuperapp.desktop-node" "$work/launchctl.calls" || fail "the agent was not stopped"
[ ! -e "$plist" ] || fail "$plist is still there"
[ ! -e "$installed" ] && [ ! -e "$installed.old" ] || fail "the binary is still there"
[ -f "$config/node.toml" ] || fail "uninstall.sh removed the node's settings"
echo "package-macos-test: passed (layout, plist, install, start after login, uninstall)"
