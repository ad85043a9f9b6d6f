# The body of jobs/run_m4.sh and jobs/run_m15.sh: the SMoE reference's
# runs/run_m{4,15}.sh workflow on its m15.zip data (fairseq data-bin).
# Sourced after common.sh and datasets.sh; call reference_job DATASET "$@".

reference_job() {
  DATASET=$1
  shift
  USAGE_ENV="Environment (all optional):
  DATA_DIR    the unzipped m15.zip (data_bin/shard000, vocab_bin, retrieved_data); default data/m15
  CONFIG      training config; default jobs/configs/$DATASET.yaml
  BUILD       directory of strata-train (default build/)
  LAUNCHER    auto | srun | mpirun | none; SRUN_MPI=pmix|pmi2; SRUN_ARGS, MPIRUN_ARGS, NPROC (outside Slurm)
  KEEP_GLOBAL_BATCH=1  on W < 32 processes set update_freq = 32/W (the paper's 32 x 4096 tokens)
  EVALUATE=1  run jobs/evaluate.sh after training in the same job"
  # The reference's defaults: base, 8 experts, 2 strata of 4.
  parse_moe_args base 8 2 "$@"
  dataset_define "$DATASET"
  dataset_pairs

  DATA_DIR=$(abs_path "${DATA_DIR:-$ROOT/data/m15}")
  DATA_BIN=$(abs_path "${DATA_BIN:-$DATA_DIR/data_bin/shard000}")
  SPM_MODEL=$(abs_path "${SPM_MODEL:-$DATA_DIR/vocab_bin/sentencepiece.source.32000.model}")
  TEST_DIR=$(abs_path "${TEST_DIR:-$DATA_DIR/retrieved_data}")
  CONFIG=$(abs_path "${CONFIG:-$ROOT/jobs/configs/$DATASET.yaml}")
  [[ -f $CONFIG ]] || die "config $CONFIG not found"
  [[ -d $DATA_BIN ]] || die "no data-bin at $DATA_BIN: unzip m15.zip (README of the SMoE reference) and set DATA_DIR to the directory holding data_bin/, vocab_bin/ and retrieved_data/"
  [[ -f $DATA_BIN/dict.txt ]] || die "no dict.txt in $DATA_BIN (a fairseq data-bin has one; if it has only dict.<lang>.txt files, which are equal for a joint vocabulary, copy one to dict.txt)"
  [[ -f $SPM_MODEL ]] || die "no SentencePiece model at $SPM_MODEL (m15.zip: vocab_bin/sentencepiece.source.32000.model; or set SPM_MODEL)"
  find_build
  SAVE_PATH=$(abs_path "$SAVE_PATH")
  mkdir -p "$SAVE_PATH"
  set_threads

  launch_prefix
  local batch=()
  if [[ ${KEEP_GLOBAL_BATCH:-1} == 1 && $NRANKS -lt 32 && $((32 % NRANKS)) -eq 0 ]]; then
    batch=(--set train.update_freq=$((32 / NRANKS)))
    log "$NRANKS process(es): update_freq $((32 / NRANKS)) keeps the paper's global batch of 32 x max_tokens"
  fi
  write_run_env "$SAVE_PATH/run.env" DATASET EN XX LANG_GROUPS TEST_LAYOUT TEST_DIR SPM_MODEL
  log "$DATASET: MOE_TYPE $MOE_TYPE, $EXPERTS experts, strata ${SPLIT:-none}; data $DATA_BIN; checkpoints $SAVE_PATH"

  local rc=0
  if [[ -z $STOP_SIGNAL ]]; then
    run_training "$CONFIG" \
      --set data.data_dir="$DATA_BIN" --set data.format=fairseq --set data.spm_model="$SPM_MODEL" \
      --set data.langs="$LANGS" --set data.lang_pairs="$LANG_PAIRS" --set train.save_dir="$SAVE_PATH" \
      "${batch[@]}" "${MOE_SET[@]}" "${EXTRA_ARGS[@]}" || rc=$?
  fi
  [[ $rc -eq 0 ]] || die "strata-train failed (exit $rc); see the lines above. Resubmitting resumes from $SAVE_PATH/checkpoint_last"
  if requeue_if_signalled; then exit 0; fi
  if [[ -n $STOP_SIGNAL ]]; then
    log "stopped by SIG$STOP_SIGNAL with a checkpoint in $SAVE_PATH/checkpoint_last; resubmit the same command to resume"
    exit 0
  fi
  log "training finished: $SAVE_PATH"
  if [[ ${EVALUATE:-0} == 1 ]]; then
    bash "$ROOT/jobs/evaluate.sh" "$SAVE_PATH"
  else
    log "evaluate with: sbatch jobs/evaluate.sh $SAVE_PATH   (or bash jobs/evaluate.sh $SAVE_PATH)"
  fi
}
