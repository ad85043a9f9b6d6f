#!/usr/bin/env bash
# The run_m4.sh / run_m15.sh workflow on the LibreOffice help corpus, which any
# Debian machine can fetch (no NLLB data needed), on CPU or GPU:
# fetch -> SentencePiece -> binarise -> train -> translate every test direction -> BLEU.
#
#   sbatch jobs/run_lohelp.sh SAVE_PATH [MOE_TYPE TOTAL_EXPERT_NUM STRATA EXPERTS_PER_STRATUM] [--set key=value ...]
#   bash   jobs/run_lohelp.sh ...
#   e.g.   CORPUS=lo4 sbatch jobs/run_lohelp.sh ckpt/lo4-dense                 dense (the default)
#          CORPUS=lo15 sbatch --gpus-per-node=1 jobs/run_lohelp.sh ckpt/lo15-smoe base 16 2 4,12
#
# Arguments as jobs/run_m4.sh (defaults: base 0 0, a dense model). Environment:
#   CORPUS     lo4 (en <-> de fr it nl, 8 directions) or lo15 (en <-> 15 languages in
#              three resource tiers, 30 directions; docs/reproduce.md). Default lo4.
#   TEXT_DIR   use the <split>.en-xx.tsv files there instead of fetching (e.g. the test
#              fixture test/fixtures/lohelp); the languages are those of its train files
#   DATA_DIR   corpus, SentencePiece model and binarised data (default data/lohelp-CORPUS,
#              with TEXT_DIR SAVE_PATH/data; prepared once and shared by the jobs that name
#              it, on a filesystem every node sees; delete it to rebuild with other settings)
#   CONFIG     training config (default jobs/configs/lohelp_CORPUS.yaml; CPU-sized:
#              jobs/configs/lohelp_small.yaml; tests: jobs/configs/lohelp_tiny.yaml)
#   VOCAB      SentencePiece size (default 8000 for lo4, 16000 for lo15)
#   VERYLOW_PAIRS  training pairs kept for lo15's very-low tier (default 2000)
#   EVALUATE   1 (default): evaluate after training (jobs/evaluate.sh; NTEST, BEAM, EVAL_JOBS)
#   LAUNCHER, SRUN_MPI, SRUN_ARGS, MPIRUN_ARGS, NPROC, BUILD: as jobs/run_m4.sh (docs/cluster.md)
#
# One node by default; add --gpus-per-node=N --ntasks-per-node=N for N GPUs.
#SBATCH --job-name=strata-lohelp
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --time=1-00:00:00
#SBATCH --signal=B:USR1@180
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail
SCRIPT=run_lohelp.sh
for ROOT in "${STRATA_ROOT:-}" "$(dirname "$0")/.." \
    "$( [[ -n ${SLURM_JOB_ID:-} ]] && scontrol show job "$SLURM_JOB_ID" 2> /dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | xargs -r dirname | xargs -r dirname)" \
    "${SLURM_SUBMIT_DIR:-}" .; do
  [[ -n $ROOT && -f $ROOT/jobs/lib/common.sh ]] && break
done
[[ -f $ROOT/jobs/lib/common.sh ]] || { echo "$SCRIPT: error: cannot find the Strata checkout; set STRATA_ROOT" >&2; exit 1; }
ROOT=$(cd "$ROOT" && pwd)
source "$ROOT/jobs/lib/common.sh"
source "$ROOT/jobs/lib/datasets.sh"
install_signal_traps

USAGE_ENV="Environment: CORPUS=lo4|lo15, TEXT_DIR, DATA_DIR, CONFIG, VOCAB, EVALUATE (see the head of jobs/run_lohelp.sh)"
parse_moe_args base 0 0 "$@"
CORPUS=${CORPUS:-lo4}
case $CORPUS in lo4|lo15) ;; *) usage_error "CORPUS must be lo4 or lo15, got '$CORPUS'" ;; esac
dataset_define "$CORPUS"
DATASET=$CORPUS
if [[ -n ${TEXT_DIR:-} ]]; then
  TEXT_DIR=$(abs_path "$TEXT_DIR")
  XX=$(find "$TEXT_DIR" -maxdepth 1 -name "train.$EN-*.tsv" -printf '%f\n' 2> /dev/null \
       | sed "s/^train\.$EN-\(.*\)\.tsv$/\1/" | sort | paste -sd,)
  [[ -n $XX ]] || die "no train.$EN-xx.tsv files in $TEXT_DIR"
  LANGS=$EN,$XX
fi
dataset_pairs
# with TEXT_DIR the prepared data belongs to this run: never mix it with a fetched corpus
DATA_DIR=$(abs_path "${DATA_DIR:-$([[ -n ${TEXT_DIR:-} ]] && echo "$SAVE_PATH/data" || echo "$ROOT/data/lohelp-$CORPUS")}")
CONFIG=$(abs_path "${CONFIG:-$ROOT/jobs/configs/lohelp_$CORPUS.yaml}")
[[ -f $CONFIG ]] || die "config $CONFIG not found"
VOCAB=${VOCAB:-$([[ $CORPUS == lo15 ]] && echo 16000 || echo 8000)}
VERYLOW_PAIRS=${VERYLOW_PAIRS:-2000}
find_build
SAVE_PATH=$(abs_path "$SAVE_PATH")
mkdir -p "$SAVE_PATH" "$DATA_DIR"
set_threads

