#!/bin/sh
# Removes what install.sh installed: stops and removes the launchd agent, removes the
# binary (and the copies `desktop-node update` keeps beside it).
#
#   ./uninstall.sh [--bin-dir DIR]      (the same DIR as install.sh; default ~/.local/bin)
#
# Keeps the node's own files (~/Library/Application Support/app.aisuperapp.desktop, its
# caches and logs) and its keychain items; delete those yourself to remove them too.
set -eu
label=app.aisuperapp.desktop-node
bin_dir=$HOME/.local/bin
while [ $# -gt 0 ]; do
  case $1 in
    --bin-dir) bin_dir=$2; shift 2 ;;
    *) echo "usage: $0 [--bin-dir DIR]" >&2; exit 2 ;;
  esac
done
if [ "$(uname -s)" != Darwin ] && [ "${AISA_PACKAGE_TEST:-}" != 1 ]; then
  echo "this is the macOS package" >&2
  exit 1
fi
plist=$HOME/Library/LaunchAgents/$label.plist
launchctl bootout "gui/$(id -u)/$label" 2>/dev/null || true
rm -f "$plist"
rm -f "$bin_dir/desktop-node" "$bin_dir/desktop-node.old" "$bin_dir/desktop-node.failed" \
  "$bin_dir"/desktop-node.download-*
echo "removed desktop-node and its launchd agent (your node's data and keychain items stay)"
