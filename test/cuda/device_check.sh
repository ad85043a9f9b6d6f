#!/usr/bin/env bash
# The GPU check in one call (docs/gpu.md): on a machine with a GPU, from the
# repository root,
#   bash test/cuda/device_check.sh
# with either .gpu_bundle/ from test/cuda/make_bundle.sh (a machine that
# cannot build Strata: programs, their non-CUDA libraries, configs, fixture
# data) or a CUDA build in $BUILD (default build/: `make CUDA=1` on a box with
# the build dependencies). Steps, each with its own time limit, all inside
# DEADLINE seconds (default 470):
#   1. strata-cuda-tests with STRATA_REQUIRE_GPU=1: every GPU op against its
#      CPU twin. A test that crashes, hangs or leaves a sticky CUDA error is
#      recorded as failed and the run resumes after it in a fresh process, so
#      one bad kernel does not hide the rest.
#   2. Training smoke runs of strata-train on the fixture corpus: tiny dense
#      and tiny SMoE in bf16 on the GPU (the loss must fall), tiny dense in
#      fp32 without dropout on the GPU and on the CPU (the losses must agree).
#   3. gpu_train (test/bench/gpu_train.cpp): M4 dense, top-2 MoE and SMoE
#      2-2-2-2, bf16, 4096 target tokens per step; once as configured, once
#      without dropout.
#   4. test/reference/gpu_train_torch.py: the same models in PyTorch eager
#      (no dropout), for the Strata/PyTorch ratio.
#   5. gpu_attention: the fused attention kernels against the composed ops
#      (output into bench.log), if time is left.
# A failing step does not stop the later ones; the exit status is non-zero if
# any failed. Logs go to $OUT when it is set, else to a temporary directory:
# 8 files (device_check.log: environment and the results table;
# cuda_tests.log, cuda_tests.xml, smoke.log, bench.log, gpu_train.json,
# gpu_train_nodrop.json, torch.json). The results table is printed last.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
START=$SECONDS
DEADLINE=${DEADLINE:-470}
STALL=${STALL:-60}  # seconds without new test output before a GPU test segment counts as hung
BUNDLE=${BUNDLE:-$ROOT/.gpu_bundle}
LOG=${OUT:-}
[[ -n $LOG ]] || LOG=$(mktemp -d /tmp/strata-device-check.XXXXXX)
mkdir -p "$LOG"
TMP=$(mktemp -d /tmp/strata-device-tmp.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
STEPS=$TMP/steps.tsv  # name <TAB> PASS|FAIL|SKIP <TAB> detail: the table's rows
: > "$STEPS"
MAIN_LOG=$LOG/device_check.log
: > "$MAIN_LOG"
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$STEPS"; echo "-- $1: $2 $3" | tee -a "$MAIN_LOG"; }
left() { echo $((DEADLINE - (SECONDS - START))); }
# A step's time limit: its own cap, or what is left before the deadline minus
# a reserve for the steps after it.
budget() { local l=$(($(left) - $2)); if ((l < $1)); then echo "$l"; else echo "$1"; fi; }

# A python with torch (its nvidia-* packages also hold CUDA's libraries).
PY=
for p in ${PYTHON:-} python3 /opt/torch/.venv/bin/python3 /usr/bin/python3; do
  if command -v "$p" > /dev/null 2>&1 && "$p" -c "import torch" > /dev/null 2>&1; then PY=$p; break; fi
done
PYS=${PY:-python3}  # any python does the bookkeeping
# Python runs with the library path it came with: the bundle's libraries are
# for Strata's programs, not for torch or the interpreter.
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
pyrun() { env LD_LIBRARY_PATH="$ORIG_LD_LIBRARY_PATH" "$@"; }

# ---------------------------------------------------------------- what to run
if [[ -f $BUNDLE/payload.tar.xz ]]; then
  MODE="bundle $BUNDLE"
  BIN=$TMP/bundle  # programs, lib/, lib-system/
  mkdir -p "$BIN"
  if ! tar -C "$BIN" -xJf "$BUNDLE/payload.tar.xz" 2> "$TMP/untar.err"; then
    # no xz on the machine: Python's tarfile reads it too
    pyrun "$PYS" - "$BUNDLE/payload.tar.xz" "$BIN" <<'PYEOF' || echo "cannot unpack $BUNDLE/payload.tar.xz"
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    if hasattr(tarfile, "tar_filter"):
        t.extractall(sys.argv[2], filter="tar")
    else:
        t.extractall(sys.argv[2])
PYEOF
  fi
  TESTS=$BIN/strata-cuda-tests TRAIN=$BIN/strata-train BENCH=$BIN/gpu_train ATTN=$BIN/gpu_attention
  CONFIGS=$BUNDLE/configs DATA=$BUNDLE/data
else
  BIN=${BUILD:-build}
  MODE="build $BIN"
  TESTS=$BIN/strata-cuda-tests TRAIN=$BIN/strata-train BENCH=$BIN/bench/gpu_train ATTN=$BIN/bench/gpu_attention
  CONFIGS=$ROOT/jobs/configs DATA=$TMP/data
fi

# ------------------------------------------------------------ library paths
libdirs=()
[[ $MODE == bundle* ]] && libdirs+=("$BIN/lib")
if [[ -n $PY ]]; then
  while IFS= read -r d; do [[ -n $d ]] && libdirs+=("$d"); done < <("$PY" - <<'PYEOF'
import os, site
roots = list(site.getsitepackages()) + [site.getusersitepackages()]
try:
    import nvidia  # namespace package of the nvidia-* wheels
    roots += [os.path.dirname(p) for p in nvidia.__path__]
except ImportError:
    pass
dirs = []
for r in roots:
    for dp, _, files in os.walk(os.path.join(r, "nvidia")):
        if any(f.startswith("lib") and ".so" in f for f in files) and dp not in dirs:
            dirs.append(dp)
print("\n".join(sorted(dirs)))
PYEOF
  )
fi
for d in /usr/local/cuda/lib64 /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do [[ -d $d ]] && libdirs+=("$d"); done
LD_LIBRARY_PATH=$(IFS=:; echo "${libdirs[*]}")${ORIG_LD_LIBRARY_PATH:+:$ORIG_LD_LIBRARY_PATH}
export LD_LIBRARY_PATH

{
  echo "mode: $MODE; python with torch: ${PY:-none}; logs: $LOG"
  if [[ $MODE == bundle* && -f $BUNDLE/MANIFEST ]]; then
    grep -E "^(built|commit|source hash|needs):" "$BUNDLE/MANIFEST" | sed 's/^/bundle /'
  fi
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
} | tee -a "$MAIN_LOG"
if [[ $MODE == bundle* && -f $BUNDLE/MANIFEST ]]; then sed 's/^/manifest: /' "$BUNDLE/MANIFEST" >> "$MAIN_LOG"; fi

# Our libstdc++ only when the machine's is older than the one the programs need.
if [[ $MODE == bundle* && -x $TRAIN ]] && ! "$TRAIN" --help > "$TMP/probe" 2>&1 &&
  grep -q "GLIBCXX\|CXXABI\|GCC_[0-9]" "$TMP/probe"; then
  export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$BIN/lib-system
  echo "the machine's libstdc++ is too old: using the bundled one" | tee -a "$MAIN_LOG"
fi
for prog in "$TESTS" "$TRAIN" "$BENCH" "$ATTN"; do
  if [[ ! -x $prog ]]; then
    echo "missing: $prog (run test/cuda/make_bundle.sh, or make CUDA=1)" | tee -a "$MAIN_LOG"
    continue
  fi
  { echo "== ldd $prog"; ldd "$prog" 2>&1; } >> "$MAIN_LOG"
  missing=$(ldd "$prog" 2>/dev/null | grep "not found" | awk '{print $1}' | sort -u | tr '\n' ' ')
  if [[ -n $missing ]]; then echo "$prog: libraries not found: $missing" | tee -a "$MAIN_LOG"; fi
done

if command -v nvidia-smi > /dev/null 2>&1; then
  GPU_LINE=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | head -1)
