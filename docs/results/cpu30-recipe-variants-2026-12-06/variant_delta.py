"""Paired bootstrap over dev examples of variant - recipe (the pretrained arms of two clue_experiment.py
outputs; the same statistic as its pretrained - random delta).  python variant_delta.py RECIPE_OUT VARIANT_OUT"""
import importlib.util, sys, json
from pathlib import Path
REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "scripts"))
spec = importlib.util.spec_from_file_location("ce", REPO / "scripts" / "clue_experiment.py")
ce = importlib.util.module_from_spec(spec); spec.loader.exec_module(ce)
clue = REPO.parent / "shared" / "data" / "clue"
base, var = Path(sys.argv[1]), Path(sys.argv[2])
rb, rv = ce.results_of(base / "clue"), ce.results_of(var / "clue")
pb = next(v for k, v in rb.items() if not k.startswith("random-init"))
pv = next(v for k, v in rv.items() if not k.startswith("random-init"))
for task in ("ocnli", "tnews"):
    gold = ce._gold(task, clue)
    a, b = ce.correctness(pv, task, gold), ce.correctness(pb, task, gold)
    print(task, json.dumps(ce.bootstrap_delta(a, b, 2000)))
