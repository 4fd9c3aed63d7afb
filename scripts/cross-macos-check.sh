#!/usr/bin/env bash
# How far `cargo check` of the desktop node gets for macOS on Linux, without Apple's SDK.
#
#   scripts/cross-macos-check.sh [aarch64-apple-darwin|x86_64-apple-darwin]
#
# The Rust std for the Apple targets installs with rustup, and pure-Rust crates check.
# ring (the crypto under rustls and quinn) compiles C and assembly in its build script
# against the SDK's headers (libc headers, TargetConditionals.h), which are not on Linux,
# so everything that depends on it (rustls, quinn, reqwest, aisa-tunnel's io, aisa-node)
# cannot be checked here. With --keep-going cargo checks every crate that does not need
# it; the script prints which failed and which were checked, then the build graph of
# aisa-node for the target (no keyutils, no Secret Service, the keychain store in).
# It exits 0 when the only crates that fail are ring and the crates above it; any other
# failure (one of ours, say) is an error.
set -uo pipefail
cd "$(dirname "$0")/.."
TARGET=${1:-aarch64-apple-darwin}
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
log=$(mktemp)
cargo check --keep-going -p aisa-node --target "$TARGET" --target-dir target/macos >"$log" 2>&1
rc=$?
echo "== cargo check --target $TARGET: exit $rc"
echo "== crates that failed to build:"
grep -E "^error: (could not compile|failed to run custom build command for)" "$log" | sort -u
echo "== why ring's build script fails (first errors):"
grep -E "fatal error|error: " "$log" | grep -v "could not compile\|failed to run custom" | head -5
echo "== crates checked for $TARGET: $(grep -cE '^ *(Checking|Compiling) ' "$log")"
echo "== keyring stores in aisa-node's graph for $TARGET:"
cargo tree -p aisa-node --target "$TARGET" -e normal --prefix none 2>/dev/null |
  grep -E "keyring|secret-service|keyutils|security-framework" | sort -u
# Failures other than ring's build script and crates that cannot build without it.
others=$(grep -E "^error: could not compile" "$log" | grep -vE "\`(ring|rustls|quinn|aisa-node)\`" || true)
if grep -q "failed to run custom build command for \`ring" "$log" && [ -z "$others" ]; then
  echo "macOS check: as far as it can get without the SDK (ring's C needs it)"
  exit 0
fi
[ $rc -eq 0 ] && { echo "macOS check: passed"; exit 0; }
echo "macOS check: an unexpected failure (see above)" >&2
cat "$log" | tail -40 >&2
exit 1
