#!/bin/sh
# Installs the AI SuperApp desktop node for the current user on macOS, from the folder
# this script is in (the unpacked aisa-node-<version>-<platform>.tar.gz):
#
#   ./install.sh [--bin-dir DIR] [--no-agent]
#
#   - desktop-node goes to DIR (default ~/.local/bin), yours, so `desktop-node update`
#     can replace it;
#   - the launchd agent app.aisuperapp.desktop-node.plist goes to ~/Library/LaunchAgents
#     with that path filled in: `desktop-node run` at every login (--no-agent: not);
#   - when this Mac's node is logged in already (node.toml exists), the agent is started
#     now (launchctl bootstrap); otherwise run `desktop-node login --relay URL` first,
#     then the launchctl line this script prints.
# No sudo, nothing outside your home. ./uninstall.sh undoes it (your node's data stays).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
label=app.aisuperapp.desktop-node
bin_dir=$HOME/.local/bin
agent=1
while [ $# -gt 0 ]; do
  case $1 in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --no-agent) agent=; shift ;;
    *) echo "usage: $0 [--bin-dir DIR] [--no-agent]" >&2; exit 2 ;;
  esac
done
# scripts/package-macos-test.sh runs this on Linux (AISA_PACKAGE_TEST=1, launchctl stubbed).
if [ "$(uname -s)" != Darwin ] && [ "${AISA_PACKAGE_TEST:-}" != 1 ]; then
  echo "this is the macOS package; on Linux use the .deb or the binary itself" >&2
  exit 1
fi
mkdir -p "$bin_dir"
bin_dir=$(cd "$bin_dir" && pwd)
binary=$bin_dir/desktop-node
# Copy, then rename: a running node keeps its old file, the path is never half written.
cp "$here/desktop-node" "$binary.new"
chmod 0755 "$binary.new"
mv -f "$binary.new" "$binary"
echo "installed $binary"

if [ -n "$agent" ]; then
  agents=$HOME/Library/LaunchAgents
  logs=$HOME/Library/Logs/app.aisuperapp.desktop
  plist=$agents/$label.plist
  mkdir -p "$agents" "$logs"
  # Paths with & or | would confuse sed; the home folder has neither in practice.
  sed -e "s|@BINARY@|$binary|" -e "s|@LOGDIR@|$logs|" "$here/$label.plist" >"$plist.new"
  if command -v plutil >/dev/null 2>&1; then plutil -lint "$plist.new" >/dev/null; fi
  mv -f "$plist.new" "$plist"
  echo "installed $plist"
  domain=gui/$(id -u)
  config="$HOME/Library/Application Support/app.aisuperapp.desktop/node.toml"
  if [ -f "$config" ]; then
    launchctl bootout "$domain/$label" 2>/dev/null || true
    launchctl bootstrap "$domain" "$plist"
    echo "started: launchctl print $domain/$label shows it"
  else
    echo "next: $binary login --relay https://YOUR-RELAY"
    echo "then: launchctl bootstrap $domain $plist"
  fi
fi
case ":$PATH:" in
  *":$bin_dir:"*) ;;
  *) echo "note: $bin_dir is not on your PATH (add it in ~/.zprofile)" ;;
esac