else
  GPU_LINE="nvidia-smi: not available"
fi
echo "GPU: ${GPU_LINE:-nvidia-smi printed nothing}" | tee -a "$MAIN_LOG"

# ----------------------------------------------------- 1. GPU unit tests
echo "== 1. strata-cuda-tests (STRATA_REQUIRE_GPU=1)"
cuda_tests() {
  local list=$TMP/tests.list err=$TMP/list.err
  if [[ ! -x $TESTS ]]; then record "cuda tests" FAIL "no $TESTS"; return; fi
  # (Catch2's exit status after listing is the number of tests: judge by the list)
  STRATA_REQUIRE_GPU=1 timeout 60 "$TESTS" --list-test-names-only > "$list" 2> "$err"
  sed -i 's/^[[:space:]]*//; /^$/d' "$list"
  if [[ ! -s $list ]]; then
    cat "$err" >> "$LOG/cuda_tests.log"
    record "cuda tests" FAIL "$( (cat "$err"; echo "no tests listed") | head -1 | cut -c1-200)"
    return
  fi
  # Segments: run what is left; a crash, a timeout or a sticky CUDA error ends
  # the segment at the test that caused it, and the next one starts after it.
  local seg=0 remaining=$TMP/remaining t pid size now changed
  # One limit for the whole step, however many segments it takes (the
  # training steps after it need about two and a half minutes).
  local step_end=$((SECONDS + $(budget 210 150)))
  cp "$list" "$remaining"
  : > "$TMP/results.tsv"
  while [[ -s $remaining ]]; do
    seg=$((seg + 1))
    t=$((step_end - SECONDS))
    if ((t < 10)); then echo "out of time: $(wc -l < "$remaining") tests not run" >> "$LOG/cuda_tests.log"; break; fi
    echo "== segment $seg: $(wc -l < "$remaining") tests, limit ${t}s" >> "$LOG/cuda_tests.log"
    # Catch2 splits test specs at commas, even quoted ones: escape them (and backslashes)
    sed 's/\\/\\\\/g; s/,/\\,/g' "$remaining" > "$TMP/run.list"
    # A hung kernel would otherwise hold the segment to its whole limit: Catch2's
    # XML reporter flushes at every element, so a report that has not grown for
    # STALL seconds means a test is stuck; it is stopped (SIGTERM, which Catch2
    # records), counted as failed, and the next segment starts after it.
    STRATA_REQUIRE_GPU=1 NCCL_DEBUG=${NCCL_DEBUG:-WARN} timeout -k 5 "$t" "$TESTS" -f "$TMP/run.list" -r xml \
      -o "$TMP/seg$seg.xml" --durations yes >> "$LOG/cuda_tests.log" 2>&1 &
    pid=$! size=-1 changed=$SECONDS
    while kill -0 "$pid" 2> /dev/null; do
      sleep 1
      now=$(stat -c %s "$TMP/seg$seg.xml" 2> /dev/null || echo 0)
      if [[ $now != "$size" ]]; then
        size=$now changed=$SECONDS
      elif ((SECONDS - changed >= STALL)); then
        echo "no test output for ${STALL}s: stopping the segment (a test hangs)" >> "$LOG/cuda_tests.log"
        kill -TERM "$pid" 2> /dev/null  # timeout passes it on, and kills after 5 s more
        break
      fi
    done
    wait "$pid"
    echo "exit $?" >> "$LOG/cuda_tests.log"
    cat "$TMP/seg$seg.xml" >> "$LOG/cuda_tests.xml" 2>/dev/null
    pyrun "$PYS" - "$TMP/seg$seg.xml" "$remaining" "$TMP/results.tsv" <<'PYEOF' || break
# Reads a (possibly truncated) Catch2 XML report; appends name<TAB>pass|fail<TAB>why
# to results.tsv for every test it settles and rewrites `remaining` with the rest.
import html, re, sys
xml_path, remaining_path, results_path = sys.argv[1:4]
try:
    text = open(xml_path, encoding="utf-8", errors="replace").read()
except OSError:
    text = ""
todo = [l.strip() for l in open(remaining_path, encoding="utf-8") if l.strip()]
STICKY = re.compile(r"illegal memory access|misaligned address|unspecified launch failure|illegal instruction|"
                    r"device-side assert|hardware stack error|invalid program counter|launch timed out|"
                    r"CUBLAS_STATUS_EXECUTION_FAILED|CUDNN_STATUS_EXECUTION_FAILED")
def why(chunk):
    msgs = re.findall(r"<(?:Exception|FatalErrorCondition|Failure)[^>]*>(.*?)</", chunk, re.S)
    msgs += ["REQUIRE: " + m for m in re.findall(r"<Expanded>(.*?)</Expanded>", chunk, re.S)]
    msgs += ["info: " + m for m in re.findall(r"<Info>(.*?)</Info>", chunk, re.S)]
    return " | ".join(html.unescape(" ".join(m.split())) for m in msgs)[:400]
settled, stop = [], False
for chunk in text.split("<TestCase ")[1:]:
    m = re.match(r'name="([^"]*)"', chunk)
    if not m:
        continue
    name = html.unescape(m.group(1))
    res = re.search(r'<OverallResult success="(true|false)"', chunk)
    if res is None:  # started, never finished: it crashed or hung
        settled.append((name, "fail", "crashed, hung or timed out (no result)", ""))
        stop = True
        break
    ok = res.group(1) == "true"
    w = "" if ok else why(chunk)
    if not ok and "<FatalErrorCondition" in chunk:  # a signal: Catch2 reported it, then the process died
        settled.append((name, "fail", ("hung or timed out: " if "SIGTERM" in w else "crashed: ") + w, ""))
        stop = True
        break
    if not ok and STICKY.search(w):  # later tests in this process cannot be trusted
        settled.append((name, "fail", "sticky CUDA error: " + w, ""))
        stop = True
        break
    d = re.search(r'<OverallResult success="(?:true|false)"[^>]*durationInSeconds="([0-9.eE+-]+)"', chunk)
    settled.append((name, "pass" if ok else "fail", w, d.group(1) if d else ""))
done = {n for n, *_ in settled}
complete = "</Catch>" in text
if not stop and not settled and todo:
    # nothing started (a crash at start-up, or bad input): give up on the rest
    settled = [(n, "fail", "not run: the test binary failed before the first test", "") for n in todo]
    done = set(todo)
elif not stop and complete:
    # the run ended normally: a name it did not run is one the binary does not know
    settled += [(n, "fail", "not run (name not matched)", "") for n in todo if n not in done]
    done = set(todo)
# else (a stop, or the process died between tests): the rest runs in the next segment
with open(results_path, "a", encoding="utf-8") as f:
    for n, r, w, d in settled:
        f.write(f"{n}\t{r}\t{w}\t{d}\n")
with open(remaining_path, "w", encoding="utf-8") as f:
    f.writelines(n + "\n" for n in todo if n not in done)
PYEOF
  done
  local total passed failed
  total=$(wc -l < "$list")
  passed=$(awk -F'\t' '$2 == "pass"' "$TMP/results.tsv" | wc -l)
  failed=$(awk -F'\t' '$2 == "fail"' "$TMP/results.tsv" | wc -l)
  {
    echo "== results: $passed passed, $failed failed, $((total - passed - failed)) not run, of $total"
    awk -F'\t' '$2 == "fail" { print "FAILED: " $1 ": " $3 }' "$TMP/results.tsv"
    echo "slowest tests (s):"
    awk -F'\t' '$4 != "" { printf "%8.2f  %s\n", $4, $1 }' "$TMP/results.tsv" | sort -rn | head -15
    awk -F'\t' '$4 != "" { s += $4 } END { printf "total in tests: %.1f s\n", s }' "$TMP/results.tsv"
  } >> "$LOG/cuda_tests.log"
  awk -F'\t' '$2 == "fail" { print "FAILED: " $1 ": " substr($3, 1, 200) }' "$TMP/results.tsv" | head -20
  if ((passed == total && total > 0)); then
    record "cuda tests" PASS "$passed/$total test cases passed"
  else
    record "cuda tests" FAIL "$passed/$total passed, $failed failed, $((total - passed - failed)) not run"
  fi
}
cuda_tests

