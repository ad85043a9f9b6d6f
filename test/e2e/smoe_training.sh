#!/usr/bin/env bash
# A tiny stratified MoE model (4 experts in strata 2-2, every other layer)
# trains on the fixture corpus from the YAML config: the loss falls, the
# balance loss is logged, validation records routing statistics that
# data_tools/plot_routing turns into PNG plots, and the model translates.
SUITE="e2e smoe training"
source "$(dirname "$0")/lib.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

check "SentencePiece model and binarised corpus" prepare_corpus
"$BUILD/strata-train" "$ROOT/jobs/configs/tiny_smoe.yaml" --set data.data_dir="$TMP/data" \
  --set data.lang_pairs=en-de,de-en,en-fr,fr-en --set data.valid_subset=dev --set train.max_update=60 \
  --set train.log_interval=1 --set train.validate_interval_updates=30 --set train.save_interval_updates=30 \
  --set train.valid_bleu_sentences=8 --set decode.beam=1 --set train.save_dir="$TMP/ck" > "$TMP/train.log" 2>&1
rc=$?
check "SMoE training runs" test $rc -eq 0
[[ $rc -eq 0 ]] || tail -5 "$TMP/train.log"
check "the model summary names the MoE blocks" grep -q "MoE blocks" "$TMP/train.log"
train_losses "$TMP/ck/metrics.jsonl" > "$TMP/losses"
first=$(head -1 "$TMP/losses" | cut -d' ' -f2)
last=$(tail -1 "$TMP/losses" | cut -d' ' -f2)
echo "  loss at update 1: $first, at update 60: $last"
check "the training loss falls by more than 2 bits" python3 -c "import sys; sys.exit(0 if $first - $last > 2 else 1)"
check "the balance loss is logged" grep -q '"gate_loss"' "$TMP/ck/metrics.jsonl"
check "validation records routing statistics" grep -q '"moe_routing"' "$TMP/ck/metrics.jsonl"
/usr/bin/python3 "$ROOT/data_tools/plot_routing" "$TMP/ck/metrics.jsonl" --out "$TMP/plots" > "$TMP/plot.log" 2>&1
check "routing plots are written" bash -c "ls '$TMP/plots'/*.png > /dev/null 2>&1"
ls "$TMP/plots" 2>/dev/null | sed 's/^/  plot: /'
# the paper's M4 SMoE shape on the tiny model: 8 experts in strata 2-2-2-2
"$BUILD/strata-train" "$ROOT/jobs/configs/tiny_smoe.yaml" --set data.data_dir="$TMP/data" \
  --set data.lang_pairs=en-de,de-en --set data.valid_subset=dev --set moe.experts=8 --set moe.strata=2,2,2,2 \
  --set train.max_update=20 --set train.validate_interval_updates=20 --set train.save_interval_updates=20 \
  --set train.valid_bleu_sentences=4 --set decode.beam=1 --set train.save_dir="$TMP/ck2222" > "$TMP/train2222.log" 2>&1
check "SMoE 2-2-2-2 trains from the config" test $? -eq 0
/usr/bin/python3 "$ROOT/data_tools/plot_routing" "$TMP/ck2222/metrics.jsonl" --out "$TMP/plots2222" > /dev/null 2>&1
check "SMoE 2-2-2-2 routing plots are written" bash -c "ls '$TMP/plots2222'/*.png > /dev/null 2>&1"

cut -f1 "$FIXTURE/test.en-de.tsv" | head -10 > "$TMP/src.en"
"$BUILD/strata-translate" "$TMP/ck" -t de -i "$TMP/src.en" -o "$TMP/hyp.de" --beam 2 > "$TMP/tr.log" 2>&1
check "the SMoE model translates (one line per input)" test "$(wc -l < "$TMP/hyp.de" 2>/dev/null)" -eq 10
finish
