#!/usr/bin/env bash
# Expert parallelism (moe.expert_parallel) under mpirun on the fixture corpus, tiny SMoE
# (4 experts, strata 2,2; capacity_factor 4 so no token is dropped, as the multi-rank
# capacity is the max over the ranks):
#  1. 2 ranks x update_freq 1, each holding 2 experts, make the update one process
#     with update_freq 2 makes: loss, validation loss, parameters and Adam state
#     (experts gathered by global id into rank 0's checkpoint);
#  2. that checkpoint resumes on 1 process, and a 1-process checkpoint on 2
#     expert-parallel ranks, with the next loss of an uninterrupted run;
#     (moe.balance_loss_ignore_padding: see the note at TRAIN);
#  3. experts neither a multiple nor a divisor of the ranks are refused;
#  4. E < W: top-2 MoE, 2 experts on 4 ranks (each expert replicated twice) make the
#     update one process with update_freq 4 makes; checkpoints resume across 4 ranks and 1;
#  5. EOM (moe_type eom) on 2 ranks: the training update (loss, parameters, Adam state) and
#     validation equal one process's (masks keyed by (pass row, global expert));
#  6. dropout on (model.dropout, activation and attention dropout 0.1; masks inside experts
#     keyed by the token's micro-batch stream, pass row and global expert): top-2 with 4
#     experts on 2 ranks, top-2 with 2 experts on 4 ranks (replicated experts) and SMoE 2-2
#     with EOM on 2 ranks make one process's update.
# Usage: test/mpi/expert_parallel.sh BUILD_DIR. Needs mpirun and an MPI build.
SUITE="mpi expert parallel"
source "$(dirname "$0")/lib.sh"
TRAIN=("$BUILD/strata-train" "$ROOT/jobs/configs/tiny_smoe.yaml"
  --set data.data_dir="$TMP/data" --set data.lang_pairs=en-de,de-en,en-fr,fr-en --set data.valid_subset=dev
  --set train.log_interval=1 --set train.validate_interval_updates=1000 --set train.save_interval_updates=1000
  --set train.valid_bleu_sentences=0 --set moe.capacity_factor=4 --set train.warmup_init_lr=0.002
  # Exactness needs one documented deviation off (docs/distributed.md): the balance loss
  # would count the padding rows of the buffers padded to the ranks' largest pass.
  # Sections 1-5 run without dropout, section 6 with it.
  --set model.dropout=0 --set moe.balance_loss_ignore_padding=true)
one() { OMP_NUM_THREADS=2 "${TRAIN[@]}" "$@"; }
ep2() { "${MPIRUN[@]}" -np 2 "${TRAIN[@]}" --set moe.expert_parallel=true --set train.update_freq=1 "$@"; }

# same_metrics A B KIND FROM: loss and nll (and the global grad_norm of train
# records) from update FROM on agree to 1e-5 relative.
same_metrics() {
  local keys=loss,nll
  [[ $3 == train ]] && keys=loss,nll,grad_norm
  metrics_agree 1e-5 "$keys" "$@"
}

other_metrics() { ! same_metrics "$@" > /dev/null; }

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

# ---- 5. SMoE 2-2 with expert-output masking (moe.moe_type eom). The training masks are
# keyed by (pass row, global expert) in the micro-batch's stream: rank r masks what micro-batch
# r masks on one process, so the whole update must agree (evaluation scales by 1 - p).
# same_update NAME A B: train metrics, validation, parameters and Adam state of runs A and B agree.
same_update() {
  local what=$1 a=$2 b=$3
  check "$what: train loss and gradient norm equal the single process's" same_metrics "$TMP/$a/metrics.jsonl" "$TMP/$b/metrics.jsonl" train 1
  check "$what: validation loss equals the single process's" same_metrics "$TMP/$a/metrics.jsonl" "$TMP/$b/metrics.jsonl" valid 1
  check "$what: parameters equal the single process's" \
    "${COMPARE[@]}" "$TMP/$a/checkpoint_last/model.safetensors" "$TMP/$b/checkpoint_last/model.safetensors" \
    --atol 1e-4 --rtol 1e-4
  check "$what: Adam state equals the single process's" \
    "${COMPARE[@]}" "$TMP/$a/checkpoint_last/optimizer.safetensors" "$TMP/$b/checkpoint_last/optimizer.safetensors" \
    --atol 1e-4 --rtol 1e-4
}
EOM=(--set moe.moe_type=eom)
one "${EOM[@]}" --set train.save_dir="$TMP/one_eom" --set train.max_update=1 --set train.update_freq=2 > "$TMP/one_eom.log" 2>&1
check "EOM, 1 process, update_freq 2, trains" test $? -eq 0
ep2 "${EOM[@]}" --set train.save_dir="$TMP/ep_eom" --set train.max_update=1 > "$TMP/ep_eom.log" 2>&1
check "EOM, 2 expert-parallel ranks train" test $? -eq 0
same_update "EOM" one_eom ep_eom
check "  control: the EOM loss differs from plain SMoE's (section 1: the masks are in effect)" \
  other_metrics "$TMP/one/metrics.jsonl" "$TMP/one_eom/metrics.jsonl" train 1

