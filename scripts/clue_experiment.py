#!/usr/bin/env python
"""Does zhbert's pretraining help? The recipe for a CPU time budget vs the same model from random init.

    python scripts/clue_experiment.py --budget-minutes 30 --output runs/clue_experiment

1. **Corpus** (``scripts/experiment_corpus.py``): corpora/sample, ../shared/data/pretrain_corpus
   (``--pretrain-corpus``; missing or empty, the run stops before writing anything, exit 2) and
   the unlabeled *train* text of TNEWS, OCNLI, C3 and CMRC2018 (trial); lines holding a
   dev/test sentence are dropped and the written corpus is checked again (``corpus_stats.json``).
   A character vocab fitted to it (``zhbert vocab build --size 8000``), then ``zhbert prepare``
   with the recipe's data settings. Preparation is timed separately from the budget.
2. **Pretraining**: ``scripts/pretrain.py --config configs/pretrain/cpu_30min.yaml`` with
   ``train.max_minutes`` = the budget (``train.schedule: time``: the LR is fully decayed at the
   budget) and ``train.snapshot_minutes`` (HF snapshots + held-out MLM at e.g. 5, 10, 20 min).
3. **Evaluation** (``zhbert eval clue --random-twin``): the final model and its random-init twin
   (same architecture and vocab, seed 42) under one protocol: size-aware defaults (tiny: lr 3e-4,
   batch 32), ``--epochs`` (default 1: one pass over the full train sets, ~6 CPU-minutes per
   OCNLI run of the tiny model), every train row (or a fixed random subset of ``--train-rows``,
   the same for every arm and seed), every dev row, ``--seeds``;
   ``--lr 1e-4,3e-4`` makes it a grid, the same for both arms, and each arm's best mean over
   seeds is selected per task (CLUE's own practice; selection and score both on dev, alike for
   both arms). CMRC2018 (trained on the trial set, the first ``--cmrc-dev`` dev questions, 1 seed,
   the default lr) for EM/F1. Each snapshot is fine-tuned on OCNLI with seed 1 (over the same
   grid): the MLM-accuracy-vs-downstream curve.
4. **comparison.json / comparison.md / curve.png**: per task the mean ± std over seeds of both
   arms, the delta, and a 95% bootstrap interval of the delta over dev examples (examples
   resampled with replacement, the same resample for both arms and every seed; the statistic is
   the mean-over-seeds accuracy difference), against the issue's goal (OCNLI +3.0, TNEWS +1.5).

Every stage leaves its output in ``--output`` and is skipped when rerun (resume).

**Recipe variants** (``--baseline DIR``, an earlier experiment's ``--output``): a config that
changes pretraining settings (masking, lr, model options, the pair mode...) reuses the baseline's
corpus and vocab (the data are prepared again from them with this config: seconds, so a
data-section change such as ``data.pair_mode`` is a variant like any other) and the baseline's
fine-tuning results of the random-init twin, which are copied only when the twin rebuilt for
this run has the baseline twin's weights (the twin depends on the model config and the vocab,
not on the prepared pairs) and the fine-tuning flags are the baseline's (``zhbert eval clue``
checks both again per seed). Only the pretrained arm is then pretrained and fine-tuned: about
half the time of a full experiment.

    python scripts/clue_experiment.py --budget-minutes 30 --output runs/mask30 \
        --config my_variant.yaml --baseline runs/clue_experiment --snapshots "" --lr 3e-4 --cmrc-dev 300
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(1, str(REPO))
import experiment_corpus  # noqa: E402

SHARED = experiment_corpus.SHARED
GOAL = {"ocnli": 3.0, "tnews": 1.5}  # points, mean over seeds (issue 14)


def sh(cmd: list, log: Path) -> float:
    t0 = time.time()
    print("+", " ".join(map(str, cmd)), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "DS_ACCELERATOR": "cpu",
           "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    with log.open("a") as f:
        rc = subprocess.call([str(c) for c in cmd], cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    if rc:
        raise SystemExit(f"command failed ({rc}), see {log}: {' '.join(map(str, cmd))}")
    return time.time() - t0


def results_of(out: Path) -> dict[str, dict]:
    """label -> results.json of an ``zhbert eval clue`` output dir (one or several models)."""
    found = {}
    for p in sorted(out.rglob("results.json")):
        r = json.loads(p.read_text())
        if "tasks" in r:
            found[r["label"]] = {**r, "_dir": str(p.parent)}
    return found


def _gold(task: str, clue: Path) -> list:
    f = {"ocnli": clue / "ocnli_public" / "dev.json", "tnews": clue / "tnews_public" / "dev.json"}[task]
    return [json.loads(x).get("label") for x in f.open(encoding="utf-8") if x.strip()]


def correctness(res: dict, task: str, gold: list) -> dict[str, np.ndarray]:
    """seed -> bool[dev rows with a gold label]: the selected point's dev predictions vs the gold
    labels, checked against the accuracy the run reported."""
    t = res["tasks"][task]
    out = {}
    for seed in t["seeds"]:
        d = Path(res["_dir"]) / task / t["selected"] / f"seed{seed}"
        pred = [json.loads(x)["label"] for x in (d / "dev_predictions.jsonl").open()]
        keep = [i for i, g in enumerate(gold) if g not in (None, "-")]
        c = np.array([str(pred[i]) == str(gold[i]) for i in keep])
        reported = json.loads((d / "result.json").read_text())["dev"]["accuracy"]
        if abs(c.mean() - reported) > 1e-9:
            raise SystemExit(f"{d}: recomputed accuracy {c.mean():.6f} != reported {reported:.6f}")
        out[str(seed)] = c
    return out


def _lr(task_result: dict) -> float:
    """The selected grid point's fine-tuning lr (results.json: protocol.selected.lr)."""
    return float(task_result["protocol"]["selected"]["lr"])


