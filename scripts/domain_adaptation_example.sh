#!/usr/bin/env bash
# The measured example of docs/domain_adaptation.md: continue pretraining a tiny base model on a
# domain (the four classical novels of ../shared/data/pretrain_corpus), with and without
# `zhbert vocab extend`, and compare the three models on held-out domain text.
#
#   bash scripts/domain_adaptation_example.sh [OUT]          # default OUT=runs/da (~4 min, 2 cores)
#
# A base: the tiny model of configs/pretrain/tiny.yaml (corpora/sample, 2,501-token vocab, 200
#   steps; trained here unless runs/pretrain/tiny/checkpoints/step_200 exists)
# B base vocab + 300 steps on the domain (the control)
# C base + 2,000 characters by `zhbert vocab extend` + the same 300 steps
# Held out: each novel's last 100 non-blank lines; trained on: the first quarter of its lines.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-runs/da}
C=${ZHBERT_CLASSICS:-../shared/data/pretrain_corpus/classics_public_domain}
[ -d "$C" ] || { echo "domain_adaptation_example: $C: not a directory (set ZHBERT_CLASSICS)" >&2; exit 2; }
export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu} WANDB_MODE=${WANDB_MODE:-disabled}

base_ckpt=runs/pretrain/tiny/checkpoints/step_200
if [ ! -f "$base_ckpt/hf/model.safetensors" ]; then
  python scripts/pretrain.py --config configs/pretrain/tiny.yaml wandb.mode=disabled
fi
rm -rf "$R" && mkdir -p "$R/train"
cp -r "$base_ckpt/hf" "$R/base"    # freeze the base
for f in "$C"/*.txt; do
  n=$(wc -l < "$f")
  awk -v n="$n" 'NR <= int(n / 4)' "$f" > "$R/train/$(basename "$f")"
  awk 'NF' "$f" | tail -n 100 >> "$R/heldout.txt"
done
zhbert vocab extend --base "$R/base" --input "$R/train" --add 2000 --output "$R/ext"
COMMON=(data.input="[$R/train]" model.config=null data.max_seq_length=128 masking.strategy=wwm
  train.max_steps=300 train.micro_batch_size=16 train.lr=3e-4 train.warmup_steps=30 train.eval_every=1000
  train.checkpoint_every=300 train.log_every=50 wandb.mode=disabled)
python scripts/pretrain.py "${COMMON[@]}" model.init_from="$R/ext" data.vocab="$R/ext/vocab.txt" \
  data.dir="$R/data_ext" train.output_dir="$R/run_ext"
python scripts/pretrain.py "${COMMON[@]}" model.init_from="$R/base" data.vocab="$R/base/vocab.txt" \
  data.dir="$R/data_base" train.output_dir="$R/run_base"
python - "$R" <<'PY'
import json
import sys

from zhbert.hub.resolve import resolve_model_dir
from zhbert.train.vocab_extend import heldout_mlm

R = sys.argv[1]
texts = open(f"{R}/heldout.txt", encoding="utf-8").read().split()
rows = {}
for name, model in [("A base, no training", f"{R}/base"), ("B base vocab + 300 steps", f"{R}/run_base"),
                    ("C extended vocab + 300 steps", f"{R}/run_ext")]:
    r = heldout_mlm(resolve_model_dir(model, "model"), texts, reference_vocab=f"{R}/base/vocab.txt")
    rows[name] = r
    print(f"{name:30s} all masked: loss {r['loss']:.3f} acc {100 * r['acc']:.1f}% ([UNK] targets "
          f"{100 * r['unk_target_rate']:.1f}%) | base-vocab chars: loss {r['shared_loss']:.3f} "
          f"acc {100 * r['shared_acc']:.1f}% ({r['shared_masked']:,} of {r['masked']:,})")
json.dump(rows, open(f"{R}/heldout.json", "w"), indent=2)
PY