# ---- 6. dropout on: dropout inside experts is keyed by (micro-batch stream, pass row, global
# expert, feature); the receiving rank learns each row's source row and stream with the tokens.
DROP=(--set model.dropout=0.1 --set model.activation_dropout=0.1 --set model.attention_dropout=0.1)
TOP2x4=(--set moe.experts=4 --set 'moe.strata=[4]')
one "${DROP[@]}" "${TOP2x4[@]}" --set train.save_dir="$TMP/one_drop" --set train.max_update=1 --set train.update_freq=2 > "$TMP/one_drop.log" 2>&1
check "dropout on, top-2 with 4 experts, 1 process, update_freq 2, trains" test $? -eq 0
ep2 "${DROP[@]}" "${TOP2x4[@]}" --set train.save_dir="$TMP/ep_drop" --set train.max_update=1 > "$TMP/ep_drop.log" 2>&1
check "dropout on, top-2 with 4 experts, 2 expert-parallel ranks train" test $? -eq 0
same_update "dropout on, 4 experts on 2 ranks" one_drop ep_drop
one "${TOP2x4[@]}" --set train.save_dir="$TMP/one_nodrop" --set train.max_update=1 --set train.update_freq=2 > "$TMP/one_nodrop.log" 2>&1
check "  control: the same run without dropout gives other parameters" \
  "${COMPARE[@]}" "$TMP/one_nodrop/checkpoint_last/model.safetensors" "$TMP/ep_drop/checkpoint_last/model.safetensors" \
  --atol 1e-4 --rtol 1e-4 --expect-differ
one "${DROP[@]}" "${TOP2[@]}" --set train.save_dir="$TMP/one4_drop" --set train.max_update=1 --set train.update_freq=4 > "$TMP/one4_drop.log" 2>&1
check "dropout on, top-2 with 2 experts, 1 process, update_freq 4, trains" test $? -eq 0
"${MPIRUN[@]}" -np 4 "${TRAIN[@]}" "${DROP[@]}" "${TOP2[@]}" --set moe.expert_parallel=true --set train.update_freq=1 \
  --set train.save_dir="$TMP/ep4_drop" --set train.max_update=1 > "$TMP/ep4_drop.log" 2>&1
check "dropout on, top-2 with 2 experts on 4 expert-parallel ranks (replicated experts) train" test $? -eq 0
same_update "dropout on, 2 experts on 4 ranks" one4_drop ep4_drop
one "${DROP[@]}" "${EOM[@]}" --set train.save_dir="$TMP/one_smoe_drop" --set train.max_update=1 --set train.update_freq=2 > "$TMP/one_smoe_drop.log" 2>&1
check "dropout on, SMoE 2-2 with EOM, 1 process, update_freq 2, trains" test $? -eq 0
ep2 "${DROP[@]}" "${EOM[@]}" --set train.save_dir="$TMP/ep_smoe_drop" --set train.max_update=1 > "$TMP/ep_smoe_drop.log" 2>&1
check "dropout on, SMoE 2-2 with EOM, 2 expert-parallel ranks train" test $? -eq 0
same_update "dropout on, SMoE 2-2 with EOM on 2 ranks" one_smoe_drop ep_smoe_drop

# ---- 3. a placement that is not supported is refused with one line
"${MPIRUN[@]}" -np 3 "${TRAIN[@]}" --set moe.expert_parallel=true --set train.save_dir="$TMP/bad" \
  --set train.max_update=1 > "$TMP/bad.log" 2>&1
check "4 experts on 3 ranks is refused" test $? -ne 0
check "  naming the option" grep -q "moe.expert_parallel needs experts to be a multiple of the 3 ranks or the ranks a multiple of the experts" "$TMP/bad.log"
finish
