#!/usr/bin/env bash
# Type-checks the desktop node (and its tests) for macOS on Linux, without Apple's SDK.
#
#   scripts/cross-macos-check.sh [aarch64-apple-darwin|x86_64-apple-darwin ...]
#   MACOS_CHECK_TESTS=1 scripts/cross-macos-check.sh    # the tests too (--all-targets)
#
# The Rust std for the Apple targets installs with rustup. Two build scripts compile C
# against the SDK's headers, which are not on Linux: ring's (the crypto under rustls and
# quinn) and wasmtime's (its C helpers). `cargo check` never links, so the script gives
# them scripts/apple-cc-stub.sh as their C compiler: it writes empty Mach-O objects. Every
# line of Rust, ours and our dependencies', is then type-checked for the target with its
# own cfg (the macOS Keychain store, the macOS paths, notifications, signals). What this
# cannot check: the C of ring and wasmtime (they ship it tested for macOS) and linking,
# which needs Apple's SDK and linker; docs/desktop.md says how a release is built on a Mac.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-14 >/dev/null && command -v llvm-ar-14 >/dev/null ||
  { echo "needs clang-14 and llvm-14 (scripts/prereqs.sh installs them)" >&2; exit 1; }
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-apple-darwin x86_64-apple-darwin)
stub="$PWD/scripts/apple-cc-stub.sh"
scope=()
[ -n "${MACOS_CHECK_TESTS:-}" ] && scope=(--all-targets)
for target in "${targets[@]}"; do
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
  case "$target" in
    aarch64-apple-darwin) triple=arm64-apple-macos11 ;;
    x86_64-apple-darwin) triple=x86_64-apple-macos10.12 ;;
    *) echo "not an Apple target: $target" >&2; exit 2 ;;
  esac
  var=${target//-/_}
  echo "== cargo check -p aisa-node ${scope[*]} --target $target"
  env "CC_$var=$stub" "AR_$var=llvm-ar-14" APPLE_STUB_TRIPLE="$triple" \
    cargo check --locked -p aisa-node "${scope[@]}" --target "$target" --target-dir target/macos
  echo "== keyring stores in aisa-node's graph for $target:"
  cargo tree --locked -p aisa-node --target "$target" -e normal --prefix none 2>/dev/null |
    grep -E "keyring|secret-service|keyutils|security-framework" | sort -u
done
echo "macOS check: passed for ${targets[*]}"
