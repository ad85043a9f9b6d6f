#!/usr/bin/env bash
# Reference check: Strata's translation model and label-smoothed loss against
# the independent PyTorch implementation in test/reference/ on fixed weights.
#
# Trains the tiny config for 20 updates on the en-de fixture, scores the
# checkpoint with strata-score --dump-batch, and requires
#   1. strata-score to reproduce the trainer's own validation loss,
#   2. the reference to agree with Strata on the dumped batch (rtol 1e-4),
#   3. the reference to FAIL when one piece of its math is deliberately changed
#      (negative controls: separate runs for a few perturbations, then all of
#      them in one process), which proves the comparison can see such changes,
#   4. the same for MoE models (SMoE 2-2 with either residual form, stratified
#      Switch, top-2 with EOM, CMR), each trained for 20 updates from
#      jobs/configs/tiny_smoe.yaml, with their MoE-specific perturbations.
# Usage: test/e2e/reference_check.sh [BUILD_DIR]
set -uo pipefail
BUILD=${1:-build}
cd "$(dirname "$0")/../.." || exit 1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine the
# tiny model's many small parallel regions are otherwise ~10x slower.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
PY=/usr/bin/python3  # Debian's interpreter, where install_deps.sh --test puts python3-torch
REF=test/reference/strata_reference.py
FIXTURE=test/fixtures/lohelp

passed=0
failed=0
ok() { echo "PASS: $1"; passed=$((passed + 1)); }
bad() { echo "FAIL: $1"; failed=$((failed + 1)); }
finish() {
  echo "reference check: $passed passed, $failed failed"
  [[ $failed -eq 0 ]]
  exit $?
}
# step NAME LOG CMD...: runs a setup step quietly; on failure shows its log and stops.
step() {
  local name=$1 log=$2
  shift 2
  "$@" >"$log" 2>&1
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    tail -n 20 "$log"
    bad "$name (exit status $rc, command: $*)"
    finish
  fi
}

for prog in train-spm strata-preprocess strata-train strata-score; do
  [[ -x "$BUILD/$prog" ]] || { bad "$BUILD/$prog is missing (build it with make)"; finish; }
done
if ! "$PY" -c "import torch, numpy" 2>/dev/null; then
  bad "$PY cannot import torch and numpy (install them: bash third_party/install_deps.sh --test)"
  finish
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/strata-reference.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/tsv" "$TMP/data"
cp "$FIXTURE/train.en-de.tsv" "$FIXTURE/dev.en-de.tsv" "$TMP/tsv/"

step "train-spm" "$TMP/spm.log" \
  "$BUILD/train-spm" --tsv-dir "$TMP/tsv" --model-prefix "$TMP/data/spm" --vocab-size 500 --soft-vocab-limit \
  --threads 2
step "strata-preprocess" "$TMP/pre.log" \
  "$BUILD/strata-preprocess" --spm "$TMP/data/spm.model" --out "$TMP/data" --tsv-dir "$TMP/tsv" --threads 2
step "strata-train (20 updates of jobs/configs/tiny.yaml)" "$TMP/train.log" \
  "$BUILD/strata-train" jobs/configs/tiny.yaml --set data.data_dir="$TMP/data" --set data.lang_pairs=en-de,de-en \
  --set data.valid_subset=dev --set train.save_dir="$TMP/ck" --set train.max_update=20 \
  --set train.validate_interval_updates=20 --set train.save_interval_updates=20 --set train.valid_bleu_sentences=0
CK="$TMP/ck/checkpoint_last"
step "strata-score --dump-batch" "$TMP/score.log" "$BUILD/strata-score" "$CK" --dump-batch "$TMP/dump"
sed 's/^/  /' "$TMP/score.log"

# 1. strata-score recomputes exactly what the trainer's validation logged at update 20.
if "$PY" - "$TMP/score.log" "$TMP/ck/metrics.jsonl" <<'EOF'; then
import json, re, sys
score = open(sys.argv[1]).read()
m = re.search(r"^dev total .*\| loss ([0-9.]+) \| nll ([0-9.]+)", score, re.M)
valid = [r for r in map(json.loads, open(sys.argv[2])) if r.get("kind") == "valid"]
if not m or not valid:
    sys.exit("no total line in the strata-score output or no validation record in metrics.jsonl")
loss, nll = float(m.group(1)), float(m.group(2))
want = valid[-1]
print(f"  strata-score loss {loss:.6f} nll {nll:.6f} | trainer validation loss {want['loss']:.6f} nll {want['nll']:.6f}")
# the score output has 6 decimals; a different thread count may change the last bits
if abs(loss - want["loss"]) > 1e-5 * want["loss"] or abs(nll - want["nll"]) > 1e-5 * want["nll"]:
    sys.exit("strata-score and the trainer's validation disagree")
