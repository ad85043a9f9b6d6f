#!/usr/bin/env bash
# A small model memorises 64 sentence pairs: greedy translation of their
# sources reproduces the references (BLEU >= 95). Catches anything that stops
# the model from learning or decoding what it learnt (masks, positions,
# teacher forcing offsets, beam bookkeeping).
SUITE="e2e overfit"
source "$(dirname "$0")/lib.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

mkdir -p "$TMP/text" "$TMP/data"
head -n 64 "$FIXTURE/train.en-de.tsv" > "$TMP/text/train.en-de.tsv"
cp "$TMP/text/train.en-de.tsv" "$TMP/text/dev.en-de.tsv"
"$BUILD/train-spm" --tsv-dir "$FIXTURE" --model-prefix "$TMP/data/spm" --vocab-size 1000 --soft-vocab-limit \
  > "$TMP/spm.log" 2>&1
"$BUILD/strata-preprocess" --spm "$TMP/data/spm.model" --out "$TMP/data" --tsv-dir "$TMP/text" > "$TMP/pre.log" 2>&1
check "64-pair corpus prepared" test -f "$TMP/data/train.en-de.en.sbin"

"$BUILD/strata-train" "$ROOT/jobs/configs/tiny.yaml" --set data.data_dir="$TMP/data" --set data.lang_pairs=en-de \
  --set data.valid_subset=dev --set model.dropout=0 --set model.attention_dropout=0 --set train.label_smoothing=0 \
  --set train.lr=0.003 --set train.warmup_updates=40 --set train.max_update=500 --set train.log_interval=100 \
  --set train.validate_interval_updates=500 --set train.save_interval_updates=500 --set train.valid_bleu_sentences=0 \
  --set train.save_dir="$TMP/ck" > "$TMP/train.log" 2>&1
check "training runs" test $? -eq 0
grep "update 500/500" "$TMP/train.log" | sed 's/^/  /'

cut -f1 "$TMP/text/train.en-de.tsv" > "$TMP/src.en"
cut -f2 "$TMP/text/train.en-de.tsv" > "$TMP/ref.de"
"$BUILD/strata-translate" "$TMP/ck" -t de -i "$TMP/src.en" -o "$TMP/hyp.de" --greedy > "$TMP/translate.log" 2>&1
bleu=$("$BUILD/strata-bleu" "$TMP/ref.de" -i "$TMP/hyp.de" -b -w 2)
echo "  greedy BLEU on the memorised pairs: $bleu"
check "greedy translation reproduces the memorised pairs (BLEU >= 95)" python3 -c "import sys; sys.exit(0 if $bleu >= 95 else 1)"
"$BUILD/strata-translate" "$TMP/ck" -t de -i "$TMP/src.en" -o "$TMP/beam.de" --beam 4 > /dev/null 2>&1
bleu_beam=$("$BUILD/strata-bleu" "$TMP/ref.de" -i "$TMP/beam.de" -b -w 2)
echo "  beam-4 BLEU on the memorised pairs: $bleu_beam"
check "beam search reproduces them too (BLEU >= 95)" python3 -c "import sys; sys.exit(0 if $bleu_beam >= 95 else 1)"
finish
