#!/usr/bin/env bash
# Runs every test suite, fastest first, and prints each suite's summary.
# Usage: test/run_tests.sh [BUILD_DIR]
set -uo pipefail
BUILD=${1:-build}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# Idle OpenMP threads sleep instead of spinning: test processes often share the
# two cores (mpirun ranks, a trainer beside its checker), where spinning threads
# slow everything by an order of magnitude.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
failed=()

run_suite() {  # name, command...
  local name=$1; shift
  echo "=== suite: $name"
  local start=$SECONDS
  "$@"
  local rc=$?
  echo "=== suite: $name finished in $((SECONDS - start)) s (exit $rc)"
  if [[ $rc -ne 0 ]]; then failed+=("$name"); fi
}

# Catch2 unit tests: one binary, every module. Its last line is Catch2's summary.
run_suite unit "$BUILD/strata-unit-tests" --order lex

# GPU tests against their CPU twins (built when CUDA=1). Without a GPU the
# binary says it skipped; test/cuda/device_check.sh runs it on a GPU machine.
if [[ -x "$BUILD/strata-cuda-tests" ]]; then
  run_suite cuda "$BUILD/strata-cuda-tests" --order lex
fi

# The other suites, fastest first (seconds on the 2-core CI machine); any new
# suite not listed here runs after them.
ORDERED=(e2e/smoe_training mpi/expert_parallel e2e/translation_pipeline e2e/overfit e2e/reference_check mpi/data_parallel
  e2e/slurm)
declare -A seen=()
for name in "${ORDERED[@]}"; do
  [[ -e "test/$name.sh" ]] || continue
  seen[$name]=1
  run_suite "$name" bash "test/$name.sh" "$BUILD"
done
for s in test/e2e/*.sh test/mpi/*.sh; do
  name=${s#test/}
  name=${name%.sh}
  [[ -e "$s" && -z "${seen[$name]:-}" && $(basename "$s") != lib.sh ]] || continue
  run_suite "$name" bash "$s" "$BUILD"
done

if [[ ${#failed[@]} -ne 0 ]]; then
  echo "FAILED suites: ${failed[*]}"
  exit 1
fi
echo "all suites passed"
