# Shell helpers shared by the job files (jobs/run_*.sh, jobs/evaluate.sh).
# Sourced, never run. Expects ROOT (the checkout) to be set by the caller and
# SCRIPT (the caller's name, for messages).
#
#   die MSG                   one-line error on stderr, exit 1
#   usage_error MSG           one-line error on stderr, exit 2 (bad arguments)
#   log MSG                   a timestamped progress line on stdout
#   parse_moe_args ...        the reference's SAVE_PATH MOE_TYPE TOTAL_EXPERT_NUM STRATA
#                             EXPERTS_PER_STRATUM arguments -> SAVE_PATH, MOE_SET, EXTRA_ARGS
#   find_build                BUILD = the directory holding strata-train
#   install_signal_traps      USR1/TERM handling for preemption (see run_training)
#   run_training CONFIG ARGS  launches strata-train on every task, forwards stop signals
#   requeue_if_signalled      after a SIGUSR1: scontrol requeue (resume in the next run)
#   write_run_env FILE VARS   records variables for jobs/evaluate.sh

log() { printf '[%s] %s: %s\n' "$(date +%H:%M:%S)" "${SCRIPT:-strata}" "$*"; }
die() { printf '%s: error: %s\n' "${SCRIPT:-strata}" "$*" >&2; exit 1; }
usage_error() { printf '%s: error: %s\n' "${SCRIPT:-strata}" "$*" >&2; exit 2; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

abs_path() {  # absolute form of a path that need not exist yet
  case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "${1#./}" ;;
  esac
}

# ---------------------------------------------------------------------------
# Arguments: the reference's runs/run_m4.sh interface.
#   parse_moe_args DEFAULT_TYPE DEFAULT_EXPERTS DEFAULT_STRATA "$@"
# Positionals: SAVE_PATH [MOE_TYPE [TOTAL_EXPERT_NUM [STRATA [EXPERTS_PER_STRATUM]]]],
# then any number of `--set key=value` passed on to strata-train.
#   TOTAL_EXPERT_NUM 0          dense model (MOE_TYPE base, STRATA 0)
#   STRATA 0                    plain MoE layer, the reference's --hmoe-layer 0
#                               (no per-stratum LayerNorms; how its CMR runs are made)
#   STRATA L >= 1               SMoE with L strata; EXPERTS_PER_STRATUM defaults to
#                               TOTAL_EXPERT_NUM / L each, as the reference
# Errors are the reference's assertions, stated: the strata must sum to the total and
# number STRATA; cmr works only with one stratum. Nothing is created before they pass.
# Sets SAVE_PATH (absolute), MOE_TYPE, EXPERTS, NSTRATA, SPLIT, MOE_SET (array of
# --set arguments) and EXTRA_ARGS (the trailing --set arguments).
parse_moe_args() {
  local def_type=$1 def_experts=$2 def_strata=$3
  shift 3
  MOE_DEFAULTS=("$def_type" "$def_experts" "$def_strata")
  local pos=()
  EXTRA_ARGS=()
  while [[ $# -gt 0 ]]; do
    case $1 in
      -h|--help) moe_usage; exit 0 ;;
      --set) [[ $# -ge 2 ]] || usage_error "--set needs key=value"
             EXTRA_ARGS+=(--set "$2"); shift 2 ;;
      --set=*) EXTRA_ARGS+=(--set "${1#--set=}"); shift ;;
      -*) usage_error "unknown option '$1' (only --set key=value may follow the positional arguments)" ;;
      *) [[ ${#EXTRA_ARGS[@]} -eq 0 ]] || usage_error "positional argument '$1' after --set"
         pos+=("$1"); shift ;;
    esac
  done
  [[ ${#pos[@]} -ge 1 ]] || { moe_usage >&2; exit 2; }
  [[ ${#pos[@]} -le 5 ]] || usage_error "too many arguments: ${pos[*]:5} (expected at most 5, then --set key=value)"
  SAVE_PATH=${pos[0]}
  MOE_TYPE=${pos[1]:-$def_type}
  EXPERTS=${pos[2]:-$def_experts}
  NSTRATA=${pos[3]:-$def_strata}
  SPLIT=${pos[4]:-}
  [[ -n $SAVE_PATH ]] || usage_error "SAVE_PATH is empty"
  case $MOE_TYPE in
    base|eom|cmr) ;;
    *) usage_error "MOE_TYPE must be base, eom or cmr, got '$MOE_TYPE'" ;;
  esac
  is_uint "$EXPERTS" || usage_error "TOTAL_EXPERT_NUM must be a whole number, got '$EXPERTS'"
  is_uint "$NSTRATA" || usage_error "STRATA must be a whole number, got '$NSTRATA'"
  EXPERTS=$((10#$EXPERTS)); NSTRATA=$((10#$NSTRATA))
  if [[ -n $SPLIT ]]; then
    [[ $SPLIT =~ ^[0-9]+(,[0-9]+)*$ ]] \
      || usage_error "EXPERTS_PER_STRATUM must be comma-separated whole numbers like 4,4,8, got '$SPLIT'"
  fi
  MOE_SET=()
  if [[ $EXPERTS -eq 0 ]]; then
    [[ $MOE_TYPE == base ]] || usage_error "MOE_TYPE $MOE_TYPE needs experts, but TOTAL_EXPERT_NUM is 0 (a dense model)"
    [[ $NSTRATA -eq 0 && -z $SPLIT ]] \
      || usage_error "TOTAL_EXPERT_NUM 0 is a dense model: use STRATA 0 and no EXPERTS_PER_STRATUM"
    MOE_SET=(--set moe.experts=0)
    return 0
  fi
  local sizes=() n sum=0
  if [[ $NSTRATA -eq 0 ]]; then
    # the reference's --hmoe-layer 0: one plain MoE layer, the split is ignored there;
    # here it may only restate the total
    [[ -z $SPLIT || $SPLIT == "$EXPERTS" ]] \
      || usage_error "STRATA 0 is a plain MoE layer of all TOTAL_EXPERT_NUM=$EXPERTS experts; EXPERTS_PER_STRATUM '$SPLIT' does not apply"
    SPLIT=$EXPERTS
    MOE_SET=(--set moe.moe_type="$MOE_TYPE" --set moe.experts="$EXPERTS" --set moe.strata="$EXPERTS"
             --set moe.hmoe_layernorm=false)
    return 0
  fi
  if [[ -z $SPLIT ]]; then
    [[ $((EXPERTS % NSTRATA)) -eq 0 ]] \
      || usage_error "TOTAL_EXPERT_NUM $EXPERTS does not split into $NSTRATA equal strata; give EXPERTS_PER_STRATUM, e.g. $(suggest_split "$EXPERTS" "$NSTRATA")"
    SPLIT=$(printf "$((EXPERTS / NSTRATA)),%.0s" $(seq "$NSTRATA")); SPLIT=${SPLIT%,}
  fi
  IFS=, read -r -a sizes <<< "$SPLIT"
  for n in "${sizes[@]}"; do
    [[ $((10#$n)) -gt 0 ]] || usage_error "EXPERTS_PER_STRATUM $SPLIT has an empty stratum (every stratum needs at least 1 expert)"
    sum=$((sum + 10#$n))
  done
  [[ $sum -eq $EXPERTS ]] \
    || usage_error "EXPERTS_PER_STRATUM $SPLIT sums to $sum, but TOTAL_EXPERT_NUM is $EXPERTS (the strata must add up to the total)"
  [[ ${#sizes[@]} -eq $NSTRATA ]] \
    || usage_error "EXPERTS_PER_STRATUM $SPLIT lists ${#sizes[@]} strata, but STRATA is $NSTRATA"
  if [[ $MOE_TYPE == cmr && $NSTRATA -gt 1 ]]; then
    usage_error "MOE_TYPE cmr cannot be combined with more than one stratum (STRATA $NSTRATA, EXPERTS_PER_STRATUM $SPLIT): CMR exists only for plain MoE layers; use STRATA 0 (the reference's CMR runs) or 1"
  fi
  MOE_SET=(--set moe.moe_type="$MOE_TYPE" --set moe.experts="$EXPERTS" --set moe.strata="$SPLIT")
}

suggest_split() {  # E L -> a split of E into L positive parts (the last takes the rest)
  local e=$1 l=$2 i out="" part
  part=$((e / l)); [[ $part -gt 0 ]] || part=1
  for ((i = 1; i < l; i++)); do out+="$part,"; done
  printf '%s%s\n' "$out" $((e - part * (l - 1)))
}

moe_usage() {
  cat <<EOF
usage: sbatch [SBATCH OPTIONS] jobs/$SCRIPT SAVE_PATH [MOE_TYPE [TOTAL_EXPERT_NUM [STRATA [EXPERTS_PER_STRATUM]]]] [--set key=value ...]
       bash jobs/$SCRIPT ...   (the same, without Slurm)
  SAVE_PATH            checkpoints, logs and results (resumes when it holds a checkpoint)
  MOE_TYPE             base | eom | cmr                      (default ${MOE_DEFAULTS[0]})
  TOTAL_EXPERT_NUM     experts per MoE block; 0 = dense      (default ${MOE_DEFAULTS[1]})
  STRATA               number of SMoE strata; 0 = plain MoE  (default ${MOE_DEFAULTS[2]})
  EXPERTS_PER_STRATUM  e.g. 4,4,8; must sum to TOTAL_EXPERT_NUM (default: equal strata)
  --set key=value      any strata-train option (docs/config.md)
Example: sbatch jobs/$SCRIPT tmp base 8 4 2,2,2,2
EOF
  [[ -z ${USAGE_ENV:-} ]] || printf '%s\n' "$USAGE_ENV"
}

# ---------------------------------------------------------------------------
# Programs.
find_build() {
  BUILD=${BUILD:-$ROOT/build}
  [[ -x $BUILD/strata-train ]] || die "no strata-train in $BUILD: build Strata first (make -j, see README.md) or set BUILD=DIR"
  BUILD=$(cd "$BUILD" && pwd)
}

# Threads per training process: Slurm's --cpus-per-task unless OMP_NUM_THREADS is set.
set_threads() {
  if [[ -z ${OMP_NUM_THREADS:-} && -n ${SLURM_CPUS_PER_TASK:-} ]]; then
    export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK
  fi
  # idle OpenMP threads sleep rather than spin: ranks and cores are often shared
  export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
}

# ---------------------------------------------------------------------------
# Launching. LAUNCHER=auto|srun|mpirun|none (default auto):
#   auto  inside a Slurm job with more than one task: srun; outside Slurm with
#         NPROC > 1: mpirun -np NPROC; otherwise one process without a launcher.
# SRUN_ARGS / MPIRUN_ARGS add options (e.g. SRUN_MPI=pmix, MPIRUN_ARGS="--allow-run-as-root").
# Every process starts through jobs/lib/rank_exec.sh (one GPU per process, MPI check).
launch_prefix() {  # fills the array LAUNCH
  local mode=${LAUNCHER:-auto} ntasks=${SLURM_NTASKS:-}
  if [[ $mode == auto ]]; then
    if [[ -n ${SLURM_JOB_ID:-} && ${ntasks:-1} -gt 1 ]]; then mode=srun
    elif [[ ${NPROC:-1} -gt 1 ]]; then mode=mpirun
    else mode=none
    fi
  fi
  LAUNCH_MODE=$mode
  case $mode in
    srun)
      [[ -n ${SLURM_JOB_ID:-} ]] || die "LAUNCHER=srun needs a Slurm allocation (sbatch or salloc)"
      command -v srun > /dev/null || die "srun not found"
      # --kill-on-bad-exit: one failed rank ends the step at once instead of leaving
      # the others waiting in a collective until the timeout
      LAUNCH=(srun --kill-on-bad-exit=1 --ntasks="${ntasks:-1}")
      [[ -z ${SRUN_MPI:-} ]] || LAUNCH+=(--mpi="$SRUN_MPI")
      # shellcheck disable=SC2206  # word splitting of user-given options is intended
      [[ -z ${SRUN_ARGS:-} ]] || LAUNCH+=($SRUN_ARGS)
      NRANKS=${ntasks:-1}
      ;;
    mpirun)
      command -v mpirun > /dev/null || die "mpirun not found (install Open MPI or use LAUNCHER=srun)"
      NRANKS=${NPROC:-${ntasks:-1}}
      LAUNCH=(mpirun -np "$NRANKS")
      # Open MPI passes only OMPI_* variables by default
      local v
      for v in OMP_NUM_THREADS OMP_WAIT_POLICY STRATA_COLLECTIVE_TIMEOUT STRATA_NCCL_TIMEOUT_S NCCL_DEBUG NCCL_SOCKET_IFNAME NCCL_IB_HCA; do
        [[ -z ${!v:-} ]] || LAUNCH+=(-x "$v")
      done
      # shellcheck disable=SC2206
      [[ -z ${MPIRUN_ARGS:-} ]] || LAUNCH+=($MPIRUN_ARGS)
      ;;
    none) LAUNCH=(); NRANKS=1 ;;
    *) die "LAUNCHER must be auto, srun, mpirun or none, got '$mode'" ;;
  esac
  LAUNCH+=(env STRATA_LAUNCHER="$mode" bash "$ROOT/jobs/lib/rank_exec.sh")
}

# ---------------------------------------------------------------------------
# Preemption. Slurm sends the batch shell SIGUSR1 180 s before the time limit
# (#SBATCH --signal=B:USR1@180), and scancel --signal=USR1 --batch does the same
# by hand. The shell forwards it to the trainer, which checkpoints at the next
# update boundary and exits 0; then the job requeues itself and, restarted with
# the same SAVE_PATH, resumes from checkpoint_last. SIGTERM (scancel, preemption
# with PreemptMode=REQUEUE, the time limit itself) is forwarded the same way but
# does not requeue: Slurm ends or requeues the job itself then.
STOP_SIGNAL=""
TRAIN_PID=""
on_stop_signal() {
  STOP_SIGNAL=${STOP_SIGNAL:-$1}
  if [[ -n $TRAIN_PID ]] && kill -0 "$TRAIN_PID" 2> /dev/null; then
    log "caught SIG$1: asking the trainer to checkpoint and stop"
    # USR1 for both: srun and mpirun forward it to every rank (mpirun turns a
    # TERM into a kill of the ranks), and the trainer treats it as TERM
    kill -s USR1 "$TRAIN_PID" 2> /dev/null || true
  else
    log "caught SIG$1"
  fi
}
install_signal_traps() {
  trap 'on_stop_signal USR1' USR1
  trap 'on_stop_signal TERM' TERM
}

# requeue_if_signalled: after a USR1 the job puts itself back in the queue (at most
# MAX_REQUEUE times, default 100); outside Slurm it only says how to resume.
requeue_if_signalled() {
  [[ $STOP_SIGNAL == USR1 ]] || return 1
  if [[ -n ${SLURM_JOB_ID:-} ]]; then
    local restarts=${SLURM_RESTART_COUNT:-0}
    if [[ $restarts -ge ${MAX_REQUEUE:-100} ]]; then
      log "stopped; not requeued: restarted $restarts times already (MAX_REQUEUE)"
      return 0
    fi
    log "requeueing job $SLURM_JOB_ID (restart $((restarts + 1))); it resumes from $SAVE_PATH/checkpoint_last"
    scontrol requeue "$SLURM_JOB_ID" || die "scontrol requeue $SLURM_JOB_ID failed; resubmit the same command to resume"
  else
    log "stopped by SIGUSR1; run the same command again to resume from $SAVE_PATH/checkpoint_last"
  fi
  return 0
}

# run_training CONFIG [strata-train arguments...]
# Returns the trainer's exit status; STOP_SIGNAL names the signal that stopped it, if any.
run_training() {
  local config=$1 rc
  shift
  launch_prefix
  log "training on $NRANKS process(es) ($LAUNCH_MODE): strata-train $(basename "$config") $*"
  "${LAUNCH[@]}" "$BUILD/strata-train" "$config" "$@" &
  TRAIN_PID=$!
  # A signal handled by a trap interrupts `wait` (status > 128) while the trainer
  # runs on to its checkpoint: wait again until it has really ended.
  while :; do
    rc=0; wait "$TRAIN_PID" || rc=$?
    if [[ $rc -gt 128 ]] && kill -0 "$TRAIN_PID" 2> /dev/null; then continue; fi
    break
  done
  if [[ $rc -gt 128 && -n $STOP_SIGNAL ]]; then  # ended between the trap and kill -0
    rc=0; wait "$TRAIN_PID" 2> /dev/null || rc=$?
  fi
  TRAIN_PID=""
  return "$rc"
}

# write_run_env FILE VAR... : VAR=value lines that `source` reads back (values quoted).
write_run_env() {
  local file=$1 v
  shift
  {
    echo "# written by jobs/$SCRIPT on $(date -u +%Y-%m-%dT%H:%M:%SZ); read by jobs/evaluate.sh"
    for v in "$@"; do
      if declare -p "$v" 2> /dev/null | grep -q '^declare -a'; then
        local -n arr=$v
        printf '%s=(' "$v"; printf '%q ' "${arr[@]}"; printf ')\n'
        unset -n arr
      else
        printf '%s=%q\n' "$v" "${!v}"
      fi
    done
  } > "$file.tmp"
  mv "$file.tmp" "$file"
}

# Number of GPUs this node shows (0 without nvidia-smi).
count_gpus() {
  if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
    local ids
    IFS=, read -r -a ids <<< "$CUDA_VISIBLE_DEVICES"
    echo "${#ids[@]}"
  elif command -v nvidia-smi > /dev/null; then
    nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true
  else
    echo 0
  fi
}
