#!/usr/bin/env python
"""Does our pretraining help downstream? Tiny BERT pretrained vs random init on TNEWS + OCNLI.

    python scripts/clue_experiment.py --budget-minutes 10 --output runs/clue_experiment

1. Corpus: corpora/sample plus the *train* text of TNEWS (titles, 8 per pseudo-document) and
   OCNLI (each premise followed by its hypotheses), from ../shared/data/clue. Dev text is
   never used for pretraining.
2. ``zhbert prepare`` with the bert-base-chinese vocab, then ``scripts/pretrain.py`` with
   configs/pretrain/tiny.yaml for a fixed CPU budget: a 30-step calibration run measures the
   step time, the real run gets ``max_steps`` to fill the rest of the budget (so the LR
   schedule completes), and a watchdog stops it at the budget in any case (the newest complete
   checkpoint is used).
3. The same architecture from random init (seed 42), saved with ``save_pretrained``.
4. ``zhbert eval clue`` for both on TNEWS and OCNLI with an identical fine-tuning budget
   (--max-train-samples, --epochs, --max-eval-samples); prints and writes comparison.md.
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

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def write_clue_corpus(clue_dir: Path, out: Path) -> dict:
    """BERT format (one sentence per line, blank line between documents) from train files."""
    docs: list[list[str]] = []
    titles = [json.loads(x)["sentence"] for x in (clue_dir / "tnews_public" / "train.json").open(encoding="utf-8")]
    docs += [titles[i:i + 8] for i in range(0, len(titles), 8)]
    by_premise: dict[str, list[str]] = {}
    for x in (clue_dir / "ocnli_public" / "train.50k.json").open(encoding="utf-8"):
        r = json.loads(x)
        by_premise.setdefault(r["sentence1"], []).append(r["sentence2"])
    docs += [[p, *hs] for p, hs in by_premise.items()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join("\n".join(d) for d in docs) + "\n", encoding="utf-8")
    return {"tnews_titles": len(titles), "ocnli_premises": len(by_premise), "documents": len(docs)}


def run(cmd: list[str], timeout: float | None = None, **kw) -> float:
    t0 = time.time()
    print("+", " ".join(map(str, cmd)), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "DS_ACCELERATOR": "cpu",
           "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([str(c) for c in cmd], cwd=REPO, env=env, **kw)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"budget reached after {time.time() - t0:.0f}s: stopping {cmd[1]}", flush=True)
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    else:
        if proc.returncode != 0:
            sys.exit(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}")
    return time.time() - t0


def pretrain_overrides(data: Path, vocab: Path, corpus: list[Path], out: Path, steps: int) -> list[str]:
    return [f"data.dir={data}", f"data.vocab={vocab}", f"data.input=[{','.join(map(str, corpus))}]",
            f"train.output_dir={out}", f"train.max_steps={steps}", f"train.warmup_steps={max(1, steps // 10)}",
            f"train.checkpoint_every={max(10, steps // 4)}", "train.keep_last=2", "train.log_every=10",
            f"train.eval_every={max(10, steps // 2)}", "train.eval_batches=5", "wandb.mode=disabled",
            "train.resume=never"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="runs/clue_experiment")
    ap.add_argument("--budget-minutes", type=float, default=10.0, help="pretraining CPU wall-clock budget")
    ap.add_argument("--clue-dir", default=str(SHARED / "clue"))
    ap.add_argument("--vocab", default=str(SHARED / "bert_base_chinese" / "vocab.txt"))
    ap.add_argument("--pretrain-steps", type=int, default=None,
                    help="fixed pretraining steps (skips the calibration run; the budget still stops it)")
    ap.add_argument("--tasks", default="tnews,ocnli")
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--max-train-samples", type=int, default=3000)
    ap.add_argument("--max-eval-samples", type=int, default=1000)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--lr", type=float, default=1e-4, help="fine-tuning lr (tiny models want more than 2e-5)")
    ap.add_argument("--max-seq-length", type=int, default=64)
    ap.add_argument("--eval-every", type=int, default=50)
    args = ap.parse_args()

    out = (REPO / args.output).resolve()
    clue_dir, vocab = Path(args.clue_dir), Path(args.vocab)
    for p in (clue_dir / "tnews_public" / "train.json", clue_dir / "ocnli_public" / "train.50k.json", vocab):
        if not p.is_file():
            sys.exit(f"missing {p}")
    t_start = time.time()
    corpus = [REPO / "corpora" / "sample" / "sample_bert.txt", out / "corpus" / "clue_train_text.txt"]
    stats = write_clue_corpus(clue_dir, corpus[1])
    data = out / "data"
    if not (data / "zhbert_prepare.json").is_file():
        t_prep = run([sys.executable, "-m", "zhbert.cli", "prepare", "--config", "configs/pretrain/tiny.yaml",
                      "--input", *corpus, "--output", data, "--vocab", vocab, "--max-seq-length", "128",
                      "--overwrite"])
    else:
        t_prep = 0.0
    budget = 60 * args.budget_minutes
    if args.pretrain_steps:
        t_cal, left, steps = 0.0, budget, args.pretrain_steps
    else:  # calibration: 30 steps, read samples/s from metrics.jsonl
        calib = out / "calib"
        shutil.rmtree(calib, ignore_errors=True)
        t_cal = run([sys.executable, "scripts/pretrain.py", "--config", "configs/pretrain/tiny.yaml",
                     *pretrain_overrides(data, vocab, corpus, calib, 30)], timeout=budget)
        recs = [json.loads(x) for x in (calib / "metrics.jsonl").open() if '"samples_per_s"' in x]
        sps = recs[-1]["samples_per_s"]
        left = max(60.0, budget - t_cal - 45)  # 45 s for start-up and the final save
        steps = max(50, int(left * sps / 16))  # micro_batch_size 16 in tiny.yaml
        print(f"calibration: {sps:.1f} samples/s -> max_steps={steps} for {left:.0f}s", flush=True)
    pre = out / "pretrain"
    shutil.rmtree(pre, ignore_errors=True)
    t_pre = run([sys.executable, "scripts/pretrain.py", "--config", "configs/pretrain/tiny.yaml",
                 *pretrain_overrides(data, vocab, corpus, pre, steps)], timeout=left + 60)

    from zhbert.hub import resolve_model_dir

    pretrained = resolve_model_dir(str(pre))
    import torch

    from zhbert.model.modeling import BertConfig, BertForPreTraining

    rand = out / "random_init"
    torch.manual_seed(42)
    BertForPreTraining(BertConfig.from_pretrained(pretrained)).save_pretrained(rand)
    shutil.copy(pretrained / "vocab.txt", rand / "vocab.txt")

    rows = {}
    for name, model in (("pretrained", pretrained), ("random_init", rand)):
        res_dir = out / f"clue_{name}"
        run([sys.executable, "-m", "zhbert.cli", "eval", "clue", "--model", model, "--tasks", args.tasks,
             "--data-dir", clue_dir, "--output", res_dir, "--seeds", args.seeds, "--epochs", str(args.epochs),
             "--lr", str(args.lr), "--batch-size", "32", "--max-seq-length", str(args.max_seq_length),
             "--max-train-samples", str(args.max_train_samples), "--max-eval-samples", str(args.max_eval_samples),
             "--eval-every", str(args.eval_every), "--device", "cpu", "--wandb-mode", "disabled"], stdout=subprocess.DEVNULL)
        rows[name] = json.loads((res_dir / "results.json").read_text())
    metrics = [json.loads(x) for x in (pre / "metrics.jsonl").open()]
    last = metrics[-1]
    tasks = list(rows["pretrained"]["tasks"])
    lines = ["| model | " + " | ".join(t.upper() for t in tasks) + " | Avg |", "|---" * (len(tasks) + 2) + "|"]
    for name, r in rows.items():
        cells = [f"{100 * r['tasks'][t]['max']:.2f} ({100 * r['tasks'][t]['mean']:.2f})" for t in tasks]
        avg = r["clue_average"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * avg['max']:.2f} ({100 * avg['mean']:.2f}) |")
    summary = {
        "corpus": stats, "prepare_s": round(t_prep, 1), "pretrain_s": round(t_cal + t_pre, 1),
        "pretrain_steps": last.get("step"), "pretrain_checkpoint": str(pretrained),
        "final_pretrain_record": last, "finetune": vars(args), "total_s": round(time.time() - t_start, 1),
        "results": {n: {t: r["tasks"][t] for t in tasks} for n, r in rows.items()},
    }
    (out / "comparison.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    (out / "comparison.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(json.dumps({k: summary[k] for k in ("pretrain_steps", "pretrain_s", "total_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
