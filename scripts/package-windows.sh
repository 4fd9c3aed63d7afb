#!/usr/bin/env bash
# Builds the Windows installer of the desktop node on Linux with NSIS
# (packaging/windows/desktop-node.nsi; Debian's `nsis`, makensis 3.08):
#
#   scripts/package-windows.sh [--exe PATH] [--out target/packages]   # the real installer
#   scripts/package-windows.sh --placeholder [--out DIR]              # CI: the script only
#
# --fast compresses with zlib instead of solid LZMA (about 4.5 min for a 130 MB debug exe
# on two busy cores; a test of the debug exe in scripts/test-full.sh uses it).
#
# --exe defaults to the release cross build,
# target/windows/x86_64-pc-windows-gnu/release/desktop-node.exe (scripts/wine-test.sh and
# docs/desktop.md show the cross build: rustup target add x86_64-pc-windows-gnu, Debian's
# gcc-mingw-w64-x86-64, CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc).
# The exe must carry the JavaScript runtime (scripts/package-check-runtime.py).
#
# --placeholder compiles the installer script around a stand-in file instead of the exe,
# so CI proves the .nsi compiles (makensis -WX: any warning fails) without cross-building
# the node, which costs several minutes more than CI's `cargo check` for Windows. The
# stand-in's installer is named *-placeholder-setup.exe so it is never mistaken for one.
#
# The version is the workspace's (Cargo.toml); makensis is installed with apt-get when
# missing (as root). Prints the installer's path last. scripts/package-windows-test.sh
# installs it under Wine.
set -euo pipefail
cd "$(dirname "$0")/.."

EXE=target/windows/x86_64-pc-windows-gnu/release/desktop-node.exe
OUT=target/packages
PLACEHOLDER=
COMPRESSOR="/SOLID lzma"
while [ $# -gt 0 ]; do
  case $1 in
    --exe) EXE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --placeholder) PLACEHOLDER=1; shift ;;
    --fast) COMPRESSOR=zlib; shift ;;
    *) echo "usage: $0 [--exe PATH | --placeholder] [--out DIR] [--fast]" >&2; exit 2 ;;
  esac
done

if ! command -v makensis >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "makensis is missing: sudo apt-get install nsis" >&2; exit 1; }
  echo "==> installing nsis (apt-get)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nsis >/dev/null 2>&1 ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nsis >/dev/null; }
fi

version=$(python3 -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["version"])')
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -n "$PLACEHOLDER" ]; then
  EXE=$work/desktop-node.exe
  printf 'placeholder for desktop-node.exe (scripts/package-windows.sh --placeholder)\n' >"$EXE"
  installer=$OUT/aisa-node-$version-x86_64-windows-placeholder-setup.exe
else
  [ -f "$EXE" ] || { echo "no $EXE: cross-build it first (see this script's header)" >&2; exit 1; }
  [ "$(head -c 2 "$EXE")" = MZ ] || { echo "$EXE is not a Windows executable" >&2; exit 1; }
  scripts/package-check-runtime.py "$EXE"
  # Debug info stripped (mingw's strip, when there), symbols kept, as in the .deb.
  cp "$EXE" "$work/desktop-node.exe"
  EXE=$work/desktop-node.exe
  if command -v x86_64-w64-mingw32-strip >/dev/null; then
    x86_64-w64-mingw32-strip --strip-debug "$EXE"
  fi
  installer=$OUT/aisa-node-$version-x86_64-windows-setup.exe
fi
# Windows' Notepad of old wants CRLF.
sed 's/$/\r/' packaging/windows/README.txt >"$work/README.txt"

makensis -WX -V2 -NOCD -DVERSION="$version" -DCOMPRESSOR="$COMPRESSOR" -DEXE="$EXE" -DREADME="$work/README.txt" \
  -DOUTFILE="$installer" packaging/windows/desktop-node.nsi >&2
[ "$(head -c 2 "$installer")" = MZ ] || { echo "makensis wrote no Windows executable" >&2; exit 1; }
echo "$installer"
