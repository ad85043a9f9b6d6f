#!/usr/bin/env bash
# The main job on the bundled default: a multilingual transformer trained on
# CPU on the LibreOffice help corpus (English <-> de, fr, it, nl: 8 directions),
# then every direction's test split translated and scored.
#   bash jobs/demo.sh [BUILD_DIR]      (make demo runs it after installing and building)
# Environment: DEMO_DIR (work directory, default data/demo), DEMO_MINUTES
# (training time budget, default 15), DEMO_LANGS (default de,fr,it,nl),
# DEMO_TEST_SENTENCES (test sentences per direction, default 300).
# Re-running resumes: the corpus and the checkpoint are kept in DEMO_DIR.
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${DEMO_DIR:-$ROOT/data/demo}
MINUTES=${DEMO_MINUTES:-15}
LANGS=${DEMO_LANGS:-de,fr,it,nl}
NTEST=${DEMO_TEST_SENTENCES:-300}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
# idle OpenMP threads sleep rather than spin: robust when the cores are shared
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
mkdir -p "$DIR"
step() { echo; echo "=== $*"; }

step "1/5 corpus: LibreOffice help, en <-> ${LANGS}"
if [[ ! -f "$DIR/text/.complete" ]]; then
  "$ROOT/data_tools/fetch_lohelp" --langs "$LANGS" --out "$DIR/text" --cache "$DIR/debs"
  touch "$DIR/text/.complete"
else
  echo "reusing $DIR/text"
fi

step "2/5 SentencePiece model (8k, joint, with language tokens)"
mkdir -p "$DIR/bin"
if [[ ! -f "$DIR/bin/spm.model" ]]; then
  "$BUILD/train-spm" --tsv-dir "$DIR/text" --model-prefix "$DIR/bin/spm" --vocab-size 8000
else
  echo "reusing $DIR/bin/spm.model"
fi

step "3/5 binarise"
if [[ ! -f "$DIR/bin/.complete" ]]; then
  "$BUILD/strata-preprocess" --spm "$DIR/bin/spm.model" --out "$DIR/bin" --tsv-dir "$DIR/text"
  touch "$DIR/bin/.complete"
else
  echo "reusing $DIR/bin"
fi

PAIRS=""
for l in ${LANGS//,/ }; do PAIRS="$PAIRS,en-$l,$l-en"; done
PAIRS=${PAIRS#,}
step "4/5 train (CPU, ${MINUTES} minutes; progress every 50 updates)"
"$BUILD/strata-train" "$ROOT/jobs/configs/demo.yaml" \
  --set data.data_dir="$DIR/bin" --set data.langs="en,$LANGS" --set data.lang_pairs="$PAIRS" \
  --set data.valid_subset=dev --set train.save_dir="$DIR/checkpoints" \
  --set train.max_time_minutes="$MINUTES" | grep --line-buffered -v '^  \|^[a-z]*:$\|^#'

step "5/5 translate the test split of every direction (beam 5) and score it"
mkdir -p "$DIR/test"
printf '%-8s %8s %8s %10s\n' direction BLEU chrF2 sentences > "$DIR/test/bleu_table.txt"
sum=0; n=0
for pair in ${PAIRS//,/ }; do
  src=${pair%-*}; tgt=${pair#*-}
  xx=$([[ $src == en ]] && echo "$tgt" || echo "$src")
  tsv="$DIR/text/test.en-$xx.tsv"
  col_src=$([[ $src == en ]] && echo 1 || echo 2); col_tgt=$([[ $src == en ]] && echo 2 || echo 1)
  head -n "$NTEST" "$tsv" | cut -f"$col_src" > "$DIR/test/$pair.src"
  head -n "$NTEST" "$tsv" | cut -f"$col_tgt" > "$DIR/test/$pair.ref"
  "$BUILD/strata-translate" "$DIR/checkpoints" -t "$tgt" -i "$DIR/test/$pair.src" -o "$DIR/test/$pair.hyp" \
    --set data.data_dir="$DIR/bin" 2> "$DIR/test/$pair.log"
  read -r bleu chrf < <("$BUILD/strata-bleu" "$DIR/test/$pair.ref" -i "$DIR/test/$pair.hyp" -m bleu chrf -b | paste -sd' ')
  printf '%-8s %8s %8s %10s\n' "$pair" "$bleu" "$chrf" "$(wc -l < "$DIR/test/$pair.src")" >> "$DIR/test/bleu_table.txt"
  sum=$(python3 -c "print($sum + $bleu)"); n=$((n + 1))
done
printf '%-8s %8.1f\n' average "$(python3 -c "print($sum / $n)")" >> "$DIR/test/bleu_table.txt"
echo
cat "$DIR/test/bleu_table.txt"
echo
echo "translations and logs: $DIR/test; checkpoints: $DIR/checkpoints; metrics: $DIR/checkpoints/metrics.jsonl"