# ------------------------------------------------------ 2. training smoke
echo "== 2. training smoke runs (fixture corpus)"
if [[ $MODE == build* && ! -f $DATA/spm.model ]]; then
  mkdir -p "$DATA"
  { timeout 120 "$(dirname "$TRAIN")/train-spm" --tsv-dir test/fixtures/lohelp --model-prefix "$DATA/spm" \
      --vocab-size 1000 --soft-vocab-limit &&
    timeout 120 "$(dirname "$TRAIN")/strata-preprocess" --spm "$DATA/spm.model" --out "$DATA" \
      --tsv-dir test/fixtures/lohelp; } >> "$LOG/smoke.log" 2>&1
fi
UPDATES=60
smoke() {  # name config device precision [--set key=value ...]
  local name=$1 cfg=$2 dev=$3 prec=$4 t
  shift 4
  t=$(budget 90 100)
  if ((t < 10)); then record "smoke $name" SKIP "out of time"; return 1; fi
  echo "== smoke $name: $cfg on $dev, $prec, $UPDATES updates $* (limit ${t}s)" >> "$LOG/smoke.log"
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-8} timeout -k 5 "$t" "$TRAIN" "$CONFIGS/$cfg" --set data.data_dir="$DATA" \
    --set data.lang_pairs=en-de,de-en,en-fr,fr-en --set data.valid_subset=dev --set train.device="$dev" \
    --set train.precision="$prec" --set train.max_update=$UPDATES --set train.log_interval=1 \
    --set train.validate_interval_updates=$UPDATES --set train.save_interval_updates=$UPDATES \
    --set train.valid_bleu_sentences=0 --set train.save_dir="$TMP/ck_$name" "$@" > "$TMP/smoke_$name.log" 2>&1
  local rc=$?
  cat "$TMP/smoke_$name.log" >> "$LOG/smoke.log"
  pyrun "$PYS" - "$TMP/ck_$name/metrics.jsonl" > "$TMP/losses_$name" 2>/dev/null <<'PYEOF'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("kind") == "train":
        print(r["update"], repr(r["loss"]))
