"""variant_delta.py from committed per-example bits: the paired bootstrap over dev examples of variant -
recipe (pretrained arms), computed by clue_experiment.py's own bootstrap_delta, from two dev_correct.py
outputs instead of two run directories (which need not exist any more).
    python bits_delta.py RECIPE_DEV_CORRECT.json VARIANT_DEV_CORRECT.json"""
import importlib.util, sys, json
from pathlib import Path
import numpy as np
REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "scripts"))
spec = importlib.util.spec_from_file_location("ce", REPO / "scripts" / "clue_experiment.py")
ce = importlib.util.module_from_spec(spec); spec.loader.exec_module(ce)


def seeds(d: dict) -> dict[str, np.ndarray]:
    """fine-tuning seed -> [N] correctness of the dev rows (checked against the recorded count)"""
    out = {}
    for seed in sorted(d):
        c = np.unpackbits(np.frombuffer(bytes.fromhex(d[seed]["bits"]), np.uint8))[: d[seed]["rows"]].astype(bool)
        assert int(c.sum()) == d[seed]["correct"], seed
        out[seed] = c
    return out


recipe, variant = (json.load(open(p))["pretrained"] for p in sys.argv[1:3])
for task in ("ocnli", "tnews"):
    print(task, json.dumps(ce.bootstrap_delta(seeds(variant[task]), seeds(recipe[task]), 2000)))
