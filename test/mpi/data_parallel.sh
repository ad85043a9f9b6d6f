#!/usr/bin/env bash
# Data parallelism under mpirun on the fixture corpus (tiny dense model, dropout on):
#  1. one process with update_freq 4, 2 ranks x 2 and 4 ranks x 1 make the same updates
#     (losses, validation, parameters within fp32 tolerance); update_freq 2 on one
#     process does not (negative control); likewise an SMoE model with its experts
#     on every rank (1 x 2 = 2 x 1);
#  2. a checkpoint written by 2 ranks resumes on 1 and on 4 ranks with the losses an
#     uninterrupted run has;
#  3. failures end the job: an exception on one rank, kill -9 of one rank, a rank
#     that stops answering (collective timeout), ranks whose weights differ;
#     SIGTERM to one rank stops every rank cleanly with a checkpoint;
#  4. the communicator unit tests ([dist]) on 3 ranks.
# Usage: test/mpi/data_parallel.sh BUILD_DIR. Needs mpirun and an MPI build.
SUITE="mpi data parallel"
source "$(dirname "$0")/lib.sh"
TRAIN=("$BUILD/strata-train" "$ROOT/jobs/configs/tiny.yaml"
  --set data.data_dir="$TMP/data" --set data.lang_pairs=en-de,de-en,en-fr,fr-en --set data.valid_subset=dev
  --set train.log_interval=1 --set train.validate_interval_updates=1000 --set train.save_interval_updates=1000
  --set train.valid_bleu_sentences=40 --set decode.beam=2
  # a constant learning rate from update 1, so every update moves the weights visibly
  --set train.warmup_init_lr=0.002)
one() { OMP_NUM_THREADS=2 "${TRAIN[@]}" "$@"; }
ranks() { local n=$1; shift; "${MPIRUN[@]}" -np "$n" "${TRAIN[@]}" "$@"; }

# same_metrics A B KIND FROM: loss and nll of train records, every loss, nll, BLEU
# and chrF field of valid records, to 1e-6 relative.
same_metrics() {
  local keys=loss,nll
  [[ $3 == train ]] || keys='loss*,nll*,bleu*,chrf*'
  metrics_agree 1e-6 "$keys" "$@"
}
state_field() { sed -n "s/^$2: //p" "$1/checkpoint_last/trainer_state.yaml"; }

# ---- 1. the same global batch on 1, 2 and 4 ranks
# Tolerances: sums in another order move fp32 gradients by ~1e-7 relative, and
# Adam's first steps (m / (sqrt(v) + eps), about lr * sign(g)) amplify that
# where a gradient is near zero: observed max |diff| 2.5e-5 after 3 updates,
# 6.4e-5 after 5 (lr 0.002); a different global batch moves weights by ~1e-2.
one --set train.save_dir="$TMP/w1" --set train.max_update=3 --set train.update_freq=4 > "$TMP/w1.log" 2>&1
check "1 process, update_freq 4, trains" test $? -eq 0
ranks 2 --set train.save_dir="$TMP/w2" --set train.max_update=3 --set train.update_freq=2 > "$TMP/w2.log" 2>&1
check "2 ranks x update_freq 2 train" test $? -eq 0
# (small gradient buckets, so the overlap check below sees many)
ranks 4 --set train.save_dir="$TMP/w4" --set train.max_update=3 --set train.update_freq=1 \
  --set train.grad_bucket_mb=0.05 > "$TMP/w4.log" 2>&1
check "4 ranks x update_freq 1 train" test $? -eq 0
one --set train.save_dir="$TMP/ctl" --set train.max_update=3 --set train.update_freq=2 > "$TMP/ctl.log" 2>&1
check "1 process, update_freq 2 (control), trains" test $? -eq 0
check "rank 0 alone logs the progress" test "$(grep -c '^epoch 1 | update' "$TMP/w4.log")" -eq 3
# every bucket starts inside the last backward (the tiny model has no unused parameter)
check "the gradient buckets (several) start during the backward" \
  grep -Eq 'gradient all-reduce: ([1-9][0-9]+) buckets, \1 started during the backward' "$TMP/w4.log"
for w in 2 4; do
  check "W=$w: train losses equal the single process's" same_metrics "$TMP/w1/metrics.jsonl" "$TMP/w$w/metrics.jsonl" train 1
  check "W=$w: validation loss, BLEU and chrF equal the single process's" \
    same_metrics "$TMP/w1/metrics.jsonl" "$TMP/w$w/metrics.jsonl" valid 1
  check "W=$w: updated parameters equal the single process's (fp32 tolerance)" \
    "${COMPARE[@]}" "$TMP/w1/checkpoint_last/model.safetensors" "$TMP/w$w/checkpoint_last/model.safetensors" \
    --atol 1e-4 --rtol 1e-4
  check "W=$w: the data position in the checkpoint is the single process's" \
    test "$(state_field "$TMP/w$w" batch_in_epoch)" = "$(state_field "$TMP/w1" batch_in_epoch)"
