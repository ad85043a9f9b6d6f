#!/usr/bin/env bash
# Expert parallelism (moe.expert_parallel) under mpirun on the fixture corpus, tiny SMoE
# (4 experts, strata 2,2; capacity_factor 4 so no token is dropped, as the multi-rank
# capacity is the max over the ranks):
#  1. 2 ranks x update_freq 1, each holding 2 experts, make the update one process
#     with update_freq 2 makes: loss, validation loss, parameters and Adam state
#     (experts gathered by global id into rank 0's checkpoint);
#  2. that checkpoint resumes on 1 process, and a 1-process checkpoint on 2
#     expert-parallel ranks, with the next loss of an uninterrupted run;
#     (model.dropout 0 and moe.balance_loss_ignore_padding: see the note at TRAIN);
#  3. experts neither a multiple nor a divisor of the ranks are refused;
#  4. E < W: top-2 MoE, 2 experts on 4 ranks (each expert replicated twice) make the
#     update one process with update_freq 4 makes; checkpoints resume across 4 ranks and 1;
#  5. EOM (moe_type eom): validation loss agrees (training masks are a documented deviation).
# Usage: test/mpi/expert_parallel.sh BUILD_DIR. Needs mpirun and an MPI build.
SUITE="mpi expert parallel"
source "$(dirname "$0")/../e2e/lib.sh"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
PY=/usr/bin/python3  # Debian's, with numpy
COMPARE=("$PY" "$ROOT/test/mpi/compare_safetensors.py")

if ! command -v mpirun > /dev/null || ! ldd "$BUILD/strata-train" | grep -q libmpi; then
  echo "  skipped: no mpirun, or strata-train built without MPI (MPI=0)"
  finish
  exit $?
fi
MPIRUN=(mpirun --allow-run-as-root --oversubscribe -x OMP_NUM_THREADS=1 -x OMP_WAIT_POLICY)
trap 'jobs -p | xargs -r kill -9 2>/dev/null; [[ -n "${KEEP_TMP:-}" ]] || rm -rf "$TMP"' EXIT

check "SentencePiece model and binarised corpus" prepare_corpus
TRAIN=("$BUILD/strata-train" "$ROOT/jobs/configs/tiny_smoe.yaml"
  --set data.data_dir="$TMP/data" --set data.lang_pairs=en-de,de-en,en-fr,fr-en --set data.valid_subset=dev
  --set train.log_interval=1 --set train.validate_interval_updates=1000 --set train.save_interval_updates=1000
  --set train.valid_bleu_sentences=0 --set moe.capacity_factor=4 --set train.warmup_init_lr=0.002
  # Exactness needs two documented deviations off (docs/distributed.md): dropout inside
  # experts is drawn on the processing rank, and the balance loss would count the
  # padding rows of the buffers padded to the ranks' largest pass.
  --set model.dropout=0 --set moe.balance_loss_ignore_padding=true)
one() { OMP_NUM_THREADS=2 "${TRAIN[@]}" "$@"; }
ep2() { "${MPIRUN[@]}" -np 2 "${TRAIN[@]}" --set moe.expert_parallel=true --set train.update_freq=1 "$@"; }

# same_metrics A B KIND FROM: loss/nll (and the global grad_norm of train records) of records of KIND from update FROM on agree to 1e-5 relative.
same_metrics() {
  "$PY" - "$@" <<'PY'
import json, sys
a_path, b_path, kind, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def load(p):
    return {r["update"]: r for r in map(json.loads, open(p)) if r.get("kind") == kind and r["update"] >= start}
a, b = load(a_path), load(b_path)
if not a or sorted(a) != sorted(b):
    print(f"  updates differ: {sorted(a)} vs {sorted(b)}"); sys.exit(1)
bad = [(u, k, a[u][k], b[u].get(k)) for u in a for k in (("loss", "nll", "grad_norm") if kind == "train" else ("loss", "nll"))
       if b[u].get(k) is None or abs(a[u][k] - b[u][k]) > 1e-5 * max(1.0, abs(a[u][k]))]
for u, k, x, y in bad[:3]: print(f"  update {u} {k}: {x!r} vs {y!r}")
sys.exit(1 if bad else 0)
PY
}

