#!/usr/bin/env bash
# End to end on the fixture corpus: SentencePiece -> binarise -> train a tiny
# model -> the loss falls -> checkpoint -> resume equals an uninterrupted run
# value for value -> kill -9 never leaves a broken checkpoint_last ->
# translate -> BLEU.
SUITE="e2e translation pipeline"
source "$(dirname "$0")/lib.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

check "SentencePiece model and binarised corpus" prepare_corpus
TRAIN=("$BUILD/strata-train" "$ROOT/jobs/configs/tiny.yaml"
  --set data.data_dir="$TMP/data" --set data.lang_pairs=en-de,de-en,en-fr,fr-en --set data.valid_subset=dev
  --set train.log_interval=1 --set train.validate_interval_updates=20 --set train.save_interval_updates=20
  --set train.valid_bleu_sentences=8 --set decode.beam=1)

# 1. uninterrupted run of 60 updates
"${TRAIN[@]}" --set train.save_dir="$TMP/full" --set train.max_update=60 > "$TMP/full.log" 2>&1
check "uninterrupted training runs" test $? -eq 0
train_losses "$TMP/full/metrics.jsonl" > "$TMP/full.losses"
first=$(head -1 "$TMP/full.losses" | cut -d' ' -f2)
last=$(tail -1 "$TMP/full.losses" | cut -d' ' -f2)
echo "  loss at update 1: $first, at update 60: $last"
check "the training loss falls by more than 2 bits" python3 -c "import sys; sys.exit(0 if $first - $last > 2 else 1)"
check "checkpoint_last is complete" test -f "$TMP/full/checkpoint_last/DONE"
check "checkpoint_best exists" test -f "$TMP/full/checkpoint_best/model.safetensors"
check "progress lines are printed" grep -q "update 60/60" "$TMP/full.log"

# 2. the same run interrupted at update 20 and resumed in a new process
"${TRAIN[@]}" --set train.save_dir="$TMP/resumed" --set train.max_update=20 > "$TMP/part1.log" 2>&1
"${TRAIN[@]}" --set train.save_dir="$TMP/resumed" --set train.max_update=60 > "$TMP/part2.log" 2>&1
check "the second process resumed from checkpoint_last" grep -q "resumed from .* at update 20" "$TMP/part2.log"
train_losses "$TMP/resumed/metrics.jsonl" > "$TMP/resumed.losses"
check "resumed losses equal the uninterrupted run's, value for value" cmp -s "$TMP/full.losses" "$TMP/resumed.losses"
if ! cmp -s "$TMP/full.losses" "$TMP/resumed.losses"; then diff "$TMP/full.losses" "$TMP/resumed.losses" | head -5; fi

# 3. kill -9 at moments around checkpoint writes (a save every 2 updates)
killed_ok=1
for delay in 0.0 0.15 0.3; do
  "${TRAIN[@]}" --set train.save_dir="$TMP/killed" --set train.max_update=400 --set train.save_interval_updates=2 \
    --set train.validate_interval_updates=400 > "$TMP/killed.log" 2>&1 &
  pid=$!
  # wait for a first complete checkpoint, then kill at a varying offset
  for _ in $(seq 600); do [[ -f "$TMP/killed/checkpoint_last/DONE" ]] && break; sleep 0.1; done
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  if [[ ! -f "$TMP/killed/checkpoint_last/DONE" ]]; then killed_ok=0; fi
done
check "kill -9 never leaves checkpoint_last without DONE" test $killed_ok -eq 1
"${TRAIN[@]}" --set train.save_dir="$TMP/killed" --set train.max_update=400 --set train.save_interval_updates=2 \
  --set train.validate_interval_updates=400 --set train.max_update=12 > "$TMP/killed2.log" 2>&1
rc=$?
check "training resumes after kill -9" test $rc -eq 0
[[ $rc -eq 0 ]] || tail -3 "$TMP/killed2.log"

# 4. translate the test split and score it
cut -f1 "$FIXTURE/test.en-de.tsv" | head -20 > "$TMP/test.en"
cut -f2 "$FIXTURE/test.en-de.tsv" | head -20 > "$TMP/test.de"
"$BUILD/strata-translate" "$TMP/full" -t de -i "$TMP/test.en" -o "$TMP/hyp.de" --beam 2 > "$TMP/translate.log" 2>&1
check "strata-translate writes one line per input" test "$(wc -l < "$TMP/hyp.de")" -eq 20
"$BUILD/strata-bleu" "$TMP/test.de" -i "$TMP/hyp.de" -m bleu chrf > "$TMP/bleu.txt" 2>&1
check "strata-bleu scores the translations" grep -q "BLEU|nrefs:1" "$TMP/bleu.txt"
sed 's/^/  /' "$TMP/bleu.txt"

# 5. bad input is a one-line error, not a crash
"$BUILD/strata-train" "$ROOT/jobs/configs/tiny.yaml" --set data.data_dir="$TMP/data" --set model.encoder_layer=3 \
  > "$TMP/bad.log" 2>&1
rc=$?
check "a mistyped key stops with exit 1 and names the closest key" \
  bash -c "[[ $rc -eq 1 ]] && grep -q \"did you mean 'encoder_layers'\" '$TMP/bad.log'"
finish
