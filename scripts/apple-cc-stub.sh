#!/bin/sh
# A stand-in C compiler for `cargo check` of the Apple targets on Linux, where Apple's
# SDK (libc headers, TargetConditionals.h) is missing. Build scripts of ring and wasmtime
# compile C with the `cc` crate; a check never links, so their objects only have to
# exist: every `-c ... -o OUT` gets an empty Mach-O object. Every other call (the `cc`
# crate's compiler-family probes: -E, -?) goes to the real clang, so the crate sees clang.
# Set APPLE_STUB_TRIPLE (default arm64-apple-macos11). Used by scripts/cross-macos-check.sh.
triple=${APPLE_STUB_TRIPLE:-arm64-apple-macos11}
case " $* " in *" -c "*) ;; *) exec clang-14 --target="$triple" "$@" ;; esac
out=""
prev=""
for arg in "$@"; do
  [ "$prev" = "-o" ] && out="$arg"
  prev="$arg"
done
[ -n "$out" ] || { echo "apple-cc-stub: no -o in: $*" >&2; exit 1; }
printf '' | exec clang-14 --target="$triple" -x c -c - -o "$out"