done
check "control: another global batch gives other parameters" \
  "${COMPARE[@]}" "$TMP/w1/checkpoint_last/model.safetensors" "$TMP/ctl/checkpoint_last/model.safetensors" \
  --atol 1e-4 --rtol 1e-4 --expect-differ
same_metrics "$TMP/w1/metrics.jsonl" "$TMP/ctl/metrics.jsonl" train 2 > /dev/null
check "control: and other losses" test $? -ne 0

# An SMoE model in data-parallel mode (every rank holds all experts): each batch is
# routed on its own rank as one process routes it, so the same equivalence holds;
# experts that get no token on a rank have no gradient there (the has-grad flags).
SMOE=("$BUILD/strata-train" "$ROOT/jobs/configs/tiny_smoe.yaml" "${TRAIN[@]:2}" --set train.max_update=3)
OMP_NUM_THREADS=2 "${SMOE[@]}" --set train.save_dir="$TMP/smoe1" --set train.update_freq=2 > "$TMP/smoe1.log" 2>&1
check "SMoE 2-2, 1 process, update_freq 2, trains" test $? -eq 0
"${MPIRUN[@]}" -np 2 "${SMOE[@]}" --set train.save_dir="$TMP/smoe2" --set train.update_freq=1 > "$TMP/smoe2.log" 2>&1
check "SMoE 2-2, 2 ranks x update_freq 1, trains" test $? -eq 0
check "SMoE: train losses equal the single process's" \
  same_metrics "$TMP/smoe1/metrics.jsonl" "$TMP/smoe2/metrics.jsonl" train 1
check "SMoE: validation loss, BLEU and chrF equal the single process's" \
  same_metrics "$TMP/smoe1/metrics.jsonl" "$TMP/smoe2/metrics.jsonl" valid 1
# Parameters are compared after ONE update: later, Adam turns fp32 summation-order
# noise in a near-zero gradient (a ReLU unit at 0 for one token) into an lr-sized
# step of either sign, so parameter equality after several updates is luck, not a
# property (the losses above still agree over all three updates).
OMP_NUM_THREADS=2 "${SMOE[@]}" --set train.max_update=1 --set train.save_dir="$TMP/smoe1u" --set train.update_freq=2 \
  > "$TMP/smoe1u.log" 2>&1
"${MPIRUN[@]}" -np 2 "${SMOE[@]}" --set train.max_update=1 --set train.save_dir="$TMP/smoe2u" --set train.update_freq=1 \
  > "$TMP/smoe2u.log" 2>&1
check "SMoE: parameters after one update (experts included) equal the single process's" \
  "${COMPARE[@]}" "$TMP/smoe1u/checkpoint_last/model.safetensors" "$TMP/smoe2u/checkpoint_last/model.safetensors" \
  --atol 1e-5 --rtol 1e-5

# ---- 2. saved on 2 ranks, resumed on 1, 4 and 2
one --set train.save_dir="$TMP/straight" --set train.max_update=5 --set train.update_freq=4 > "$TMP/straight.log" 2>&1
check "uninterrupted single process for 5 updates" test $? -eq 0
cp -r "$TMP/w2" "$TMP/r1"
cp -r "$TMP/w2" "$TMP/r4"
one --set train.save_dir="$TMP/r1" --set train.max_update=5 --set train.update_freq=4 > "$TMP/r1.log" 2>&1
check "resumed on 1 process" grep -q "resumed from .* at update 3 .*saved by 2 rank(s), now 1" "$TMP/r1.log"
ranks 4 --set train.save_dir="$TMP/r4" --set train.max_update=5 --set train.update_freq=1 > "$TMP/r4.log" 2>&1
check "resumed on 4 ranks" grep -q "resumed from .* at update 3 .*saved by 2 rank(s), now 4" "$TMP/r4.log"
ranks 2 --set train.save_dir="$TMP/w2" --set train.max_update=5 --set train.update_freq=2 > "$TMP/r2.log" 2>&1
check "resumed on 2 ranks" grep -q "resumed from .* at update 3" "$TMP/r2.log"
for r in r1 r4 w2; do
  check "$r: losses after the resume equal the uninterrupted run's" \
    same_metrics "$TMP/straight/metrics.jsonl" "$TMP/$r/metrics.jsonl" train 4
done
check "resumed on 4 ranks: parameters equal the uninterrupted run's" \
  "${COMPARE[@]}" "$TMP/straight/checkpoint_last/model.safetensors" "$TMP/r4/checkpoint_last/model.safetensors" \
  --atol 2e-4 --rtol 1e-4

# ---- 3. failures end the whole job, naming the rank
LONG=(--set train.max_update=100000)
start=$SECONDS
timeout 120 "${MPIRUN[@]}" -x STRATA_TEST_FAIL_RANK=1 -x STRATA_TEST_FAIL_UPDATE=3 -np 2 "${TRAIN[@]}" "${LONG[@]}" \
  --set train.save_dir="$TMP/fail" > "$TMP/fail.log" 2>&1
