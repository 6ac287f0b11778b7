"""A variant against the recipe, both over several pretraining seeds, from the committed
comparison.json files (every run shares one random-init twin, checked): per task, each
pretraining seed's mean dev accuracy (over its fine-tuning seeds) for both settings, each
setting's delta against the twin, and the variant minus the recipe with a Welch t interval over
pretraining seeds (the unit that varies between the settings: init, data order and masks; the
fine-tuning seeds are averaged inside each pretraining seed first).
    python variant_seeds.py RECIPE_DIR [RECIPE_DIR ...] -- VARIANT_DIR [VARIANT_DIR ...]"""
import json, math, statistics, sys
from pathlib import Path

# two-sided 97.5% quantiles of Student's t; fractional df (Welch) are rounded down (conservative)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
cut = sys.argv.index("--")
groups = {"recipe": sys.argv[1:cut], "variant": sys.argv[cut + 1:]}
runs = {g: [json.loads((Path(d) / "comparison.json").read_text()) for d in ds] for g, ds in groups.items()}
for task in ("ocnli", "tnews"):
    every = [r for rs in runs.values() for r in rs]
    twins = {json.dumps(r["tasks"][task]["random_init"]["seeds"], sort_keys=True) for r in every}
    if len(twins) != 1:
        raise SystemExit(f"{task}: the runs do not share one random-init twin's results")
    rand = statistics.mean(every[0]["tasks"][task]["random_init"]["seeds"].values())
    per = {g: [statistics.mean(r["tasks"][task]["pretrained"]["seeds"].values()) for r in rs] for g, rs in runs.items()}
    a, b = per["recipe"], per["variant"]
    diff = statistics.mean(b) - statistics.mean(a)
    res = {g: {"per_pretraining_seed": [round(x, 2) for x in xs], "mean": round(statistics.mean(xs), 2),
               "delta_vs_random": round(statistics.mean(xs) - rand, 2)} for g, xs in per.items()}
    res["random_init"] = round(rand, 2)
    res["variant_minus_recipe"] = round(diff, 2)
    if len(a) > 1 and len(b) > 1:
        va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se else len(a) + len(b) - 2
        t = T975[max(1, min(10, int(df)))]
        res["welch_t95"] = [round(diff - t * se, 2), round(diff + t * se, 2)]
        res["welch_df"] = round(df, 1)
    print(task, json.dumps(res))