EOF
  ok "strata-score reproduces the trainer's validation loss"
else
  bad "strata-score reproduces the trainer's validation loss"
fi

# 2. The reference agrees with Strata on the dumped batch.
"$PY" "$REF" --checkpoint "$CK" --batch "$TMP/dump" 2>&1 | sed 's/^/  /'
rc=${PIPESTATUS[0]}
if [[ $rc -eq 0 ]]; then ok "the PyTorch reference agrees with Strata"; else bad "the PyTorch reference agrees with Strata (exit $rc)"; fi

# 3. Negative controls: a deliberately wrong reference must be caught (exit status 1,
# not 0 and not 2, which would mean it could not run at all).
for p in attention_scale ln_eps positions; do
  out=$("$PY" "$REF" --checkpoint "$CK" --batch "$TMP/dump" --perturb "$p" 2>&1)
  rc=$?
  if [[ $rc -eq 1 ]]; then
    ok "perturbation '$p' is detected ($(grep -c '^MISMATCH' <<<"$out") mismatches)"
  else
    echo "$out" | sed 's/^/  /'
    bad "perturbation '$p' is detected (exit $rc, expected 1)"
  fi
done
"$PY" "$REF" --checkpoint "$CK" --batch "$TMP/dump" --sensitivity 2>&1 | sed 's/^/  /'
rc=${PIPESTATUS[0]}
if [[ $rc -eq 0 ]]; then ok "every perturbation is detected"; else bad "every perturbation is detected (exit $rc)"; fi

# 4. MoE models: the reference's own MoE blocks (moe_reference.py: dense one-hot
# dispatch/combine, Philox Gumbel noise) against Strata's on freshly trained
# tiny models, scored at the reference's validation capacity 0.25 so capacity
# dropping, slot order and renormalisation are exercised; then every MoE
# perturbation that applies to the model must be detected.
MOE_SET=(--set moe.eval_capacity_token_fraction=0.25)
moe_case() {  # NAME TRAIN_OVERRIDES...
  local name=$1
  shift
  step "strata-train ($name, 20 updates of jobs/configs/tiny_smoe.yaml)" "$TMP/train_$name.log" \
    "$BUILD/strata-train" jobs/configs/tiny_smoe.yaml --set data.data_dir="$TMP/data" --set data.lang_pairs=en-de,de-en \
    --set data.valid_subset=dev --set train.save_dir="$TMP/ck_$name" --set train.max_update=20 \
    --set train.validate_interval_updates=20 --set train.save_interval_updates=20 --set train.valid_bleu_sentences=0 "$@"
  local ck="$TMP/ck_$name/checkpoint_last"
  step "strata-score --dump-batch ($name)" "$TMP/score_$name.log" \
    "$BUILD/strata-score" "$ck" --dump-batch "$TMP/dump_$name" "${MOE_SET[@]}"
  "$PY" "$REF" --checkpoint "$ck" --batch "$TMP/dump_$name" "${MOE_SET[@]}" 2>&1 | sed 's/^/  /'
  local rc=${PIPESTATUS[0]}
  if [[ $rc -eq 0 ]]; then ok "the PyTorch reference agrees with Strata ($name)"; else bad "the PyTorch reference agrees with Strata ($name, exit $rc)"; fi
  "$PY" "$REF" --checkpoint "$ck" --batch "$TMP/dump_$name" "${MOE_SET[@]}" --sensitivity 2>&1 | grep -E 'moe_|cmr_|OK|FAIL' | sed 's/^/  /'
  rc=${PIPESTATUS[0]}
  if [[ $rc -eq 0 ]]; then ok "every applicable perturbation is detected ($name)"; else bad "every applicable perturbation is detected ($name, exit $rc)"; fi
}
moe_case smoe-2-2                                           # SMoE, hmoe LNs, code residual, Gumbel second expert
moe_case smoe-paper-residual --set moe.smoe_residual=paper
moe_case switch-3-1 --set moe.top1=true --set moe.strata=3,1  # top-1 gates, stratified
moe_case eom --set moe.moe_type=eom --set moe.strata=4        # top-2 MoE with expert output masking
moe_case cmr --set moe.moe_type=cmr --set moe.strata=4        # CMR: shared FFN + MoE, no hmoe LNs

# strata-score refuses a directory that holds no checkpoint, naming it.
if out=$("$BUILD/strata-score" "$TMP/tsv" 2>&1); then
  bad "strata-score rejects a directory without a checkpoint (it succeeded)"
elif grep -q "tsv" <<<"$out"; then
  ok "strata-score rejects a directory without a checkpoint"
else
  echo "  $out"
  bad "strata-score rejects a directory without a checkpoint (message does not name the directory)"
fi

finish