# ---- data, once per DATA_DIR (a lock keeps concurrent jobs from preparing it twice;
# markers make a requeued job skip what is done)
prepare_data() {
  local text=$DATA_DIR/text
  if [[ -n ${TEXT_DIR:-} ]]; then
    text=$TEXT_DIR
  elif [[ ! -f $text/.complete ]]; then
    log "1/3 fetching the LibreOffice help corpus: en <-> $XX"
    local fetch=$text
    [[ $CORPUS != lo15 ]] || fetch=$DATA_DIR/text-full
    "$ROOT/data_tools/fetch_lohelp" --langs "$XX" --out "$fetch" --cache "$DATA_DIR/debs"
    if [[ $CORPUS == lo15 ]]; then
      log "1/3 very-low tier: $VERYLOW_PAIRS training pairs each for $(group_members very-low)"
      python3 "$ROOT/jobs/lib/subsample_tsv.py" --in "$fetch" --out "$text" --pairs "$VERYLOW_PAIRS" \
        --langs "$(group_members very-low)"
    fi
    touch "$text/.complete"
  else
    log "1/3 corpus: reusing $text"
  fi
  CORPUS_TEXT=$text
  local bin=$DATA_DIR/bin spm_args=()
  mkdir -p "$bin"
  # CJK and Khmer in lo15: full character coverage would spend the vocabulary on rare characters
  [[ $CORPUS != lo15 || -n ${TEXT_DIR:-} ]] || spm_args=(--character-coverage 0.9995)
  if [[ ! -f $bin/.spm-complete ]]; then
    log "2/3 SentencePiece model ($VOCAB pieces, joint, with language tokens)"
    "$BUILD/train-spm" --tsv-dir "$text" --model-prefix "$bin/spm" --vocab-size "$VOCAB" --soft-vocab-limit \
      "${spm_args[@]}" > "$bin/spm.log" 2>&1 || { tail -n 5 "$bin/spm.log" >&2; die "train-spm failed"; }
    touch "$bin/.spm-complete"
  fi
  if [[ ! -f $bin/.complete ]]; then
    log "3/3 binarising"
    "$BUILD/strata-preprocess" --spm "$bin/spm.model" --out "$bin" --tsv-dir "$text" > "$bin/preprocess.log" 2>&1 \
      || { tail -n 5 "$bin/preprocess.log" >&2; die "strata-preprocess failed"; }
    touch "$bin/.complete"
  else
    log "2-3/3 SentencePiece model and binarised data: reusing $bin"
  fi
}
group_members() {
  local g
  for g in ${LANG_GROUPS//;/ }; do [[ ${g%%:*} != "$1" ]] || { printf '%s\n' "${g#*:}"; return; }; done
}

exec 9> "$DATA_DIR/.lock"
flock 9
prepare_data
flock -u 9

TEST_DIR=$CORPUS_TEXT
SPM_MODEL=$DATA_DIR/bin/spm.model
TEST_LAYOUT=tsv
write_run_env "$SAVE_PATH/run.env" DATASET EN XX LANG_GROUPS TEST_LAYOUT TEST_DIR SPM_MODEL
log "$CORPUS: ${LANG_PAIRS//,/ }; MOE_TYPE $MOE_TYPE, $EXPERTS experts, strata ${SPLIT:-none}; checkpoints $SAVE_PATH"

rc=0
if [[ -z $STOP_SIGNAL ]]; then
  run_training "$CONFIG" \
    --set data.data_dir="$DATA_DIR/bin" --set data.format=strata --set data.langs="$LANGS" \
    --set data.lang_pairs="$LANG_PAIRS" --set data.valid_subset=dev --set train.save_dir="$SAVE_PATH" \
    "${MOE_SET[@]}" "${EXTRA_ARGS[@]}" || rc=$?
fi
[[ $rc -eq 0 ]] || die "strata-train failed (exit $rc); see the lines above. Resubmitting resumes from $SAVE_PATH/checkpoint_last"
if requeue_if_signalled; then exit 0; fi
if [[ -n $STOP_SIGNAL ]]; then
  log "stopped by SIG$STOP_SIGNAL with a checkpoint in $SAVE_PATH/checkpoint_last; resubmit the same command to resume"
  exit 0
fi
log "training finished: $SAVE_PATH"
if [[ ${EVALUATE:-1} == 1 ]]; then
  bash "$ROOT/jobs/evaluate.sh" "$SAVE_PATH"
else
  log "evaluate with: bash jobs/evaluate.sh $SAVE_PATH"
fi
