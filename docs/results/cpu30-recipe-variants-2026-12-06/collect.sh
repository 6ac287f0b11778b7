# collect.sh RUN DEST CONFIG: the committed files of one clue_experiment.py run (config, comparison,
# results tables, and pretrain_metrics.jsonl: step, tokens, train_s, lr, grad_norm and the held-out evals)
set -eu
run=$1; dest=$2; cfg=$3
mkdir -p "$dest"
[ "$cfg" -ef "$dest/config.yaml" ] || cp "$cfg" "$dest/config.yaml"
cp "$run/comparison.json" "$run/comparison.md" "$dest/"
cp "$run/clue/results.md" "$dest/results_ocnli_tnews.md"
cp "$run/clue_cmrc2018/results.md" "$dest/results_cmrc2018.md"
python - "$run/pretrain/metrics.jsonl" > "$dest/pretrain_metrics.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    keep = {k: d[k] for k in ("step", "tokens", "train_s", "lr", "grad_norm")}
    keep.update({k: v for k, v in d.items() if k.startswith("eval/")})
    print(json.dumps(keep))
PY