PYEOF
  echo "losses (update, bits): $(tr '\n' ' ' < "$TMP/losses_$name")" >> "$LOG/smoke.log"
  if ((rc != 0)); then
    record "smoke $name" FAIL "exit $rc: $(grep -v '^epoch' "$TMP/smoke_$name.log" | tail -1 | cut -c1-200)"
    return 1
  fi
  return 0
}
falls() {  # name: the mean loss of the last 5 updates must be > 1.5 bits below that of the first 3
  local verdict
  verdict=$(pyrun "$PYS" - "$TMP/losses_$1" <<'PYEOF'
import sys
v = [float(l.split()[1]) for l in open(sys.argv[1]) if l.strip()]
if len(v) < 8:
    print(f"FAIL only {len(v)} losses logged")
else:
    first, last = sum(v[:3]) / 3, sum(v[-5:]) / 5
    print(f"{'PASS' if first - last > 1.5 else 'FAIL'} loss {first:.2f} -> {last:.2f} bits over {len(v)} updates"
          + ("" if first - last > 1.5 else " (must fall by more than 1.5)"))
PYEOF
  )
  record "smoke $1" "${verdict%% *}" "${verdict#* }"
}
smoke dense-bf16 tiny.yaml cuda bf16 && falls dense-bf16
smoke smoe-bf16 tiny_smoe.yaml cuda bf16 && falls smoe-bf16
# fp32 on the GPU against the CPU with dropout off (so that the comparison does
# not depend on how the GPU draws its masks): same data and initial weights,
# so the curves agree up to summation order.
NODROP=(--set model.dropout=0 --set model.attention_dropout=0)
if smoke dense-fp32 tiny.yaml cuda fp32 "${NODROP[@]}" && smoke dense-cpu tiny.yaml cpu fp32 "${NODROP[@]}"; then
  verdict=$(pyrun "$PYS" - "$TMP/losses_dense-fp32" "$TMP/losses_dense-cpu" <<'PYEOF'
import sys
g = [float(l.split()[1]) for l in open(sys.argv[1]) if l.strip()]
c = [float(l.split()[1]) for l in open(sys.argv[2]) if l.strip()]
if not g or len(g) != len(c):
    print(f"FAIL {len(g)} GPU and {len(c)} CPU losses")
else:
    first, last = abs(g[0] - c[0]) / abs(c[0]), abs(g[-1] - c[-1]) / abs(c[-1])
    ok = first < 1e-4 and last < 1e-2
    print(f"{'PASS' if ok else 'FAIL'} update 1 {g[0]:.5f} vs {c[0]:.5f} ({first:.1e}), "
          f"update {len(g)} {g[-1]:.4f} vs {c[-1]:.4f} ({last:.1e}); limits 1e-4, 1e-2")
PYEOF
  )
  record "smoke fp32 gpu vs cpu" "${verdict%% *}" "${verdict#* }"