def bootstrap_delta(a: dict[str, np.ndarray], b: dict[str, np.ndarray], n: int, seed: int = 0) -> dict:
    """95% interval of mean_seeds(acc_a) - mean_seeds(acc_b) over dev resamples (same rows for all)."""
    A, B = np.stack(list(a.values())).astype(float), np.stack(list(b.values())).astype(float)  # [S, N]
    rng = np.random.default_rng(seed)
    rows = A.shape[1]
    diff = A.mean(0) - B.mean(0)  # [N] per-example difference of mean-over-seeds correctness
    stats = np.array([diff[rng.integers(0, rows, rows)].mean() for _ in range(n)])
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return {"delta": round(100 * diff.mean(), 2), "ci95": [round(100 * lo, 2), round(100 * hi, 2)],
            "resamples": n, "p_delta_le_0": round(float((stats <= 0).mean()), 4)}


def pretraining_inputs(corpus: Path, which: str) -> list[Path]:
    """The corpus files pretraining reads: the directory, or ("tasks") its CLUE train-text files."""
    if which == "all":
        return [corpus]
    files = sorted(corpus.glob("clue_*_train_text.txt"))
    if not files:
        raise SystemExit(f"{corpus}: no clue_*_train_text.txt files (scripts/experiment_corpus.py writes them)")
    return files


# The flags that decide the fine-tuning runs; a baseline's twin results are reused only under the same.
EVAL_FLAGS = ("tasks", "seeds", "epochs", "lr", "train_rows", "cmrc_dev", "clue_dir")


def eval_flags(args) -> dict:
    return {k: str(getattr(args, k)) for k in EVAL_FLAGS}


