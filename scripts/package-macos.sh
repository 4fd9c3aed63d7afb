#!/usr/bin/env bash
# Builds the macOS archive of the desktop node, aisa-node-<version>-<platform>.tar.gz:
#
#   scripts/package-macos.sh --binary PATH --platform aarch64-macos|x86_64-macos|universal-macos \
#     [--out target/packages] [--fast] [--allow-foreign-binary]
#
# Layout (one folder, unpacked anywhere; docs/desktop.md, "macOS"):
#   aisa-node-<version>-<platform>/
#     desktop-node                          the binary (JavaScript runtime built in)
#     install.sh, uninstall.sh              per user, no sudo: ~/.local/bin and the agent
#     app.aisuperapp.desktop-node.plist     the launchd agent (install.sh fills in paths)
#     README.txt, COPYRIGHT.txt
#
# The binary comes from a Mac (cargo build --release -p aisa-node --target
# aarch64-apple-darwin; `lipo -create` for universal), signed and notarized there
# (docs/desktop.md, "Signing and notarizing on macOS"): Linux has no Apple SDK to link
# it with (scripts/cross-macos-check.sh says how far a check gets). So the script checks
# that the binary is Mach-O, unless --allow-foreign-binary (scripts/package-macos-test.sh,
# which tests the layout, the plist and install.sh with a Linux binary). The version is
# the workspace's (Cargo.toml); a binary without the JavaScript runtime is refused.
# --fast: gzip -1 (tests). Prints the archive's path last.
set -euo pipefail
cd "$(dirname "$0")/.."

BINARY=
PLATFORM=
OUT=target/packages
LEVEL=9
FOREIGN=
while [ $# -gt 0 ]; do
  case $1 in
    --binary) BINARY=$2; shift 2 ;;
    --platform) PLATFORM=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --fast) LEVEL=1; shift ;;
    --allow-foreign-binary) FOREIGN=1; shift ;;
    *) echo "usage: $0 --binary PATH --platform aarch64-macos|x86_64-macos|universal-macos [--out DIR] [--fast]" >&2; exit 2 ;;
  esac
done
case $PLATFORM in
  aarch64-macos | x86_64-macos | universal-macos) ;;
  *) echo "--platform must be aarch64-macos, x86_64-macos or universal-macos" >&2; exit 2 ;;
esac
[ -f "$BINARY" ] || { echo "no binary at '$BINARY'" >&2; exit 1; }
# Mach-O 64-bit (cf fa ed fe) or a universal binary (ca fe ba be).
magic=$(od -An -tx1 -N4 "$BINARY" | tr -d ' \n')
if [ -z "$FOREIGN" ] && [ "$magic" != cffaedfe ] && [ "$magic" != cafebabe ]; then
  echo "$BINARY is not a macOS binary (magic $magic); build it on a Mac" >&2
  exit 1
fi
scripts/package-check-runtime.py "$BINARY"

version=$(python3 -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["version"])')
name=aisa-node-$version-$PLATFORM
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dir=$work/$name
mkdir -p "$dir"
install -m 0755 "$BINARY" "$dir/desktop-node"
install -m 0755 packaging/macos/install.sh packaging/macos/uninstall.sh "$dir/"
install -m 0644 packaging/macos/app.aisuperapp.desktop-node.plist packaging/macos/README.txt "$dir/"
install -m 0644 packaging/linux/copyright "$dir/COPYRIGHT.txt"
python3 -c 'import plistlib, sys; plistlib.load(open(sys.argv[1], "rb"))' \
  "$dir/app.aisuperapp.desktop-node.plist"

mkdir -p "$OUT"
archive=$OUT/$name.tar.gz
mtime=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" -cf - "$name" |
  gzip -n "-$LEVEL" >"$archive"
echo "$archive"
