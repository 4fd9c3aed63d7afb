#!/usr/bin/env bash
# Builds the Debian package of the desktop node, aisa-node_<version>_<arch>.deb, with
# dpkg-deb from a desktop-node binary that has the JavaScript runtime built in:
#
#   scripts/package-deb.sh [--binary target/release/desktop-node] [--out target/packages] [--fast]
#
# What goes in (docs/desktop.md, "Debian and Ubuntu"):
#   /usr/bin/desktop-node                          the binary (debug info stripped, symbols
#                                                  kept so crash backtraces name functions)
#   /usr/lib/systemd/user/desktop-node.service     deploy/desktop-node.service, started from
#                                                  /usr/bin (`systemctl --user enable --now
#                                                  desktop-node` after `desktop-node login`)
#   /usr/share/doc/aisa-node/                      copyright (Apache-2.0; QuickJS MIT),
#                                                  changelog.gz, desktop.md.gz, secrets.md.gz
# No maintainer scripts and no conffiles: the package enables nothing by itself (the node
# needs `desktop-node login` first, as the person who uses it); removing it leaves each
# user's own files (~/.config/aisuperapp, ~/.local/share/aisuperapp) alone.
#
# Why not cargo-deb: it would have to be built from source in CI (minutes on two cores)
# for what dpkg-deb, already on every Debian, does in these few lines.
#
# The version is what the binary says (`desktop-node version`), the architecture its
# platform's (x86_64 -> amd64, aarch64 -> arm64), Depends from dpkg-shlibdeps. The script
# refuses a binary without the JavaScript runtime built in (scripts/build-guests.sh, then
# cargo build): an installed node must run JavaScript mini-apps with nothing beside it.
# --fast compresses with gzip -1 instead of xz (CI's smoke of the debug binary, where xz
# would spend a minute on compression alone). Prints the .deb's path last.
set -euo pipefail
cd "$(dirname "$0")/.."

BINARY=target/release/desktop-node
OUT=target/packages
COMPRESS=(-Zxz)
JS_RUNTIME=${AISA_JS_RUNTIME_WASM:-target/guest/wasm32-unknown-unknown/release/aisa_js_runtime.wasm}
while [ $# -gt 0 ]; do
  case $1 in
    --binary) BINARY=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --fast) COMPRESS=(-Zgzip -z1); shift ;;
    *) echo "usage: $0 [--binary PATH] [--out DIR] [--fast]" >&2; exit 2 ;;
  esac
done
[ -x "$BINARY" ] || { echo "no executable desktop-node at $BINARY (cargo build --release -p aisa-node)" >&2; exit 1; }

version=$("$BINARY" version | sed -n 's/^desktop-node //p')
platform=$("$BINARY" version | sed -n 's/^platform //p')
case $platform in
  x86_64-linux) arch=amd64 ;;
  aarch64-linux) arch=arm64 ;;
  *) echo "$BINARY is for $platform, not a Linux that Debian packages here" >&2; exit 1 ;;
esac
[ -n "$version" ] || { echo "$BINARY version printed no version" >&2; exit 1; }

scripts/package-check-runtime.py "$BINARY" "$JS_RUNTIME"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# dpkg-shlibdeps wants the files under debian/<package>/ beside debian/control.
root=$work/debian/aisa-node
install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/lib/systemd/user" "$root/usr/share/doc/aisa-node"
install -m 0755 "$BINARY" "$root/usr/bin/desktop-node"
strip --strip-debug "$root/usr/bin/desktop-node"

# The user unit from deploy/, run from where the package puts the binary.
unit=$root/usr/lib/systemd/user/desktop-node.service
sed 's|^ExecStart=%h/.cargo/bin/desktop-node |ExecStart=/usr/bin/desktop-node |' \
  deploy/desktop-node.service >"$unit"
grep -qx 'ExecStart=/usr/bin/desktop-node run' "$unit" ||
  { echo "deploy/desktop-node.service: its ExecStart line changed; update this script" >&2; exit 1; }
chmod 0644 "$unit"

doc=$root/usr/share/doc/aisa-node
install -m 0644 packaging/linux/copyright "$doc/copyright"
for page in desktop secrets; do
  gzip -9n <"docs/$page.md" >"$doc/$page.md.gz"
done
date_r=$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
printf 'aisa-node (%s) unstable; urgency=medium\n\n  * desktop-node %s, built from commit %s.\n\n -- AI SuperApp <packages@aisuperapp.invalid>  %s\n' \
  "$version" "$version" "$commit" "$date_r" | gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc"/*

printf 'Source: aisa-node\n\nPackage: aisa-node\nArchitecture: any\n' >"$work/debian/control"
depends=$(cd "$work" && dpkg-shlibdeps -O -e debian/aisa-node/usr/bin/desktop-node 2>/dev/null |
  sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "dpkg-shlibdeps found no dependencies for the binary" >&2; exit 1; }
installed_kib=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: aisa-node
Version: $version
Architecture: $arch
Maintainer: AI SuperApp <packages@aisuperapp.invalid>
Installed-Size: $installed_kib
Depends: $depends
Section: net
Priority: optional
Description: AI SuperApp desktop node: runs mini-apps for your browser
 desktop-node is the execution authority of AI SuperApp: it keeps your AI
 provider keys in the OS secret store, installs signed mini-apps, and runs their
 actions in a wasm sandbox when your browser asks through the relay. It dials
 the relay, so it needs no open port. The JavaScript mini-app runtime is built
 into the binary.
 .
 After installing: desktop-node login --relay https://RELAY, then
 systemctl --user enable --now desktop-node.
CONTROL

mkdir -p "$OUT"
deb=$OUT/aisa-node_${version}_${arch}.deb
dpkg-deb --root-owner-group "${COMPRESS[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"
