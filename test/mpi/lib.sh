# Prologue shared by the MPI suites (source it after setting SUITE): the
# end-to-end helpers, mpirun with one OpenMP thread per rank, the skip when
# there is no MPI, the cleanup of every run with the suite, the tiny corpus,
# and the comparison of two runs' metrics.
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
PY=/usr/bin/python3  # Debian's, with numpy
COMPARE=("$PY" "$ROOT/test/mpi/compare_safetensors.py")

if ! command -v mpirun > /dev/null || ! ldd "$BUILD/strata-train" | grep -q libmpi; then
  echo "  skipped: no mpirun, or strata-train built without MPI (MPI=0)"
  finish
  exit $?
fi
MPIRUN=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1 -x OMP_WAIT_POLICY)
# Every run in this suite, killed with the suite.
trap 'jobs -p | xargs -r kill -9 2>/dev/null; [[ -n "${KEEP_TMP:-}" ]] || rm -rf "$TMP"' EXIT

check "SentencePiece model and binarised corpus" prepare_corpus

# metrics_agree RTOL KEYS A B KIND FROM: the records of KIND from update FROM on
# are the same updates in metrics files A and B, and their fields named in KEYS
# (comma-separated; "name*" takes every field starting with name) agree to
# RTOL relative (absolute below 1).
metrics_agree() {
  "$PY" - "$@" <<'PY'
import json, sys
rtol, keys, a_path, b_path, kind, start = float(sys.argv[1]), sys.argv[2].split(","), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
def load(p):
    return {r["update"]: r for r in map(json.loads, open(p)) if r.get("kind") == kind and r["update"] >= start}
a, b = load(a_path), load(b_path)
if not a or sorted(a) != sorted(b):
    print(f"  updates differ: {sorted(a)} vs {sorted(b)}"); sys.exit(1)
def named(k):
    return any(k.startswith(p[:-1]) if p.endswith("*") else k == p for p in keys)
fields = [k for k in a[min(a)] if named(k)]
if not fields:
    print(f"  no field of {keys} in the {kind} records"); sys.exit(1)
bad = [(u, k, a[u][k], b[u].get(k)) for u in a for k in fields
       if b[u].get(k) is None or abs(a[u][k] - b[u][k]) > rtol * max(1.0, abs(a[u][k]))]
for u, k, x, y in bad[:3]: print(f"  update {u} {k}: {x!r} vs {y!r}")
sys.exit(1 if bad else 0)
PY
}