else
  record "smoke fp32 gpu vs cpu" SKIP "no comparison: a run above failed"
fi

# --------------------------------------------------------- 3. benchmark
echo "== 3. gpu_train benchmark"
bench() {  # name json [gpu_train args]
  local name=$1 json=$2 t rc
  shift 2
  t=$(budget 150 60)
  if ((t < 20)); then record "$name" SKIP "out of time"; return; fi
  echo "== $name (limit ${t}s): gpu_train --config-dir $CONFIGS --steps 10 $*" >> "$LOG/bench.log"
  timeout -k 5 "$t" "$BENCH" --config-dir "$CONFIGS" --steps 10 --json "$json" "$@" 2>&1 | tee -a "$LOG/bench.log"
  rc=${PIPESTATUS[0]}
  if ((rc == 0)); then record "$name" PASS "$(basename "$json")"
  else record "$name" FAIL "exit $rc: $(tail -1 "$LOG/bench.log" | cut -c1-200)"; fi
}
bench "benchmark" "$LOG/gpu_train.json"
bench "benchmark no-dropout" "$LOG/gpu_train_nodrop.json" "${NODROP[@]}"

# ------------------------------------------------------ 4. PyTorch twin
echo "== 4. PyTorch eager twin"
t=$(budget 150 10)
if [[ -z $PY ]]; then
  record "pytorch" FAIL "no python with torch"
