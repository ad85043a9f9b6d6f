# Helpers shared by the end-to-end suites: a scratch directory, the tiny
# corpus prepared once per suite, and pass/fail bookkeeping.
set -uo pipefail
BUILD=${1:-build}
BUILD=$(cd "$BUILD" && pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FIXTURE=$ROOT/test/fixtures/lohelp
TMP=$(mktemp -d /tmp/strata-e2e.XXXXXX)
trap '[[ -n "${KEEP_TMP:-}" ]] || rm -rf "$TMP"' EXIT
PASSED=0
FAILED=0

check() {  # description, command...
  local what=$1; shift
  if "$@"; then
    echo "  ok: $what"; PASSED=$((PASSED + 1))
  else
    echo "  FAILED: $what"; FAILED=$((FAILED + 1))
  fi
}

# SentencePiece model + binarised fixture corpus in $TMP/data.
prepare_corpus() {
  mkdir -p "$TMP/data"
  "$BUILD/train-spm" --tsv-dir "$FIXTURE" --model-prefix "$TMP/data/spm" --vocab-size 1000 --soft-vocab-limit \
    > "$TMP/spm.log" 2>&1 || { cat "$TMP/spm.log"; return 1; }
  "$BUILD/strata-preprocess" --spm "$TMP/data/spm.model" --out "$TMP/data" --tsv-dir "$FIXTURE" \
    > "$TMP/preprocess.log" 2>&1 || { cat "$TMP/preprocess.log"; return 1; }
}

# The train losses of metrics.jsonl, one "update loss" line each.
train_losses() {
  python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("kind") == "train":
        print(r["update"], repr(r["loss"]))
PY
}

finish() {  # prints the closing line the CI reads
  echo "$SUITE: $PASSED passed, $FAILED failed"
  [[ $FAILED -eq 0 ]]
}