rc=$? took=$((SECONDS - start))
echo "  exception on rank 1 at update 3: exit $rc after $took s"
check "an exception on one rank ends the job with a non-zero exit within 30 s" \
  bash -c "[[ $rc -ne 0 && $rc -ne 124 && $took -lt 30 ]]"
check "its message names the rank and the cause" grep -q "rank 1: error: test hook: STRATA_TEST_FAIL_RANK" "$TMP/fail.log"

# wait_job PID: its exit status, or 124 after 90 s (then it is terminated)
wait_job() {
  if ! timeout 90 tail --pid="$1" -f /dev/null; then
    kill -TERM "$1" 2>/dev/null; sleep 3; kill -9 "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    return 124
  fi
  wait "$1"
}
# waits for the progress line of update $2 in $1.log, then prints rank $3's pid from $1.err
# (stdout and stderr go to separate files: mpirun forwards them independently)
pid_of_rank_after() {
  for _ in $(seq 600); do grep -q "^epoch .* | update $2/" "$1.log" && break; sleep 0.1; done
  sed -n "s/^strata-train: rank $3\/[0-9]* pid \([0-9]*\) .*/\1/p" "$1.err"
}
"${MPIRUN[@]}" -np 2 "${TRAIN[@]}" "${LONG[@]}" --set train.save_dir="$TMP/kill" > "$TMP/kill.log" 2> "$TMP/kill.err" &
job=$!
victim=$(pid_of_rank_after "$TMP/kill" 3 1)
start=$SECONDS
[[ -n "$victim" ]] && kill -9 "$victim"
wait_job $job
rc=$? took=$((SECONDS - start))
echo "  kill -9 of rank 1 (pid ${victim:-none}): exit $rc after $took s"
check "kill -9 of one rank ends the job with a non-zero exit within 60 s" \
  bash -c "[[ -n '$victim' && $rc -ne 0 && $took -lt 60 ]]"
check "mpirun names the killed rank" grep -q "rank 1 .*signal 9" "$TMP/kill.log" "$TMP/kill.err"

"${MPIRUN[@]}" -np 2 "${TRAIN[@]}" "${LONG[@]}" --set train.save_dir="$TMP/term" > "$TMP/term.log" 2> "$TMP/term.err" &
job=$!
victim=$(pid_of_rank_after "$TMP/term" 3 1)
[[ -n "$victim" ]] && kill -TERM "$victim"
wait_job $job
rc=$?
last=$(grep -c '^epoch 1 | update' "$TMP/term.log")
check "SIGTERM to one rank stops every rank with exit 0" bash -c "[[ -n '$victim' && $rc -eq 0 ]]"
check "and rank 0 saves the last update ($last)" \
  bash -c "[[ -f '$TMP/term/checkpoint_last/DONE' && \"\$(sed -n 's/^update: //p' '$TMP/term/checkpoint_last/trainer_state.yaml')\" == '$last' ]]"
check "the stop is logged" grep -q "stop requested by a signal" "$TMP/term.log"

start=$SECONDS
timeout 120 "${MPIRUN[@]}" -x STRATA_TEST_HANG_RANK=1 -x STRATA_TEST_HANG_UPDATE=3 -x STRATA_COLLECTIVE_TIMEOUT=5 \
  -np 2 "${TRAIN[@]}" "${LONG[@]}" --set train.save_dir="$TMP/hang" > "$TMP/hang.log" 2>&1
rc=$? took=$((SECONDS - start))
echo "  rank 1 stops answering at update 3 (timeout 5 s): exit $rc after $took s"
check "a rank that stops answering ends the job through the collective timeout" \
  bash -c "[[ $rc -ne 0 && $rc -ne 124 && $took -lt 40 ]]"
check "the waiting rank names itself and the timeout" \
  grep -q "rank 0: error: .*no answer from the other ranks after 5 s" "$TMP/hang.log"

timeout 120 "${MPIRUN[@]}" -x STRATA_TEST_PERTURB_RANK=1 -np 2 "${TRAIN[@]}" "${LONG[@]}" \
  --set train.save_dir="$TMP/diverged" > "$TMP/diverged.log" 2>&1
rc=$?
check "ranks whose weights differ are refused at start" \
  bash -c "[[ $rc -ne 0 && $rc -ne 124 ]] && grep -q 'differs between rank 0 and rank(s) 1' '$TMP/diverged.log'"

# ---- 4. the communicator's own tests on an odd number of ranks
timeout 120 "${MPIRUN[@]}" -x STRATA_COLLECTIVE_TIMEOUT=30 -np 3 "$BUILD/strata-unit-tests" "[dist]" \
  > "$TMP/unit.log" 2>&1
rc=$?
check "the [dist] unit tests pass on 3 ranks" test $rc -eq 0
[[ $rc -eq 0 ]] || grep -m5 -i "failed\|error" "$TMP/unit.log"
finish
