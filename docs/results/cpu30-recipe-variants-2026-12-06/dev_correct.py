"""Per-example dev correctness of a clue_experiment.py output, both arms, every fine-tuning seed,
packed small enough to commit (one hex string of bits per task and seed, dev rows with a gold
label in file order), so that paired and pooled bootstraps over dev examples can be recomputed
after the run directory is gone.  python dev_correct.py RUN_OUT > dev_correct.json
Checked on the way: each seed's recomputed accuracy equals the one the run reported."""
import importlib.util, sys, json
from pathlib import Path
import numpy as np
REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "scripts"))
spec = importlib.util.spec_from_file_location("ce", REPO / "scripts" / "clue_experiment.py")
ce = importlib.util.module_from_spec(spec); spec.loader.exec_module(ce)
clue = REPO.parent / "shared" / "data" / "clue"
out = {}
for label, res in ce.results_of(Path(sys.argv[1]) / "clue").items():
    arm = "random_init" if label.startswith("random-init") else "pretrained"
    for task in ("ocnli", "tnews"):
        if task not in res["tasks"]:  # a run of one task (--tasks ocnli)
            continue
        for seed, c in ce.correctness(res, task, ce._gold(task, clue)).items():
            out.setdefault(arm, {}).setdefault(task, {})[seed] = {
                "rows": int(c.size), "correct": int(c.sum()), "bits": np.packbits(c).tobytes().hex()}
print(json.dumps(out, indent=1, sort_keys=True))