elif ((t < 20)); then
  record "pytorch" SKIP "out of time"
else
  echo "== gpu_train_torch.py (limit ${t}s)" >> "$LOG/bench.log"
  PYTHONUNBUFFERED=1 pyrun timeout -k 5 "$t" "$PY" test/reference/gpu_train_torch.py --config-dir "$CONFIGS" \
    --steps 10 --json "$LOG/torch.json" 2>&1 | tee -a "$LOG/bench.log"
  rc=${PIPESTATUS[0]}
  if ((rc == 0)); then record "pytorch" PASS "torch.json"
  else record "pytorch" FAIL "exit $rc: $(tail -1 "$LOG/bench.log" | cut -c1-200)"; fi
fi

# ------------------------------------------- 5. fused vs composed attention
echo "== 5. attention: fused kernel vs composed ops"
t=$(budget 60 5)
if ((t < 15)); then
  record "attention bench" SKIP "out of time"
else
  # into bench.log: $OUT brings back at most 8 files
  echo "== gpu_attention (limit ${t}s)" >> "$LOG/bench.log"
  timeout -k 5 "$t" "$ATTN" 2>&1 | tee -a "$LOG/bench.log"
  rc=${PIPESTATUS[0]}
  if ((rc == 0)); then record "attention bench" PASS "bench.log"
  else record "attention bench" FAIL "exit $rc: $(tail -1 "$LOG/bench.log" | cut -c1-200)"; fi
fi

