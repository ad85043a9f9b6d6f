#!/usr/bin/env bash
# Translates the test set of every direction with a trained model and scores it:
# the evaluation of the SMoE reference's run_m{4,15}.sh (the block after `exit`
# there), as a job of its own.
#
#   sbatch jobs/evaluate.sh SAVE_PATH        (or: bash jobs/evaluate.sh SAVE_PATH)
#
# SAVE_PATH is the directory a jobs/run_*.sh job trained into; its run.env says
# which benchmark, test files and SentencePiece model belong to it.
# Per direction: strata-translate with beam 5, length penalty 1 and MoE capacity
# 1.0 (no token dropped), from checkpoint_best (else checkpoint_last), then
#   BLEU       BLEU on the benchmark's SentencePiece pieces with the target-language
#              token in front, no smoothing: the reference scores fairseq's BLEU on
#              the model's ids, forced language token included (see paper_bleu)
#   sacreBLEU  sacreBLEU's default BLEU (13a tokenisation) on detokenised text
#   chrF2      sacreBLEU's chrF
# Results in SAVE_PATH/results: <src>-<tgt>.{src,ref,hyp,bleu,log}, bleu.tsv (one row
# per direction), summary.txt / summary.tsv (the paper's averages: all, and for M15
# high / low / very-low, per side).
# Environment: CHECKPOINT (a checkpoint directory), BEAM (5), NTEST (first N test
# sentences per direction; 0 = all), EVAL_JOBS (directions translated at once; default
# one per visible GPU, else 1), RESULTS (default SAVE_PATH/results), BUILD.
#SBATCH --job-name=strata-eval
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --mem=128G
#SBATCH --time=0-06:00:00
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail
SCRIPT=evaluate.sh
for ROOT in "${STRATA_ROOT:-}" "$(dirname "$0")/.." \
    "$( [[ -n ${SLURM_JOB_ID:-} ]] && scontrol show job "$SLURM_JOB_ID" 2> /dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | xargs -r dirname | xargs -r dirname)" \
    "${SLURM_SUBMIT_DIR:-}" .; do
  [[ -n $ROOT && -f $ROOT/jobs/lib/common.sh ]] && break
done
[[ -f $ROOT/jobs/lib/common.sh ]] || { echo "$SCRIPT: error: cannot find the Strata checkout; set STRATA_ROOT" >&2; exit 1; }
ROOT=$(cd "$ROOT" && pwd)
source "$ROOT/jobs/lib/common.sh"
source "$ROOT/jobs/lib/datasets.sh"

