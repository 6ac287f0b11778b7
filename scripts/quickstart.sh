#!/usr/bin/env bash
# The main job on the built-in default, from a fresh clone:
#   install -> prepare corpora/sample -> pretrain the tiny BERT (CPU, minutes) -> export -> plot
#   -> a format check of CLUE fine-tuning on the bundled fixture
#   -> the last screen: did pretraining work? (held-out MLM vs the unigram baseline, NSP vs 50%)
#   -> with --clue-dir DIR (real CLUE data): the run and its random-init twin fine-tuned on
#      OCNLI and TNEWS (2,000 train rows, 1,000 dev rows, 2 epochs, seeds 1 and 2; ~7 more
#      minutes on 2 cores), one table with the majority-class rate beside them
# Other arguments go to scripts/pretrain.py as section.key=value overrides.
set -euo pipefail
cd "$(dirname "$0")/.."

clue_dir=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --clue-dir) clue_dir="${2:?--clue-dir needs a directory}"; shift 2 ;;
    --clue-dir=*) clue_dir="${1#--clue-dir=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -n "$clue_dir" ] && [ ! -d "$clue_dir" ]; then
  echo "quickstart: --clue-dir $clue_dir: not a directory (expected CLUE's ocnli_public/ and tnews_public/ inside)" >&2
  exit 2
fi

if ! python -c "import torch" 2>/dev/null; then
  python -m pip install --quiet torch==2.13.0   # CPU build; install a CUDA build yourself on GPUs
fi
python -m pip install --quiet -e ".[dev]"

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}
fi

run=runs/pretrain/tiny
python scripts/pretrain.py --config configs/pretrain/tiny.yaml ${args[@]+"${args[@]}"}
rm -rf runs/export/tiny-hf
zhbert export "$run" runs/export/tiny-hf
zhbert plot "$run"
zhbert eval clue --model "$run" --tasks tnews,ocnli,wsc --data-dir tests/fixtures/clue \
    --output runs/clue/tiny-fixture --seeds 1 --epochs 1 > runs/clue-fixture.log
echo
echo "pretraining run:  $run (metrics.jsonl, checkpoints/, plots/)"
echo "HF export:        runs/export/tiny-hf (transformers.AutoTokenizer / BertForPreTraining load it)"
echo "CLUE fine-tuning: runs/clue/tiny-fixture/results.md -- on the bundled 3-8-row fixture files,"
echo "                  a format check of the whole path, not a measurement"
echo
if [ -n "$clue_dir" ]; then
  out=runs/clue/tiny-vs-random
  zhbert eval clue --model "$run" --random-twin --tasks ocnli,tnews --data-dir "$clue_dir" --output "$out" \
      --seeds 1,2 --max-train-samples 2000 --max-eval-samples 1000 --epochs 2 --wandb-mode disabled \
      > runs/clue-tiny-vs-random.log
  echo "Pretrained vs random init on real CLUE dev data ($out/results.md; small budget: 2,000 train rows,"
  echo "1,000 dev rows, 2 epochs, seeds 1 and 2, size-aware defaults):"
  sed -n '/^| Model/,/^$/p' "$out/results.md"
  grep '^\*\*WARNING' "$out/results.md" || true
  echo
fi
zhbert verdict "$run" --json "$run/verdict.json"
