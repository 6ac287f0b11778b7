#!/usr/bin/env bash
# The main job on the built-in default, from a fresh clone:
#   install -> prepare corpora/sample -> pretrain the tiny BERT (CPU, minutes) -> export -> plot
#   -> a format check of CLUE fine-tuning on the bundled fixture
#   -> the last screen: did pretraining work? (held-out MLM vs the unigram baseline, NSP vs 50%)
# Extra arguments go to scripts/pretrain.py as section.key=value overrides.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python -c "import torch" 2>/dev/null; then
  python -m pip install --quiet torch==2.13.0   # CPU build; install a CUDA build yourself on GPUs
fi
python -m pip install --quiet -e ".[dev]"

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}
fi

run=runs/pretrain/tiny
python scripts/pretrain.py --config configs/pretrain/tiny.yaml "$@"
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
zhbert verdict "$run" --json "$run/verdict.json"
