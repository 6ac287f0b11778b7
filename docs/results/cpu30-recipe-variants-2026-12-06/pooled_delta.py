"""The recipe over several pretraining seeds against random init: every pretrained run's fine-tuning
seeds pooled (pretraining seed x fine-tuning seed), then the same bootstrap over dev examples as
clue_experiment.py's delta.  python pooled_delta.py RANDOM_OUT RUN_OUT [RUN_OUT ...]
(RANDOM_OUT: the experiment whose random-init twin results the runs share)."""
import importlib.util, sys, json
from pathlib import Path
REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "scripts"))
spec = importlib.util.spec_from_file_location("ce", REPO / "scripts" / "clue_experiment.py")
ce = importlib.util.module_from_spec(spec); spec.loader.exec_module(ce)
clue = REPO.parent / "shared" / "data" / "clue"
rand_out, runs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
rr = ce.results_of(rand_out / "clue")
rand = next(v for k, v in rr.items() if k.startswith("random-init"))
for task in ("ocnli", "tnews"):
    gold = ce._gold(task, clue)
    pooled = {}
    for i, run in enumerate(runs):
        res = ce.results_of(run / "clue")
        pre = next(v for k, v in res.items() if not k.startswith("random-init"))
        pooled.update({f"{i}:{s}": c for s, c in ce.correctness(pre, task, gold).items()})
    means = [100 * c.mean() for c in pooled.values()]
    b = ce.bootstrap_delta(pooled, ce.correctness(rand, task, gold), 2000)
    print(task, json.dumps({"runs": len(runs), "fine_tunes": len(pooled), "mean": round(sum(means) / len(means), 2),
                            **b}))
