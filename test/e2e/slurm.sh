#!/usr/bin/env bash
# The job files under a real Slurm: a one-node cluster (munged, slurmctld, slurmd
# as root in a temporary directory, test/slurm/cluster.sh; slurm-wlm and munge are
# installed with apt-get when missing) runs
#  1. jobs/run_m4.sh / run_m15.sh argument errors: one line, exit 2, nothing created;
#  2. jobs/run_lohelp.sh on the fixture with a tiny config and 2 tasks (mpirun inside
#     the job): checkpoint with DONE, translations of all 8 directions, BLEU files;
#  3. the same job preempted: SIGUSR1 to the batch shell mid-training (what
#     --signal=B:USR1@180 sends before the time limit) -> the trainer checkpoints ->
#     the job requeues itself -> it resumes (2 tasks under srun --mpi=pmix) and ends
#     with exactly the losses of run 2;
#  4. the same job cancelled (scancel) and resubmitted, then crashed (kill -9 of the
#     trainers) and resubmitted: each run resumes from the last checkpoint (a crash
#     loses only the updates after it) and the job ends with run 2's losses;
#  5. jobs/run_m4.sh (SMoE 2-2) on a miniature of m15.zip's fairseq data-bin layout,
#     then jobs/evaluate.sh on it, both as sbatch jobs;
#  6. jobs/run_lohelp.sh with bash, no Slurm (mpirun): SIGUSR1 stops it with a
#     checkpoint, running it again resumes.
# Every wait has a timeout; the cluster is stopped and removed on exit.
# Usage: test/e2e/slurm.sh BUILD_DIR   (root; about 2-3 minutes on 2 cores)
SUITE="e2e slurm"
source "$(dirname "$0")/lib.sh"
source "$ROOT/test/slurm/cluster.sh"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
CL=$TMP/cluster
cleanup() {
  slurm_stop "$CL" > /dev/null 2>&1
  [[ -n ${KEEP_TMP:-} ]] || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. argument errors (no Slurm needed)
# arg_error RC PATTERN SCRIPT ARGS...: exit RC, one line naming PATTERN, nothing created
arg_error() {
  local want=$1 pat=$2 script=$3 out rc
  shift 3
  mkdir -p "$TMP/args"
  out=$(cd "$TMP/args" && bash "$ROOT/jobs/$script" "$@" 2>&1)
  rc=$?
  echo "    $script $*: exit $rc: $out"
  [[ $rc -eq $want && $(printf '%s\n' "$out" | wc -l) -eq 1 && $out == *"$pat"* && ! -e $TMP/args/tmp ]]
}
check "run_m4.sh tmp base 8 4 2,2,2,4 stops with the sum error" \
  arg_error 2 "EXPERTS_PER_STRATUM 2,2,2,4 sums to 10, but TOTAL_EXPERT_NUM is 8" run_m4.sh tmp base 8 4 2,2,2,4
check "run_m4.sh tmp cmr 8 2 4,4 stops with the CMR/strata error" \
  arg_error 2 "cmr cannot be combined with more than one stratum" run_m4.sh tmp cmr 8 2 4,4
check "run_m15.sh: strata count differs from STRATA" \
  arg_error 2 "lists 3 strata, but STRATA is 2" run_m15.sh tmp base 16 2 4,4,8
check "run_m15.sh: unknown MOE_TYPE" arg_error 2 "MOE_TYPE must be base, eom or cmr, got 'eom-cmr'" \
  run_m15.sh tmp eom-cmr 16 1
check "run_lohelp.sh: uneven default strata" arg_error 2 "does not split into 3 equal strata" run_lohelp.sh tmp base 8 3
missing_data() {  # run_m4.sh with DATA_DIR pointing nowhere: exit 1, one line, nothing created
  local out rc
  out=$(cd "$TMP/args" && DATA_DIR=$TMP/none bash "$ROOT/jobs/run_m4.sh" tmp base 8 4 2>&1)
  rc=$?
  echo "    run_m4.sh tmp base 8 4 (no data): exit $rc: $out"
  [[ $rc -eq 1 && $(printf '%s\n' "$out" | wc -l) -eq 1 && $out == *"no data-bin at $TMP/none/data_bin/shard000"* \
     && ! -e $TMP/args/tmp ]]
}
check "run_m4.sh without m15.zip names the missing data-bin" missing_data

# ---- the cluster
if ! slurm_install; then
  check "slurm-wlm and munge are installed" false
  finish; exit $?
fi
if ! slurm_start "$CL" 2; then
  check "munged, slurmctld and slurmd come up" false
  finish; exit $?
fi
check "munged, slurmctld and slurmd come up ($(sinfo --version))" true

NT=2
if ! command -v mpirun > /dev/null || ! ldd "$BUILD/strata-train" | grep -q libmpi; then
  NT=1
  echo "  note: strata-train is built without MPI (or no mpirun): jobs run 1 task"
fi
if [[ $NT -eq 2 ]]; then
  out=$(timeout 60 srun -n 2 env STRATA_LAUNCHER=srun bash "$ROOT/jobs/lib/rank_exec.sh" true 2>&1)
  check "srun without an MPI plugin is refused (N separate trainers would share a save_dir)" \
    grep -q "without an MPI plugin" <<< "$out"
fi

# Shared by every lohelp job: the fixture, the tiny config, one prepared data dir.
export TEXT_DIR=$FIXTURE CONFIG=$ROOT/jobs/configs/lohelp_tiny.yaml VOCAB=1000 NTEST=20 DATA_DIR=$TMP/lodata
# submit NAME SAVE [ENV=VALUE ...]: sbatch run_lohelp.sh with NT tasks; prints the job id
submit() {
  local name=$1 save=$2
  shift 2
  env "$@" sbatch --parsable --job-name="$name" --ntasks="$NT" --cpus-per-task=1 \
    --output="$TMP/$name.out" "$ROOT/jobs/run_lohelp.sh" "$save" --set train.log_interval=1
}
state_update() { sed -n 's/^update: //p' "$1/checkpoint_last/trainer_state.yaml" 2> /dev/null; }
# wait_update SAVE N SECONDS: until checkpoint_last is complete at update >= N
wait_update() {
  local i u
  for ((i = 0; i < $3 * 4; i++)); do
    u=$(state_update "$1")
    [[ -f $1/checkpoint_last/DONE && -n $u && $u -ge $2 ]] && return 0
    sleep 0.25
  done
  return 1
}
last_made() { train_losses "$1/metrics.jsonl" 2> /dev/null | tail -n 1 | cut -d' ' -f1; }
wait_made() {  # SAVE N SECONDS: until metrics.jsonl has a training record of update >= N
  local i u
  for ((i = 0; i < $3 * 10; i++)); do
    u=$(last_made "$1")
    [[ -n $u && $u -ge $2 ]] && return 0
    sleep 0.1
  done
  return 1
}
outputs_ok() {  # SAVE: every direction translated (20 lines) and scored
  local save=$1 d n=0
  for d in de-en fr-en it-en nl-en en-de en-fr en-it en-nl; do
    [[ $(wc -l < "$save/results/$d.hyp") -eq 20 && -s $save/results/$d.bleu ]] || { echo "    $d missing"; return 1; }
    n=$((n + 1))
  done
  [[ $(wc -l < "$save/results/bleu.tsv") -eq 9 ]] && grep -q "^Avg" "$save/results/summary.txt" && [[ $n -eq 8 ]]
}
show_tail() { echo "    --- $1 (last lines)"; tail -n "${2:-8}" "$1" 2> /dev/null | sed 's/^/    /'; }

# ---- 2. an uninterrupted job (mpirun inside the job)
A=$TMP/runA
ja=$(submit lohelpA "$A" LAUNCHER=mpirun MPIRUN_ARGS="--allow-run-as-root --oversubscribe")
st=$(wait_job "$ja" 180)
check "job A ($NT tasks, mpirun) completes (state $st, exit $(job_field "$ja" ExitCode))" \
  test "$st" = COMPLETED -a "$(job_field "$ja" ExitCode)" = 0:0
[[ $st == COMPLETED ]] || show_tail "$TMP/lohelpA.out" 15
check "job A trained on $NT process(es) under mpirun" grep -q "training on $NT process(es) (mpirun)" "$TMP/lohelpA.out"
check "job A: checkpoint_last complete (DONE) at update 100" \
  test -f "$A/checkpoint_last/DONE" -a "$(state_update "$A")" = 100
check "job A: translations of all 8 directions and their BLEU files" outputs_ok "$A"
train_losses "$A/metrics.jsonl" > "$TMP/A.losses" 2> /dev/null
check "job A: 100 training losses in metrics.jsonl" test "$(wc -l < "$TMP/A.losses")" -eq 100
sed -n '/^direction/,/^average/p' "$A/results/summary.txt" | sed 's/^/    /'

# ---- 3. preempted: SIGUSR1 to the batch shell, requeue, resume (srun inside the job)
B=$TMP/runB
jb=$(submit lohelpB "$B" SRUN_MPI=pmix)
if wait_update "$B" 20 90; then
  signalled_at=$(state_update "$B")
  scancel --signal=USR1 --batch "$jb"
  check "job B: SIGUSR1 sent mid-training (checkpoint at update $signalled_at of 100)" test "$signalled_at" -lt 100
else
  check "job B reaches a first checkpoint" false
  show_tail "$TMP/lohelpB.out" 15
fi
wait_for 60 "job B to restart" bash -c "[[ \$(scontrol show job -o $jb | grep -o 'Restarts=[0-9]*') == Restarts=1 ]]"
st=$(wait_job "$jb" 180)
check "job B was requeued once and completed (state $st, $(job_field "$jb" Restarts) restart)" \
  test "$st" = COMPLETED -a "$(job_field "$jb" Restarts)" = 1
check "job B forwarded the signal and requeued itself" \
  bash -c "grep -q 'caught SIGUSR1' '$TMP/lohelpB.out' && grep -q 'requeueing job $jb' '$TMP/lohelpB.out'"
resumed=$(sed -n 's/^resumed from .* at update \([0-9]*\) .*/\1/p' "$TMP/lohelpB.out" | tail -n 1)
last_before=$(sed -n '/^resumed from/q; s/^epoch .* | update \([0-9]*\)\/100 .*/\1/p' "$TMP/lohelpB.out" | tail -n 1)
check "job B resumed (srun, $NT tasks) at update ${resumed:-?}, the last update it made before the signal (${last_before:-?}): none lost" \
  test -n "$resumed" -a "$resumed" = "$last_before" -a "${resumed:-0}" -ge "${signalled_at:-1}"
check "job B trained under srun after the restart" grep -q "training on $NT process(es) (srun)" "$TMP/lohelpB.out"
train_losses "$B/metrics.jsonl" > "$TMP/B.losses" 2> /dev/null
check "job B's 100 losses equal job A's, value for value" cmp -s "$TMP/A.losses" "$TMP/B.losses"
cmp -s "$TMP/A.losses" "$TMP/B.losses" || diff "$TMP/A.losses" "$TMP/B.losses" | head -n 4 | sed 's/^/    /'
check "job B: translations and BLEU files after the resume" outputs_ok "$B"

# ---- 4. cancelled (scancel: SIGTERM to every process) and resubmitted; then crashed
# (kill -9 of the trainers between two checkpoints, as a node failure) and resubmitted
C=$TMP/runC
trainer_pids() {  # SAVE: pids of the strata-train processes training into SAVE
  local p
  for p in /proc/[0-9]*; do
    [[ $(cat "$p/comm" 2> /dev/null) == strata-train ]] || continue
    tr '\0' ' ' < "$p/cmdline" 2> /dev/null | grep -q -- "train.save_dir=$1 " && echo "${p#/proc/}"
  done
}
jc=$(submit lohelpC "$C" SRUN_MPI=pmix)
if wait_update "$C" 20 90 && wait_made "$C" 24 60; then
  scancel "$jc"
  st=$(wait_job "$jc" 60)
  made=$(last_made "$C")
  kept=$(state_update "$C")
  check "scancel stops job C cleanly (state $st, no requeue) with a checkpoint at its last update (${kept:-?} of ${made:-?})" \
    test "$st" = CANCELLED -a "$(job_field "$jc" Restarts)" = 0 -a -n "$kept" -a "$kept" = "$made"
  jc2=$(submit lohelpC2 "$C" SRUN_MPI=pmix)
  # the periodic saves come every 10 updates: kill once 40 is saved and 44 made
  if wait_update "$C" 40 90 && wait_made "$C" 44 60; then
    pids=$(trainer_pids "$C")
    # shellcheck disable=SC2086
    [[ -n $pids ]] && kill -9 $pids
    st=$(wait_job "$jc2" 60)
    made=$(last_made "$C")
    kept=$(state_update "$C")
    check "kill -9 of the trainers (${pids//$'\n'/ }) fails the resubmitted job C (state $st)" \
      bash -c "[[ -n '$pids' && $st == FAILED ]] && grep -q 'strata-train failed' '$TMP/lohelpC2.out'"
    # (a record of update u is written before u's checkpoint: a kill during that save loses 10)
    check "the crash loses only the updates since the last checkpoint (made $made, checkpoint_last at $kept: $((made - kept)) lost, saves every 10)" \
      test "$((made - kept))" -ge 0 -a "$((made - kept))" -le 10 -a "$made" -lt 100 -a "$((kept % 10))" -eq 0
    jc3=$(submit lohelpC3 "$C" SRUN_MPI=pmix)
    st=$(wait_job "$jc3" 180)
    check "job C submitted a third time completes (state $st)" test "$st" = COMPLETED
    check "it resumed from update $kept" grep -q "^resumed from .* at update $kept " "$TMP/lohelpC3.out"
    train_losses "$C/metrics.jsonl" > "$TMP/C.losses" 2> /dev/null
    check "job C's 100 losses equal job A's, value for value" cmp -s "$TMP/A.losses" "$TMP/C.losses"
    check "job C: translations and BLEU files" outputs_ok "$C"
  else
    check "the resubmitted job C reaches update 44" false
    show_tail "$TMP/lohelpC2.out" 15
  fi
else
  check "job C reaches update 24" false
  show_tail "$TMP/lohelpC.out" 15
fi

# ---- 5. run_m4.sh and evaluate.sh on a miniature m15.zip (fairseq data-bin), via sbatch
M4DATA=$TMP/m15
check "a miniature m15.zip layout (data_bin/shard000, vocab_bin, retrieved_data)" \
  python3 "$ROOT/test/slurm/make_fake_m15.py" --fixture "$FIXTURE" --spm "$DATA_DIR/bin/spm.model" --out "$M4DATA"
SMALL=(--nodes=1 --ntasks-per-node=1 --cpus-per-task=2 --gpus-per-node=0 --mem=1G)
jm=$(env DATA_DIR="$M4DATA" CONFIG="$ROOT/test/slurm/m4_tiny.yaml" KEEP_GLOBAL_BATCH=0 \
  sbatch --parsable "${SMALL[@]}" --output="$TMP/m4.out" "$ROOT/jobs/run_m4.sh" "$TMP/m4" base 4 2 2,2)
st=$(wait_job "$jm" 120)
check "sbatch run_m4.sh \$SAVE base 4 2 2,2 (headers overridden on the command line) completes (state $st)" \
  test "$st" = COMPLETED
[[ $st == COMPLETED ]] || show_tail "$TMP/m4.out" 15
check "run_m4.sh trained SMoE 2-2 on the fairseq data-bin with the reference's languages" \
  bash -c "grep -q 'experts: 4' '$TMP/m4/checkpoint_last/config.yaml' && grep -q 'format: fairseq' '$TMP/m4/checkpoint_last/config.yaml' \
    && grep -q 'nso-eng: 300 sentences' '$TMP/m4.out' && [[ \$(sed -n 's/^update: //p' '$TMP/m4/checkpoint_last/trainer_state.yaml') == 20 ]]"
je=$(env NTEST=10 sbatch --parsable "${SMALL[@]}" --output="$TMP/eval.out" "$ROOT/jobs/evaluate.sh" "$TMP/m4")
st=$(wait_job "$je" 120)
check "sbatch evaluate.sh on the M4 run completes (state $st)" test "$st" = COMPLETED
[[ $st == COMPLETED ]] || show_tail "$TMP/eval.out" 15
check "M4 evaluation: 8 directions scored, summary written" \
  bash -c "[[ \$(wc -l < '$TMP/m4/results/bleu.tsv') -eq 9 ]] && grep -q '^Avg' '$TMP/m4/results/summary.txt'"

# ---- 6. without Slurm: bash run_lohelp.sh on NT processes (mpirun), SIGUSR1, run again
D=$TMP/runD
(NPROC=$NT MPIRUN_ARGS="--allow-run-as-root --oversubscribe" EVALUATE=0 \
  exec bash "$ROOT/jobs/run_lohelp.sh" "$D" --set train.log_interval=1) > "$TMP/bashD.out" 2>&1 &
pd=$!
wait_update "$D" 10 60 && kill -USR1 "$pd"
for ((i = 0; i < 120; i++)); do kill -0 "$pd" 2> /dev/null || break; sleep 0.5; done
kill -9 "$pd" 2> /dev/null
wait "$pd"
rc=$?
stopped=$(state_update "$D")
check "bash run_lohelp.sh (NPROC=$NT, mpirun) stops on SIGUSR1: exit $rc, checkpoint at update ${stopped:-?}" \
  bash -c "[[ $rc -eq 0 && -n '$stopped' && '${stopped:-100}' -lt 100 ]] && grep -q 'run the same command again to resume' '$TMP/bashD.out'"
[[ $rc -eq 0 ]] || show_tail "$TMP/bashD.out" 10
NPROC=$NT MPIRUN_ARGS="--allow-run-as-root --oversubscribe" EVALUATE=0 \
  timeout 120 bash "$ROOT/jobs/run_lohelp.sh" "$D" --set train.log_interval=1 --set train.max_update=$((stopped + 5)) \
  > "$TMP/bashD2.out" 2>&1
check "running it again resumes from update $stopped and trains on" \
  bash -c "grep -q '^resumed from .* at update $stopped ' '$TMP/bashD2.out' && [[ \$(sed -n 's/^update: //p' '$D/checkpoint_last/trainer_state.yaml') == $((stopped + 5)) ]]"
finish
