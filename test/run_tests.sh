#!/usr/bin/env bash
# Runs every test suite, fastest first, and prints each suite's summary.
# Usage: test/run_tests.sh [BUILD_DIR]
set -uo pipefail
BUILD=${1:-build}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
failed=()
total_pass=0
total_fail=0

run_suite() {  # name, command...
  local name=$1; shift
  echo "=== suite: $name"
  local start=$SECONDS
  local log
  log=$(mktemp)
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== suite: $name finished in $((SECONDS - start)) s (exit $rc)"
  if [[ $rc -ne 0 ]]; then failed+=("$name"); fi
  rm -f "$log"
}

# Catch2 unit tests: one binary, every module. Its last line is Catch2's summary.
run_suite unit "$BUILD/strata-unit-tests" --order lex

for s in test/e2e/*.sh; do
  [[ -e "$s" ]] || continue
  run_suite "e2e/$(basename "$s" .sh)" bash "$s" "$BUILD"
done
for s in test/mpi/*.sh; do
  [[ -e "$s" ]] || continue
  run_suite "mpi/$(basename "$s" .sh)" bash "$s" "$BUILD"
done

if [[ ${#failed[@]} -ne 0 ]]; then
  echo "FAILED suites: ${failed[*]}"
  exit 1
fi
echo "all suites passed"
