#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer, the nightly toolchain) of
# what the master and workers decode from untrusted peers: fuzz/fuzz_targets.
#
#   scripts/fuzz.sh            a short run of every target, FUZZ_SECONDS each (default 10):
#                              what scripts/test.sh (CI) runs
#   scripts/fuzz.sh long       at least FUZZ_RUNS executions per target (default 1,000,000),
#                              printing each target's count and time (docs/TESTING.md)
#   scripts/fuzz.sh run T ...  one target, further arguments to libFuzzer
#
# Inputs it finds go to fuzz/corpus/<target> (not committed), starting from
# fuzz/seeds/<target>; a crash stops the run and is written to
# fuzz/artifacts/<target>/ (turn it into a regression test).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "==> fuzzing skipped: no nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo +nightly install cargo-fuzz --locked --quiet
fi

run() {
  local target=$1
  shift
  # git keeps no empty folder: a target without seeds starts from nothing.
  mkdir -p "corpus/$target" "seeds/$target"
  cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- "$@"
}

# Runs a target quietly; prints libFuzzer's count, or its whole report on a failure.
run_reported() {
  local target=$1 log
  log=$(mktemp)
  if ! run "$@" >"$log" 2>&1; then
    tail -60 "$log"
    echo "error: fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
    rm -f "$log"
    exit 1
  fi
  grep -E '^Done [0-9]+ runs' "$log" || tail -3 "$log"
  rm -f "$log"
}

mode=${1:-smoke}
case $mode in
  smoke)
    cargo +nightly fuzz build
    count=0
    for target in $(cargo +nightly fuzz list); do
      echo "==> fuzz $target (${FUZZ_SECONDS:-10}s)"
      run_reported "$target" -max_total_time="${FUZZ_SECONDS:-10}"
      count=$((count + 1))
    done
    # A failing target has exited above.
    echo "fuzz: $count passed, 0 failed"
    ;;
  long)
    cargo +nightly fuzz build
    for target in $(cargo +nightly fuzz list); do
      echo "==> fuzz $target (${FUZZ_RUNS:-1000000} runs)"
      start=$(date +%s)
      run_reported "$target" -runs="${FUZZ_RUNS:-1000000}"
      echo "    $(($(date +%s) - start)) s"
    done
    ;;
  run)
    shift
    run "$@"
    ;;
  *)
    echo "usage: scripts/fuzz.sh [smoke|long|run TARGET [libFuzzer args]]" >&2
    exit 2
    ;;
esac