# ------------------------------------------------------------ results
pyrun "$PYS" - "$STEPS" "$LOG" "${GPU_LINE:-?}" "$((SECONDS - START))" <<'PYEOF' | tee -a "$MAIN_LOG"
import json, os, sys
steps_path, log, gpu, elapsed = sys.argv[1:5]
def load(name):
    try:
        with open(os.path.join(log, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
def pct(x):
    return f"{100 * x:5.1f}%"
steps = [l.rstrip("\n").split("\t", 2) for l in open(steps_path) if l.strip()]
print()
print("=" * 30 + " Strata device check: results " + "=" * 30)
print(f"GPU: {gpu}; {elapsed} s")
for name, status, detail in steps:
    print(f"{status:4s}  {name:22s} {detail}")
def perf_table():
    s, s0, t = load("gpu_train.json"), load("gpu_train_nodrop.json"), load("torch.json")
    if not (s or s0 or t):
        return
    rows = {}
    for key, doc in (("s", s), ("s0", s0), ("t", t)):
        for c in (doc or {}).get("configs", []):
            rows.setdefault(c["config"], {})[key] = c
    peak = (s or s0 or {}).get("gemm_tflops")
    tpeak = (t or {}).get("matmul_tflops")
    print()
    print("bf16 GEMM 8192^3: Strata " + (f"{peak:.0f}" if peak else "-") + " TFLOP/s, PyTorch "
          + (f"{tpeak:.0f}" if tpeak else "-") + " TFLOP/s; every MFU below is against Strata's rate")
    print(f"{'config':7s} {'params':>8s} {'step ms':>8s} {'tok/s':>9s} {'TFLOP/s':>8s} {'MFU':>6s} | "
          f"{'no-dropout tok/s':>16s} {'MFU':>6s} | {'PyTorch tok/s':>13s} {'MFU':>6s} | {'Strata/PyTorch':>14s}")
    for name, r in rows.items():
        a, b, c = r.get("s"), r.get("s0"), r.get("t")
        counted = a or b
        flops = counted["forward_flops_per_token"] if counted else None
        tmfu = pct(3 * flops * c["tokens_per_s"] / 1e12 / peak) if c and flops and peak else "-"
        ratio = f"{b['tokens_per_s'] / c['tokens_per_s']:.2f}" if b and c else "-"
        params = f"{counted['params'] / 1e6:.1f}M" if counted else (f"{c['params'] / 1e6:.1f}M" if c else "-")
        note = ""
        if counted and c and counted["params"] != c["params"]:
            note = f"  (parameters differ: Strata {counted['params']}, PyTorch {c['params']})"
        print(f"{name:7s} {params:>8s} {(format(a['step_ms'], '.2f') if a else '-'):>8s} "
              f"{(format(a['tokens_per_s'], '.0f') if a else '-'):>9s} {(format(a['model_tflops'], '.1f') if a else '-'):>8s} "
              f"{(pct(a['mfu']) if a else '-'):>6s} | {(format(b['tokens_per_s'], '.0f') if b else '-'):>16s} "
              f"{(pct(b['mfu']) if b else '-'):>6s} | {(format(c['tokens_per_s'], '.0f') if c else '-'):>13s} "
              f"{tmfu:>6s} | {ratio:>14s}{note}")
    print("tok/s: target tokens per second; Strata/PyTorch: both without dropout, same batches, bf16 autocast")
    for key, doc in (("s", s), ("s0", s0), ("t", t)):
        who = {"s": "Strata", "s0": "Strata no-dropout", "t": "PyTorch"}[key]
        for name, why in ((doc or {}).get("failed") or {}).items():
            print(f"{name}: {who} failed: {str(why)[:200]}")
try:
    perf_table()
except Exception as e:  # a malformed JSON must not hide the verdict
    print(f"(performance table not printed: {type(e).__name__}: {e})")
bad = [n for n, st, _ in steps if st != "PASS"]
print(f"overall: {'PASS' if not bad else 'FAIL (' + ', '.join(bad) + ')'}; logs in {log}")
PYEOF
! grep -qv $'\tPASS\t' "$STEPS"
