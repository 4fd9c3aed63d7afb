#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets, libFuzzer) for a bounded time, one after the
# other, and prints the executions of each; exits non-zero if any target crashed (the
# reproducer is in fuzz/artifacts/TARGET/).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    seconds per target (default $FUZZ_SECONDS or 60)
#   FUZZ_SECONDS=5 FUZZ_PROFILE=dev scripts/fuzz.sh   the smoke scripts/test.sh runs
#   FUZZ_SECONDS=3600 FUZZ_NICE=10 scripts/fuzz.sh e2e_stream   a campaign, niced
#   FUZZ_RUNS=10000000 FUZZ_SECONDS=3600 scripts/fuzz.sh   stop each at 10 M executions
#
# FUZZ_PROFILE=dev builds unoptimised (much quicker to build, slower to run: for smokes);
# the default is release (optimised, for campaigns).
# Works on the stable toolchain without cargo-fuzz: it builds the targets with plain cargo
# and the flags cargo-fuzz passes with `-s none` (SanitizerCoverage, `--cfg fuzzing`,
# debug assertions); libfuzzer-sys compiles libFuzzer itself (needs a C++ compiler).
# `cargo fuzz run -s none TARGET` from fuzz/ works too, with cargo-fuzz installed.
# Seeds come from the repository's own vectors and examples (fuzz/seeds.py, if python3 is
# there); the growing corpus is kept in target/fuzz/corpus/TARGET between runs
# (FUZZ_TARGET_DIR moves target/fuzz). Saved reproducers (fuzz/artifacts/TARGET) are run
# first as seeds too, so a finding fixed stays fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(tunnel_frames mux_frames e2e_stream bundle_zip manifest wasm_check provider_sse)
SECS=${FUZZ_SECONDS:-60}
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
  SECS=$1
  shift
fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")

# libfuzzer-sys compiles libFuzzer, which is C++.
if ! command -v c++ >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
  else
    echo "a C++ compiler is missing (libFuzzer is C++): sudo apt-get install g++" >&2
    exit 1
  fi
fi

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
OUT=${FUZZ_TARGET_DIR:-target/fuzz}
PROFILE=${FUZZ_PROFILE:-release}
case $PROFILE in
  release) PROFILE_DIR=release ;;
  dev) PROFILE_DIR=debug ;;
  *) echo "FUZZ_PROFILE is dev or release" >&2; exit 2 ;;
esac
NICE=()
[ -z "${FUZZ_NICE:-}" ] || NICE=(nice -n "$FUZZ_NICE")

# `--target` keeps the instrumentation off build scripts and proc macros.
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
--cfg fuzzing -Cdebug-assertions" \
  "${NICE[@]}" cargo build --profile "$PROFILE" --locked --manifest-path fuzz/Cargo.toml \
  --target "$TRIPLE" --target-dir "$OUT" --bins

rm -rf "$OUT/seeds"
if command -v python3 >/dev/null 2>&1; then
  python3 fuzz/seeds.py "$OUT/seeds"
else
  echo "python3 not found: fuzzing without seeds" >&2
fi

failed=0
printf '\n%-14s %12s %8s %10s  %s\n' target executions seconds exec/s result
for t in "${TARGETS[@]}"; do
  corpus="$OUT/corpus/$t"
  artifacts="fuzz/artifacts/$t"
  log="$OUT/logs/$t.log"
  mkdir -p "$corpus" "$OUT/seeds/$t" "$artifacts" "$OUT/logs"
  start=$(date +%s)
  rc=0
  "${NICE[@]}" "$OUT/$TRIPLE/$PROFILE_DIR/$t" -max_total_time="$SECS" -timeout=20 \
    ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
    "$corpus" "$OUT/seeds/$t" "$artifacts" >"$log" 2>&1 || rc=$?
  took=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  if [ "$rc" = 0 ]; then
    result=ok
  else
    result="CRASH (exit $rc), log $log"
    failed=1
  fi
  printf '%-14s %12s %8s %10s  %s\n' "$t" "${execs:-?}" "$took" "${rate:-?}" "$result"
  if [ "$rc" != 0 ]; then
    grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written|deadly signal|out-of-memory|timeout' "$log" \
      | head -20 | sed 's/^/    /'
  fi
done
exit "$failed"
