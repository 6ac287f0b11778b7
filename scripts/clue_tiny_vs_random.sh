#!/usr/bin/env bash
# The README's CLUE numbers: the tiny model pretrained by the default config
# (python scripts/pretrain.py, 200 steps on corpora/sample) and its random-init twin,
# fine-tuned under the size-aware defaults (configs/clue/sizes.yaml: tiny) on real CLUE data.
# CPU budgets (2 cores): fewer train rows / shorter sequences / fewer seeds than the defaults
# on the heavy tasks, identical for both models; every dev set is scored whole.
#   bash scripts/clue_tiny_vs_random.sh [RUN_DIR] [CLUE_DIR] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:-runs/pretrain/tiny}
clue=${2:-../shared/data/clue}
out=${3:-runs/clue/tiny-vs-random-readme}
common=(--model "$run" --random-twin --data-dir "$clue" --wandb-mode disabled)
step() {  # name, then flags; prints the wall time of each task group
  local name=$1; shift
  local t0=$SECONDS
  zhbert eval clue "${common[@]}" --output "$out/$name" "$@" > "$out/$name.log" 2>&1
  echo "$name: $((SECONDS - t0)) s" | tee -a "$out/times.txt"
}
mkdir -p "$out"
: > "$out/times.txt"
step chid --tasks chid --seeds 1,2                                     # FewCLUE: 202 train rows, 7 candidates
step cmrc2018 --tasks cmrc2018 --seeds 1 --max-seq-length 256          # trial (1,002 q) -> dev (3,219 q)
step c3 --tasks c3 --seeds 1 --max-train-samples 2000 --max-seq-length 128 --epochs 2
step cls --tasks tnews,ocnli --seeds 1,2 --max-train-samples 5000 --epochs 2
label=$(basename "$run")
zhbert eval compare "$out"/{chid,cmrc2018,c3,cls}/"$label" "$out"/{chid,cmrc2018,c3,cls}/random-init \
    --output "$out" > "$out/compare.log"
cat "$out/results.md"
