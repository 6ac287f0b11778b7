"""OCNLI at 1 and at 2 fine-tuning epochs: each arm, the pretrained - random delta at each, and how the
delta changes, all as bootstrap intervals over the same dev-example resamples (paired: one resample of
dev rows serves every arm, seed and epoch count; the statistic is a mean-over-seeds accuracy, as in
clue_experiment.py's delta).

    python epochs_delta.py EPOCH1_DEV_CORRECT.json EPOCH2_DEV_CORRECT.json [TASK]

Inputs: ../cpu30-recipe-variants-2026-12-06/dev_correct.py outputs (per-example correctness bits of
both arms, every fine-tuning seed). The two pretrained arms are two pretraining runs of the same
config and seed (a time-budgeted run is not bit-exact), so "pretrained, 2 - 1 epochs" carries the
pretraining run's variation as well as the epochs'; the random-init twins are the same weights."""
import json, sys
import numpy as np


def bits(d: dict) -> np.ndarray:
    """[S, N] correctness of one arm's fine-tuning seeds."""
    rows = []
    for seed in sorted(d):
        c = np.unpackbits(np.frombuffer(bytes.fromhex(d[seed]["bits"]), np.uint8))[: d[seed]["rows"]].astype(float)
        assert int(c.sum()) == d[seed]["correct"], seed
        rows.append(c)
    return np.stack(rows)


def main() -> None:
    one, two = (json.load(open(p)) for p in sys.argv[1:3])
    task = sys.argv[3] if len(sys.argv) > 3 else "ocnli"
    arms = {f"{arm}, {k} epoch{'s' if k == 2 else ''}": bits(run[arm][task]).mean(0)  # [N] mean over seeds
            for k, run in ((1, one), (2, two)) for arm in ("pretrained", "random_init")}
    n = next(iter(arms.values())).size
    stats = {
        **arms,
        "delta, 1 epoch": arms["pretrained, 1 epoch"] - arms["random_init, 1 epoch"],
        "delta, 2 epochs": arms["pretrained, 2 epochs"] - arms["random_init, 2 epochs"],
        "pretrained, 2 - 1 epochs": arms["pretrained, 2 epochs"] - arms["pretrained, 1 epoch"],
        "random_init, 2 - 1 epochs": arms["random_init, 2 epochs"] - arms["random_init, 1 epoch"],
    }
    stats["delta, 2 epochs - delta, 1 epoch"] = stats["delta, 2 epochs"] - stats["delta, 1 epoch"]
    rng = np.random.default_rng(0)
    idx = rng.integers(0, n, (2000, n))  # the same 2,000 resamples of the dev rows for every statistic
    print(f"# {task}: {n} dev rows, seeds per arm: "
          + ", ".join(f"{k} epochs {len(run['pretrained'][task])}/{len(run['random_init'][task])}"
                      for k, run in ((1, one), (2, two))))
    for name, v in stats.items():
        boot = v[idx].mean(1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(f"{name:34s} {100 * v.mean():7.2f}  95% [{100 * lo:+.2f}, {100 * hi:+.2f}]  P(<=0) {float((boot <= 0).mean()):.4f}")


if __name__ == "__main__":
    main()