# ---- 1. one update: 2 expert-parallel ranks = 1 process on the same global batch
one --set train.save_dir="$TMP/one" --set train.max_update=1 --set train.update_freq=2 > "$TMP/one.log" 2>&1
check "1 process, update_freq 2, trains" test $? -eq 0
ep2 --set train.save_dir="$TMP/ep" --set train.max_update=1 > "$TMP/ep.log" 2>&1
check "2 expert-parallel ranks x update_freq 1 train" test $? -eq 0
check "train loss and gradient norm equal the single process's" same_metrics "$TMP/one/metrics.jsonl" "$TMP/ep/metrics.jsonl" train 1
check "validation loss equals the single process's" same_metrics "$TMP/one/metrics.jsonl" "$TMP/ep/metrics.jsonl" valid 1
check "parameters (every expert, by global id) equal the single process's" \
  "${COMPARE[@]}" "$TMP/one/checkpoint_last/model.safetensors" "$TMP/ep/checkpoint_last/model.safetensors" \
  --atol 1e-4 --rtol 1e-4
check "Adam state equals the single process's" \
  "${COMPARE[@]}" "$TMP/one/checkpoint_last/optimizer.safetensors" "$TMP/ep/checkpoint_last/optimizer.safetensors" \
  --atol 1e-4 --rtol 1e-4
one --set train.save_dir="$TMP/ctl" --set train.max_update=1 --set train.update_freq=1 > "$TMP/ctl.log" 2>&1
check "control: 1 process on half the global batch gives other parameters" \
  "${COMPARE[@]}" "$TMP/ctl/checkpoint_last/model.safetensors" "$TMP/ep/checkpoint_last/model.safetensors" \
  --atol 1e-4 --rtol 1e-4 --expect-differ

# ---- 2. resume across the two layouts
one --set train.save_dir="$TMP/straight" --set train.max_update=2 --set train.update_freq=2 > "$TMP/straight.log" 2>&1
check "uninterrupted single process for 2 updates" test $? -eq 0
cp -r "$TMP/ep" "$TMP/ep_to_one"
one --set train.save_dir="$TMP/ep_to_one" --set train.max_update=2 --set train.update_freq=2 > "$TMP/ep_to_one.log" 2>&1
check "expert-parallel checkpoint resumes on 1 process" grep -q "resumed from .* at update 1 .*saved by 2 rank(s), now 1" "$TMP/ep_to_one.log"
check "  with the uninterrupted run's next loss" same_metrics "$TMP/straight/metrics.jsonl" "$TMP/ep_to_one/metrics.jsonl" train 2
cp -r "$TMP/one" "$TMP/one_to_ep"
ep2 --set train.save_dir="$TMP/one_to_ep" --set train.max_update=2 > "$TMP/one_to_ep.log" 2>&1
check "1-process checkpoint resumes on 2 expert-parallel ranks" grep -q "resumed from .* at update 1" "$TMP/one_to_ep.log"
check "  with the uninterrupted run's next loss" same_metrics "$TMP/straight/metrics.jsonl" "$TMP/one_to_ep/metrics.jsonl" train 2
check "  and its parameters" \
  "${COMPARE[@]}" "$TMP/straight/checkpoint_last/model.safetensors" "$TMP/one_to_ep/checkpoint_last/model.safetensors" \
  --atol 2e-4 --rtol 1e-4

# ---- 4. fewer experts than ranks (fairseq's replication): top-2 MoE, 2 experts in one
# stratum, on 4 ranks = 2 all-to-all groups {0,1}, {2,3}, each expert replicated twice
TOP2=(--set moe.experts=2 --set 'moe.strata=[2]')
one "${TOP2[@]}" --set train.save_dir="$TMP/one4" --set train.max_update=1 --set train.update_freq=4 > "$TMP/one4.log" 2>&1
check "top-2, 1 process, update_freq 4, trains" test $? -eq 0
"${MPIRUN[@]}" -np 4 "${TRAIN[@]}" "${TOP2[@]}" --set moe.expert_parallel=true --set train.update_freq=1 \
  --set train.save_dir="$TMP/ep4" --set train.max_update=1 > "$TMP/ep4.log" 2>&1