def reuse_baseline_twin(run: Path, base_eval: Path, eval_out: Path, flags: dict, base_flags: Optional[dict]) -> str:
    """Copy ``base_eval/random-init`` (a baseline's fine-tuning results of its random-init twin)
    to ``eval_out`` when they are this run's: the twin ``zhbert eval clue --random-twin`` builds
    for ``run`` has the baseline twin's weights (same config.json and vocab size: the init is
    seeded) and the fine-tuning flags are the baseline's. Returns what was done, for the log."""
    from zhbert.clue.protocol import weights_sha256
    from zhbert.clue.twin import random_twin
    from zhbert.hub.resolve import resolve_model_dir

    src, dst = base_eval / "random-init", eval_out / "random-init"
    if dst.exists():
        return f"{dst}: exists, kept"
    if not (src / "results.json").is_file():
        return f"{src}: no finished results, the twin is evaluated afresh"
    if base_flags is None:
        return f"{src}: its fine-tuning flags are not recorded (no comparison.json, or an older one), the twin is " \
               "evaluated afresh"
    if any(base_flags.get(k) != v for k, v in flags.items()):
        return f"{src}: made with other fine-tuning flags ({base_flags}), the twin is evaluated afresh"
    twin = random_twin(resolve_model_dir(str(run), what="--model"), eval_out / "_models" / "random-init")
    theirs = (json.loads((src / "results.json").read_text()).get("protocol") or {}).get("weights_sha256")
    if theirs != weights_sha256(twin):
        return f"{src}: another twin (weights {str(theirs)[:12]}), the twin is evaluated afresh"
    shutil.copytree(src, dst)
    return f"{src}: copied (same twin weights and flags)"


def check_clue_data(clue: Path, tasks: list[str]) -> None:
    """Every task's dev file is found under ``clue`` (``zhbert eval clue``'s own lookup), checked
    before any stage: otherwise a wrong ``--clue-dir`` shows only after the 30-minute pretraining."""
    from zhbert.clue.data import find_task_dir
    from zhbert.clue.tasks import TASKS
    from zhbert.errors import DataError

    for name in tasks:
        if name not in TASKS:
            raise SystemExit(f"--tasks: unknown task {name!r} (one of {', '.join(TASKS)})")
        try:
            find_task_dir(clue, TASKS[name])
        except DataError as e:
            raise SystemExit(f"--clue-dir {clue}: {e}") from None