[[ $# -eq 1 && $1 != -* ]] || { echo "usage: sbatch|bash jobs/evaluate.sh SAVE_PATH" >&2; exit 2; }
SAVE_PATH=$(abs_path "$1")
[[ -f $SAVE_PATH/run.env ]] || die "$SAVE_PATH/run.env not found: SAVE_PATH must be a directory a jobs/run_*.sh job trained into"
# shellcheck source=/dev/null
source "$SAVE_PATH/run.env"
find_build
if [[ -z ${CHECKPOINT:-} ]]; then
  if [[ -f $SAVE_PATH/checkpoint_best/DONE ]]; then CHECKPOINT=$SAVE_PATH/checkpoint_best
  elif [[ -f $SAVE_PATH/checkpoint_last/DONE ]]; then CHECKPOINT=$SAVE_PATH/checkpoint_last
  else die "no complete checkpoint in $SAVE_PATH (checkpoint_best or checkpoint_last with DONE)"
  fi
fi
[[ -f $CHECKPOINT/DONE ]] || die "$CHECKPOINT is not a complete checkpoint (no DONE)"
BEAM=${BEAM:-5}
NTEST=${NTEST:-0}
RESULTS=$(abs_path "${RESULTS:-$SAVE_PATH/results}")
[[ -f $SPM_MODEL ]] || die "SentencePiece model $SPM_MODEL (from run.env) not found"
mkdir -p "$RESULTS"
set_threads

# Directions in the reference's order: xx->EN for every xx, then EN->xx.
DIRS=()
for x in ${XX//,/ }; do DIRS+=("$x-$EN"); done
for x in ${XX//,/ }; do DIRS+=("$EN-$x"); done

# prepare_direction SRC TGT: the test sources and references of one direction.
prepare_direction() {
  local src=$1 tgt=$2 xx out=$RESULTS/$1-$2 take=(cat)
  xx=$([[ $src == "$EN" ]] && echo "$tgt" || echo "$src")
  [[ $NTEST -eq 0 ]] || take=(head -n "$NTEST")
  case $TEST_LAYOUT in
    retrieved)  # m15.zip: retrieved_data/test.eng-xx.eng and test.eng-xx.xx for both directions
      local f=$TEST_DIR/test.$EN-$xx
      [[ -f $f.$src && -f $f.$tgt ]] || { echo "missing $f.$src or $f.$tgt"; return 1; }
      "${take[@]}" "$f.$src" > "$out.src"
      "${take[@]}" "$f.$tgt" > "$out.ref" ;;
    tsv)  # test.en-xx.tsv: English<TAB>xx
      local f=$TEST_DIR/test.$EN-$xx.tsv cs=1 ct=2
      [[ -f $f ]] || { echo "missing $f"; return 1; }
      [[ $src == "$EN" ]] || { cs=2; ct=1; }
      "${take[@]}" "$f" | cut -f"$cs" > "$out.src"
      "${take[@]}" "$f" | cut -f"$ct" > "$out.ref" ;;
    *) echo "unknown TEST_LAYOUT '$TEST_LAYOUT' in run.env"; return 1 ;;
  esac
  [[ $(wc -l < "$out.src") -eq $(wc -l < "$out.ref") ]] || { echo "$out.src and $out.ref differ in length"; return 1; }
}

# evaluate_direction SRC TGT: translate, score, write <pair>.bleu; a failure leaves <pair>.failed.
evaluate_direction() {
  local src=$1 tgt=$2 out=$RESULTS/$1-$2
  rm -f "$out.failed" "$out.bleu"
  {
    prepare_direction "$src" "$tgt" \
    && "$BUILD/strata-translate" "$CHECKPOINT" -t "$tgt" -i "$out.src" -o "$out.hyp" --beam "$BEAM" --lenpen 1 \
         --set decode.generation_capacity_token_fraction=1.0 \
    && [[ $(wc -l < "$out.hyp") -eq $(wc -l < "$out.src") ]] \
    && paper_bleu "$tgt" "$out" > "$out.bleu.tmp" \
    && "$BUILD/strata-bleu" "$out.ref" -i "$out.hyp" -m bleu chrf -w 2 >> "$out.bleu.tmp" \
    && mv "$out.bleu.tmp" "$out.bleu"
  } > "$out.log" 2>&1 || { tail -n 1 "$out.log" > "$out.failed"; return 1; }
}

# paper_bleu TGT OUT: the paper's BLEU. The reference scores fairseq's BLEU-4 (no
# smoothing) on the model's SentencePiece ids, the forced __tgt__ token included
# (smoe_spec.md section 3). Here: hypothesis and reference re-encoded into pieces with
# the benchmark's model, __tgt__ in front, BLEU on those tokens. Without Debian's
# spm_encode: strata-bleu's own SentencePiece tokenisation, without the language token.
paper_bleu() {
  local tgt=$1 out=$2 f
  if [[ $PAPER_BLEU == pieces ]]; then
    for f in ref hyp; do
      spm_encode --model="$SPM_MODEL" --output_format=piece < "$out.$f" | sed "s/^/__${tgt}__ /" > "$out.$f.pieces" \
        || return 1
    done
    "$BUILD/strata-bleu" "$out.ref.pieces" -i "$out.hyp.pieces" --tokenize none -s none -w 2
  else
    "$BUILD/strata-bleu" "$out.ref" -i "$out.hyp" --tokenize spm --spm-model "$SPM_MODEL" -s none -w 2
  fi
}
PAPER_BLEU=$(command -v spm_encode > /dev/null && echo pieces || echo spm-tokenizer)

score_of() {  # FILE LINE: the number after " = " on that line of a strata-bleu output
  sed -n "${2}p" "$1" | sed 's/^[^=]*= \([0-9.]*\).*/\1/'
}

# worker W N GPU: directions W, W+N, ... on one GPU (or the CPU)
worker() {
  local w=$1 n=$2 gpu=$3 i
  [[ -z $gpu ]] || export CUDA_VISIBLE_DEVICES=$gpu
  for ((i = w; i < ${#DIRS[@]}; i += n)); do
    evaluate_direction "${DIRS[$i]%-*}" "${DIRS[$i]#*-}" || true
    log "${DIRS[$i]}: $(if [[ -f $RESULTS/${DIRS[$i]}.bleu ]]; then echo "BLEU $(score_of "$RESULTS/${DIRS[$i]}.bleu" 1)"; else echo "FAILED: $(cat "$RESULTS/${DIRS[$i]}.failed")"; fi)"
  done
}

GPUS=()
if [[ $(count_gpus) -gt 0 ]]; then
  if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then IFS=, read -r -a GPUS <<< "$CUDA_VISIBLE_DEVICES"
  else mapfile -t GPUS < <(nvidia-smi --query-gpu=index --format=csv,noheader); fi
fi
EVAL_JOBS=${EVAL_JOBS:-$(( ${#GPUS[@]} > 0 ? ${#GPUS[@]} : 1 ))}
[[ $EVAL_JOBS -ge 1 ]] || die "EVAL_JOBS must be at least 1"
if [[ ${#GPUS[@]} -eq 0 && $EVAL_JOBS -gt 1 && -z ${OMP_NUM_THREADS:-} ]]; then
  export OMP_NUM_THREADS=$(( $(nproc) / EVAL_JOBS > 0 ? $(nproc) / EVAL_JOBS : 1 ))
fi
log "$DATASET: ${#DIRS[@]} directions from $CHECKPOINT, beam $BEAM, $EVAL_JOBS at a time -> $RESULTS"
pids=()
for ((w = 0; w < EVAL_JOBS; w++)); do
  gpu=""
  [[ ${#GPUS[@]} -eq 0 ]] || gpu=${GPUS[$((w % ${#GPUS[@]}))]}
  worker "$w" "$EVAL_JOBS" "$gpu" &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done

# One row per direction, in order; the summary over the groups of run.env.
failed=()
{
  printf 'direction\tsrc\ttgt\tgroup\tbleu\tsacrebleu\tchrf\tsentences\n'
  for d in "${DIRS[@]}"; do
    [[ -f $RESULTS/$d.bleu ]] || { failed+=("$d"); continue; }
    src=${d%-*}; tgt=${d#*-}
    x=$([[ $src == "$EN" ]] && echo "$tgt" || echo "$src")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$d" "$src" "$tgt" "$(group_of "$x")" \
      "$(score_of "$RESULTS/$d.bleu" 1)" "$(score_of "$RESULTS/$d.bleu" 2)" "$(score_of "$RESULTS/$d.bleu" 3)" \
      "$(wc -l < "$RESULTS/$d.src")"
  done
} > "$RESULTS/bleu.tsv"
{
  echo "$DATASET, $CHECKPOINT, beam $BEAM, capacity 1.0$([[ $NTEST -eq 0 ]] || echo ", first $NTEST test sentences")"
  if [[ $PAPER_BLEU == pieces ]]; then
    echo "BLEU: on the SentencePiece pieces of $(basename "$SPM_MODEL") with the __tgt__ token, no smoothing (the paper's metric)"
  else
    echo "BLEU: on the SentencePiece pieces of $(basename "$SPM_MODEL"), no smoothing (no spm_encode: without the __tgt__ token)"
  fi
  echo "sacreBLEU: 13a tokenisation of the text; chrF2: sacreBLEU's chrF"
  echo
  python3 "$ROOT/jobs/lib/summarize.py" "$RESULTS/bleu.tsv" --en "$EN" --xx "$XX" --groups "$LANG_GROUPS" \
    --tsv "$RESULTS/summary.tsv" || true
} > "$RESULTS/summary.txt"
cat "$RESULTS/summary.txt"
if [[ ${#failed[@]} -gt 0 ]]; then
  for d in "${failed[@]}"; do echo "$SCRIPT: $d failed: $(cat "$RESULTS/$d.failed" 2> /dev/null)" >&2; done
  die "${#failed[@]} of ${#DIRS[@]} directions failed (logs: $RESULTS/<direction>.log)"
fi
log "results: $RESULTS/summary.txt, $RESULTS/bleu.tsv"