check "top-2, 2 experts on 4 expert-parallel ranks train" test $? -eq 0
check "  train loss and gradient norm equal the single process's" same_metrics "$TMP/one4/metrics.jsonl" "$TMP/ep4/metrics.jsonl" train 1
check "  validation loss equals the single process's" same_metrics "$TMP/one4/metrics.jsonl" "$TMP/ep4/metrics.jsonl" valid 1
check "  parameters (experts from one all-to-all group) equal the single process's" \
  "${COMPARE[@]}" "$TMP/one4/checkpoint_last/model.safetensors" "$TMP/ep4/checkpoint_last/model.safetensors" \
  --atol 1e-4 --rtol 1e-4
check "  Adam state equals the single process's" \
  "${COMPARE[@]}" "$TMP/one4/checkpoint_last/optimizer.safetensors" "$TMP/ep4/checkpoint_last/optimizer.safetensors" \
  --atol 1e-4 --rtol 1e-4
one "${TOP2[@]}" --set train.save_dir="$TMP/straight4" --set train.max_update=2 --set train.update_freq=4 > "$TMP/straight4.log" 2>&1
cp -r "$TMP/ep4" "$TMP/ep4_to_one"
one "${TOP2[@]}" --set train.save_dir="$TMP/ep4_to_one" --set train.max_update=2 --set train.update_freq=4 > "$TMP/ep4_to_one.log" 2>&1
check "  its checkpoint resumes on 1 process" grep -q "resumed from .* at update 1 .*saved by 4 rank(s), now 1" "$TMP/ep4_to_one.log"
check "  with the uninterrupted run's next loss" same_metrics "$TMP/straight4/metrics.jsonl" "$TMP/ep4_to_one/metrics.jsonl" train 2
cp -r "$TMP/one4" "$TMP/one_to_ep4"
"${MPIRUN[@]}" -np 4 "${TRAIN[@]}" "${TOP2[@]}" --set moe.expert_parallel=true --set train.update_freq=1 \
  --set train.save_dir="$TMP/one_to_ep4" --set train.max_update=2 > "$TMP/one_to_ep4.log" 2>&1
check "  a 1-process checkpoint resumes on the 4 ranks" grep -q "resumed from .* at update 1" "$TMP/one_to_ep4.log"
check "  with the uninterrupted run's next loss" same_metrics "$TMP/straight4/metrics.jsonl" "$TMP/one_to_ep4/metrics.jsonl" train 2

# ---- 5. SMoE 2-2 with expert-output masking (moe.moe_type eom). The training masks
# are keyed by (global expert, capacity slot) with the slot's stride the capacity, which
# is sized by the largest pass over the ranks: they differ from one process's (a
# documented deviation, docs/distributed.md). Evaluation scales by 1 - p, deterministic:
# with lr 1e-30 the update leaves the f32 weights alone and the validation losses must agree.
EOM=(--set moe.moe_type=eom --set train.lr=1e-30 --set train.warmup_init_lr=1e-30)
one "${EOM[@]}" --set train.save_dir="$TMP/one_eom" --set train.max_update=1 --set train.update_freq=2 > "$TMP/one_eom.log" 2>&1
check "EOM, 1 process, update_freq 2, trains" test $? -eq 0
ep2 "${EOM[@]}" --set train.save_dir="$TMP/ep_eom" --set train.max_update=1 > "$TMP/ep_eom.log" 2>&1
check "EOM, 2 expert-parallel ranks train" test $? -eq 0
check "  validation loss (EOM scales by 1 - p) equals the single process's" same_metrics "$TMP/one_eom/metrics.jsonl" "$TMP/ep_eom/metrics.jsonl" valid 1

# ---- 3. a placement that is not supported is refused with one line
"${MPIRUN[@]}" -np 3 "${TRAIN[@]}" --set moe.expert_parallel=true --set train.save_dir="$TMP/bad" \
  --set train.max_update=1 > "$TMP/bad.log" 2>&1
check "4 experts on 3 ranks is refused" test $? -ne 0
check "  naming the option" grep -q "moe.expert_parallel needs experts to be a multiple of the 3 ranks or the ranks a multiple of the experts" "$TMP/bad.log"
finish
