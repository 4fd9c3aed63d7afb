#!/usr/bin/env bash
# The desktop node for Windows, proved on Linux: cross-builds aisa-node for
# x86_64-pc-windows-gnu with Debian's mingw-w64 and runs, under Debian's Wine,
#   1. its unit tests (among them the Credential Manager round trip `auto` picks);
#   2. a smoke test: desktop-node.exe logs in to a relay on loopback (the relay runs
#      natively), stores a provider key in the Credential Manager, installs an app, and
#      runs one action (desktop-node/tests/node_process.rs with AISA_NODE_EXE); Wine 8
#      refuses a UDP socket option quinn sets, so the node runs on its TCP leg there;
#   3. stopping: a console Ctrl-C (Wine turns SIGINT into CTRL_C_EVENT) in the middle of
#      an action lets it finish, and the process exits 0;
#   4. the tray icon, on a private Xvfb display (Wine's Explorer has a notification area
#      only with a display): the node adds its icon; a click on it opens the face, and
#      Quit, chosen in its right-click menu (both by a small Windows program,
#      desktop-node/tests/windows/tray-click.c), stops it (exit 0); and its toasts take the installer's AppUserModelID when the installer's
#      shortcut and registration are there, Windows PowerShell's when not.
#
# Wine 8 lacks bcryptprimitives.dll's ProcessPrng, which Rust's std calls for random
# bytes: a five-line shim DLL (built here with mingw) that calls RtlGenRandom stands in.
# Builds go to target/windows (several GB; the host build's target/ is untouched).
# Called by scripts/test-full.sh; needs root for apt-get the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-pc-windows-gnu
TARGET_DIR=target/windows

have() { command -v "$1" >/dev/null 2>&1; }
missing=()
have x86_64-w64-mingw32-gcc || missing+=(gcc-mingw-w64-x86-64)
have wine || missing+=(wine)
have wine64 || [ -x /usr/lib/wine/wine64 ] || missing+=(wine64)
have Xvfb || missing+=(xvfb)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"

# The guests (hello-ai for the smoke test; the JS runtime is embedded in the binary).
scripts/build-guests.sh

# The ProcessPrng shim.
shim_dir=$TARGET_DIR/shim
mkdir -p "$shim_dir"
cat >"$shim_dir/processprng.c" <<'C'
#include <windows.h>
BOOLEAN NTAPI SystemFunction036(PVOID buffer, ULONG length); /* RtlGenRandom */
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
  return SystemFunction036(data, (ULONG)length);
}
C
x86_64-w64-mingw32-gcc -shared -O2 -o "$shim_dir/bcryptprimitives.dll" \
  "$shim_dir/processprng.c" -ladvapi32 -Wl,--export-all-symbols

# The tray test's clicker (step 4).
x86_64-w64-mingw32-gcc -O2 -Wall -o "$shim_dir/tray-click.exe" desktop-node/tests/windows/tray-click.c

export WINEDEBUG=-all
export WINEPREFIX=${WINEPREFIX:-$PWD/$TARGET_DIR/wineprefix}
export WINEDLLOVERRIDES="bcryptprimitives=n,b;mscoree,mshtml="
mkdir -p "$WINEPREFIX"
# Each test binary runs under wine with the shim beside it (cargo's runner).
runner=$PWD/$shim_dir/run.sh
cat >"$runner" <<SH
#!/usr/bin/env bash
cp -f "$PWD/$shim_dir/bcryptprimitives.dll" "\$(dirname "\$1")/"
exec wine "\$@"
SH
chmod +x "$runner"
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=$runner
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
wineboot -i >/dev/null 2>&1 || true

echo "==> aisa-node unit tests, built for Windows, under Wine"
cargo test --locked -p aisa-node --lib --target "$TARGET" --target-dir "$TARGET_DIR"

echo "==> desktop-node.exe smoke test against a relay on loopback"
cargo build --locked -p aisa-node --bin desktop-node --target "$TARGET" --target-dir "$TARGET_DIR"
exe=$PWD/$TARGET_DIR/$TARGET/debug/desktop-node.exe
cp -f "$shim_dir/bcryptprimitives.dll" "$(dirname "$exe")/"
AISA_NODE_EXE=$exe AISA_NODE_RUNNER=wine AISA_NODE_EXPECT_STORE=windows-credential-manager \
  cargo test --locked -p aisa-node --test node_process -- --test-threads 1 --nocapture \
  a_node_logs_in_keeps_its_key_in_the_os_store_and_runs_an_action \
  windows_ctrl_c_lets_the_running_action_finish_under_wine

echo "==> desktop-node.exe's tray icon on Xvfb: added, a click opens the face, Quit stops the node"
display_file=$(mktemp)
Xvfb -displayfd 3 -screen 0 1024x768x24 -nolisten tcp 3>"$display_file" >/dev/null 2>&1 &
xvfb_pid=$!
trap 'kill "$xvfb_pid" 2>/dev/null || true; rm -f "$display_file"' EXIT
for _ in $(seq 100); do [ -s "$display_file" ] && break; sleep 0.1; done
[ -s "$display_file" ] || { echo "Xvfb did not start" >&2; exit 1; }
# Wine's processes of the steps above ran without a display: let them end first, so
# Explorer starts again on this one.
wineserver -w
DISPLAY=:$(head -n1 "$display_file") AISA_NODE_EXE=$exe AISA_NODE_RUNNER=wine \
  AISA_TRAY_CLICK_EXE=$PWD/$shim_dir/tray-click.exe \
  cargo test --locked -p aisa-node --test node_process -- --test-threads 1 --nocapture \
  windows_tray_opens_the_face_and_quit_stops_the_node_under_wine
wineserver -k 2>/dev/null || true
echo "wine: passed"
