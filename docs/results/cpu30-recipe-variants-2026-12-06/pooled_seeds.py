"""The recipe over several pretraining seeds against random init, from the committed
comparison.json files (per-seed dev accuracies of both arms; all runs share one random-init
twin): the pooled mean of every pretrained fine-tuning run (pretraining seed x fine-tuning seed)
minus the twin's mean, each pretraining seed's delta, and a t interval over the pretraining
seeds' deltas (it covers the spread between pretraining seeds, conditional on the twin's three
fine-tuning runs and on the dev set; the bootstrap over dev examples needs per-example
predictions, which were not kept for the first two seeds).
    python pooled_seeds.py RUN_DIR [RUN_DIR ...]   (directories holding comparison.json)"""
import json, statistics, sys
from pathlib import Path
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
runs = [json.loads((Path(d) / "comparison.json").read_text()) for d in sys.argv[1:]]
for task in ("ocnli", "tnews"):
    twins = {json.dumps(r["tasks"][task]["random_init"]["seeds"], sort_keys=True) for r in runs}
    if len(twins) != 1:
        raise SystemExit(f"{task}: the runs do not share one random-init twin's results: {sorted(twins)}")
    rand = list(runs[0]["tasks"][task]["random_init"]["seeds"].values())
    per_run = [list(r["tasks"][task]["pretrained"]["seeds"].values()) for r in runs]
    pooled = [a for accs in per_run for a in accs]
    deltas = [statistics.mean(accs) - statistics.mean(rand) for accs in per_run]
    d = statistics.mean(pooled) - statistics.mean(rand)
    res = {"pretraining_seeds": len(runs), "fine_tunes": len(pooled), "pretrained_mean": round(statistics.mean(pooled), 2),
           "pretrained_std": round(statistics.stdev(pooled), 2), "random_mean": round(statistics.mean(rand), 2),
           "delta": round(d, 2), "per_pretraining_seed": [round(x, 2) for x in deltas]}
    if len(runs) > 1:
        half = T975[len(runs) - 1] * statistics.stdev(deltas) / len(runs) ** 0.5
        res["t95_over_pretraining_seeds"] = [round(d - half, 2), round(d + half, 2)]
    print(task, json.dumps(res))
