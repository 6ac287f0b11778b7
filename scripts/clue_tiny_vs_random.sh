#!/usr/bin/env bash
# The README's CLUE numbers: the tiny model pretrained by the default config
# (python scripts/pretrain.py, 200 steps on corpora/sample) and its random-init twin,
# fine-tuned under the size-aware defaults (configs/clue/sizes.yaml: tiny) on real CLUE data.
# CPU budgets (2 cores): fewer train rows / shorter sequences / fewer seeds / epochs than the
# defaults, identical for both models; every dev set is scored whole except CMRC2018's (first
# 1,000 of 3,219 questions: one dev pass over all windows takes minutes on 2 cores).
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
step cmrc2018 --tasks cmrc2018 --seeds 1 --max-seq-length 256 --epochs 1 --max-eval-samples 1000  # trial -> dev
step c3 --tasks c3 --seeds 1 --max-train-samples 1000 --max-seq-length 128 --epochs 1
step cls --tasks tnews,ocnli --seeds 1,2 --max-train-samples 4000 --epochs 2
label=$(basename "$run")
zhbert eval compare "$out"/{chid,cmrc2018,c3,cls}/"$label" "$out"/{chid,cmrc2018,c3,cls}/random-init \
    --output "$out" > "$out/compare.log"
cat "$out/results.md"