def baseline_flags(base: Path) -> Optional[dict]:
    """The fine-tuning flags of a baseline experiment, from its comparison.json."""
    f = base / "comparison.json"
    if not f.is_file():
        return None
    return json.loads(f.read_text()).get("eval_flags")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="runs/clue_experiment")
    ap.add_argument("--budget-minutes", type=float, default=30.0, help="pretraining training-time budget")
    ap.add_argument("--config", default="configs/pretrain/cpu_30min.yaml")
    ap.add_argument("--snapshots", default="5,10,20", help="training minutes of the curve's snapshots ('' = none)")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--tasks", default="ocnli,tnews")
    ap.add_argument("--train-rows", type=int, default=0,
                    help="a fixed random subset of N train rows per task, the same for every arm and seed "
                         "(0 = the full train sets: the protocol)")
    ap.add_argument("--epochs", default="1")
    ap.add_argument("--lr", default="", help="fine-tuning lr grid for both arms, e.g. 1e-4,3e-4,1e-3 (best mean dev "
                    "score over seeds selected per arm and task; default: the size-aware default alone)")
    ap.add_argument("--cmrc-dev", type=int, default=500, help="CMRC2018 dev questions (0 = skip CMRC2018)")
    ap.add_argument("--corpus", choices=["all", "tasks"], default="all",
                    help="pretraining text: the whole corpus, or only the unlabeled CLUE train text (task-adaptive "
                         "pretraining, Gururangan et al. 2020); the vocab is fitted on the whole corpus either way, "
                         "so both settings share one random-init twin")
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--clue-dir", default=str(SHARED / "clue"))
    ap.add_argument("--pretrain-corpus", default=str(SHARED / "pretrain_corpus"),
                    help="the external pretraining text (../shared/data/pretrain_corpus); must hold files")
    ap.add_argument("--baseline", default="", help="an earlier experiment's --output: reuse its corpus, vocab, "
                    "prepared data and random-init results (a variant of the pretraining settings; see above)")
    args = ap.parse_args()

    out = (REPO / args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log, clue = out / "experiment.log", Path(args.clue_dir)
    times = json.loads((out / "times.json").read_text()) if (out / "times.json").is_file() else {}

    def stage(name: str, fn) -> None:
        if name in times:
            return
        t0 = time.time()
        fn()
        times[name] = round(time.time() - t0, 1)
        (out / "times.json").write_text(json.dumps(times, indent=2) + "\n")
        print(f"[experiment] {name}: {times[name]:.0f} s", flush=True)

    check_clue_data(clue, args.tasks.split(",") + (["cmrc2018"] if args.cmrc_dev else []))
    base = Path(args.baseline).resolve() if args.baseline else None
    src = base if base is not None else out
    corpus, vocab, data, run = src / "corpus" / "files", src / "corpus" / "vocab.txt", out / "data", out / "pretrain"
    if base is not None:
        for need in (corpus, vocab):
            if not need.exists():
                raise SystemExit(f"--baseline {base}: {need} not found (expected a finished clue_experiment.py "
                                 "output)")
    else:
        stage("corpus", lambda: experiment_corpus.build(corpus, clue, Path(args.pretrain_corpus)))
        stage("vocab", lambda: sh([sys.executable, "-m", "zhbert.cli", "vocab", "build", "--input", corpus,
                                   "--output", vocab, "--size", args.vocab_size], log))
    # prepared here even with a baseline: this config's data section (pair mode...) may differ from the baseline's
    stage("prepare", lambda: sh([sys.executable, "-m", "zhbert.cli", "prepare", "--config", args.config,
                                 "--input", *pretraining_inputs(corpus, args.corpus), "--output", data,
                                 "--vocab", vocab, "--overwrite"], log))
    snaps = [float(m) for m in args.snapshots.split(",") if m.strip()]
    stage("pretrain", lambda: sh([sys.executable, "scripts/pretrain.py", "--config", args.config,
                                  f"data.dir={data}", f"data.vocab={vocab}",
                                  f"data.input=[{','.join(map(str, pretraining_inputs(corpus, args.corpus)))}]",
                                  f"train.output_dir={run}", f"train.max_minutes={args.budget_minutes}",
                                  f"train.snapshot_minutes=[{','.join(map(str, snaps))}]", "wandb.mode=disabled"],
                                 log))
    common = ["--data-dir", clue, "--device", "cpu", "--wandb-mode", "disabled"]
    grid = ["--lr", args.lr] if args.lr else []  # OCNLI/TNEWS and the snapshots; CMRC2018 keeps the default lr
    cls = out / "clue"
    rows = ["--max-train-samples", args.train_rows] if args.train_rows else []
    if base is not None:
        for sub in ("clue", "clue_cmrc2018"):
            print(f"[experiment] baseline {sub}: "
                  + reuse_baseline_twin(run, base / sub, out / sub, eval_flags(args), baseline_flags(base)), flush=True)
    stage("eval_cls", lambda: sh([sys.executable, "-m", "zhbert.cli", "eval", "clue", "--model", run, "--random-twin",
                                  "--tasks", args.tasks, "--seeds", args.seeds, "--epochs", args.epochs,
                                  *rows, "--output", cls, *common, *grid], log))
    curve_dir = out / "curve"
    for m in snaps:
        snap = run / "snapshots" / f"min{m:g}".replace(".", "_")
        stage(f"eval_snapshot_{m:g}", lambda snap=snap, m=m: sh(
            [sys.executable, "-m", "zhbert.cli", "eval", "clue", "--model", snap, "--tasks", "ocnli", "--seeds", "1",
             "--epochs", args.epochs, *rows,
             "--output", curve_dir / f"min{m:g}", *common, *grid], log))
    if args.cmrc_dev:
        stage("eval_cmrc2018", lambda: sh(
            [sys.executable, "-m", "zhbert.cli", "eval", "clue", "--model", run, "--random-twin", "--tasks", "cmrc2018",
             "--seeds", "1", "--epochs", "1", "--max-seq-length", "256", "--max-eval-samples", args.cmrc_dev,
             "--output", out / "clue_cmrc2018", *common], log))
    report(out, args, times, snaps, corpus.parent)
    return 0


def report(out: Path, args, times: dict, snaps: list[float], corpus_dir: Path) -> None:
    clue = Path(args.clue_dir)
    res = results_of(out / "clue")
    rand_label = next(k for k in res if k.startswith("random-init"))
    pre_label = next(k for k in res if k != rand_label)
    pre, rnd = res[pre_label], res[rand_label]
    tasks = {}
    for task in args.tasks.split(","):
        gold = _gold(task, clue)
        a, b = correctness(pre, task, gold), correctness(rnd, task, gold)
        tp, tr = pre["tasks"][task], rnd["tasks"][task]
        tasks[task] = {
            "pretrained": {"mean": round(100 * tp["mean"], 2), "std": round(100 * tp["std"], 2), "lr": _lr(tp),
                           "seeds": {s: round(100 * float(c.mean()), 2) for s, c in a.items()}},
            "random_init": {"mean": round(100 * tr["mean"], 2), "std": round(100 * tr["std"], 2), "lr": _lr(tr),
                            "seeds": {s: round(100 * float(c.mean()), 2) for s, c in b.items()}},
            "majority": round(100 * tp["majority_rate"], 2) if tp.get("majority_rate") is not None else None,
            "dev_rows": int(len(next(iter(a.values())))), "train_rows": tp["train_size"],
            "bootstrap": bootstrap_delta(a, b, args.bootstrap),
            "goal": GOAL.get(task)}
        tasks[task]["delta"] = round(tasks[task]["pretrained"]["mean"] - tasks[task]["random_init"]["mean"], 2)
        tasks[task]["goal_met"] = tasks[task]["delta"] >= GOAL[task] if task in GOAL else None
    cmrc = {}
    if (out / "clue_cmrc2018").is_dir():
        for label, r in results_of(out / "clue_cmrc2018").items():
            t = r["tasks"]["cmrc2018"]
            cmrc["random_init" if label.startswith("random-init") else "pretrained"] = {
                k: round(100 * t["scores"][k]["mean"], 2) for k in t["metrics"]}  # em, f1 (1 seed)
    meta = json.loads((out / "pretrain" / "metrics.jsonl").read_text().splitlines()[-1])
    curve = []
    for m in snaps:
        info = json.loads((out / "pretrain" / "snapshots" / f"min{m:g}".replace(".", "_") / "snapshot.json").read_text())
        r = next(iter(results_of(out / "curve" / f"min{m:g}").values()))
        curve.append({"minutes": m, "step": info["step"], "tokens": info["tokens"],
                      "heldout_mlm_acc": info["record"].get("eval/mlm_acc"),
                      "heldout_mlm_loss": info["record"].get("eval/mlm_loss"),
                      "ocnli_seed1": round(100 * r["tasks"]["ocnli"]["mean"], 2)})
    curve.append({"minutes": args.budget_minutes, "step": meta["step"], "tokens": meta["tokens"],
                  "heldout_mlm_acc": meta.get("eval/mlm_acc"), "heldout_mlm_loss": meta.get("eval/mlm_loss"),
                  "ocnli_seed1": tasks["ocnli"]["pretrained"]["seeds"].get("1") if "ocnli" in tasks else None})
    summary = {"budget_minutes": args.budget_minutes, "config": args.config, "corpus": args.corpus, "seeds": args.seeds,
               "train_rows": args.train_rows, "epochs": args.epochs, "stage_seconds": times,
               "baseline": args.baseline or None, "eval_flags": eval_flags(args),
               "corpus_stats": json.loads((corpus_dir / "corpus_stats.json").read_text())
               if (corpus_dir / "corpus_stats.json").is_file() else None,
               "pretraining": {"steps": meta["step"], "tokens": meta["tokens"], "train_s": meta["train_s"],
                               "tokens_per_s": round(meta["tokens"] / meta["train_s"], 1),
                               "heldout_mlm_loss": meta.get("eval/mlm_loss"), "heldout_mlm_acc": meta.get("eval/mlm_acc")},
               "tasks": tasks, "cmrc2018": cmrc, "random_init_ocnli_seed1":
                   tasks["ocnli"]["random_init"]["seeds"].get("1") if "ocnli" in tasks else None,
               "curve": curve}
    (out / "comparison.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    lines = [f"Pretraining: {args.budget_minutes:g} training minutes, {meta['step']} steps, {meta['tokens']:,} tokens "
             f"({summary['pretraining']['tokens_per_s']:.0f} tokens/s), held-out MLM acc "
             f"{100 * meta.get('eval/mlm_acc', 0):.2f}%. Fine-tuning: "
             + (f"a fixed random subset of {args.train_rows} train rows" if args.train_rows else "full train sets")
             + f", full dev, "
             f"seeds {args.seeds}, {args.epochs} epochs, size-aware defaults (tiny: batch 32), "
             + (f"lr grid {args.lr} (the best mean over seeds selected per arm and task)." if args.lr else "lr 3e-4."),
             "", "| task | pretrained | random init | majority | delta | 95% bootstrap CI | goal | selected lr (pretrained / random) |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for task, t in tasks.items():
        bs = t["bootstrap"]
        goal = "" if t["goal"] is None else (f"+{t['goal']:.1f}: " + ("met" if t["goal_met"] else "not met"))
        lines.append(f"| {task.upper()} | {t['pretrained']['mean']:.2f} ± {t['pretrained']['std']:.2f} | "
                     f"{t['random_init']['mean']:.2f} ± {t['random_init']['std']:.2f} | {t['majority']} | "
                     f"{t['delta']:+.2f} | [{bs['ci95'][0]:+.2f}, {bs['ci95'][1]:+.2f}] | {goal} | "
                     f"{t['pretrained']['lr']:g} / {t['random_init']['lr']:g} |")
    for arm, v in cmrc.items():
        lines.append(f"| CMRC2018 ({arm}) | " + ", ".join(f"{k} {x}" for k, x in v.items()) + " | | | | | | |")
    lines += ["", "| training minutes | step | tokens | held-out MLM acc % | OCNLI dev % (seed 1) |", "|---:|---:|---:|---:|---:|",
              f"| 0 (random init) | 0 | 0 | – | {summary['random_init_ocnli_seed1']} |"]
    lines += [f"| {c['minutes']:g} | {c['step']} | {c['tokens']:,} | {100 * (c['heldout_mlm_acc'] or 0):.2f} | "
              f"{c['ocnli_seed1']} |" for c in curve]
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    plot_curve(out / "curve.png", curve, summary["random_init_ocnli_seed1"])
    print("\n".join(lines))


def plot_curve(path: Path, curve: list[dict], random_ocnli) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    mins = [c["minutes"] for c in curve]
    ax1.plot(mins, [100 * (c["heldout_mlm_acc"] or 0) for c in curve], "o-", label="held-out MLM acc")
    ax1.plot(mins, [c["ocnli_seed1"] for c in curve], "s-", label="OCNLI dev (seed 1)")
    if random_ocnli is not None:
        ax1.axhline(random_ocnli, color="gray", ls="--", label="OCNLI, random init")
    ax1.set_xlabel("training minutes")
    ax1.set_ylabel("%")
    ax1.legend()
    ax2.plot([100 * (c["heldout_mlm_acc"] or 0) for c in curve], [c["ocnli_seed1"] for c in curve], "o-")
    for c in curve:
        ax2.annotate(f"{c['minutes']:g} min", (100 * (c["heldout_mlm_acc"] or 0), c["ocnli_seed1"]))
    if random_ocnli is not None:
        ax2.axhline(random_ocnli, color="gray", ls="--")
    ax2.set_xlabel("held-out MLM accuracy %")
    ax2.set_ylabel("OCNLI dev % (seed 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    experiment_corpus.run_main(main)
