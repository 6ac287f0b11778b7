#!/usr/bin/env python
"""The issue-14 ablation: one change at a time from configs/pretrain/cpu_30min.yaml.

    python scripts/ablate.py --budget-minutes 5 --output runs/ablate [--rows recipe,char,...]

Every row pretrains the tiny model for the same wall-clock training budget (``train.max_minutes``,
``train.schedule: time``: warmup and decay follow the budget, so every row ends fully decayed),
on the corpus of ``scripts/experiment_corpus.py`` (prepared once per vocab / pair mode / length),
then probes it: OCNLI and TNEWS fine-tuned on a fixed random subset of ``--probe-train`` train
rows (``random.Random(0)``, the same for every row), ``--probe-seeds`` (seed 1 by default), lr 3e-4 / batch 32 / 2 epochs
(configs/clue/sizes.yaml: tiny), scored on the full dev sets. Recorded per row: tokens/s (real tokens over training seconds), held-out MLM loss
and accuracy at the budget (the trainer's final evaluation on the validation split, fixed masks),
OCNLI and TNEWS dev accuracy. The ``random`` row is the recipe's architecture from random init
(the floor every row has to beat).

A row whose ``row.json`` exists is not run again (resume). ``ablation.md``/``ablation.json`` are
rewritten after every row.
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
sys.path.insert(0, str(REPO / "scripts"))
from experiment_corpus import SHARED  # noqa: E402

RECIPE = "configs/pretrain/cpu_30min.yaml"
BASE_VOCAB = SHARED / "bert_base_chinese" / "vocab.txt"

# name: (what changes, pretrain overrides, data spec changes: vocab / pair_mode / seq / short_seq_prob)
# the final recipe's data: SOP pairs, short_seq_prob 0.1 (rows that change nothing else in the data)
SOP = {"pair_mode": "sop", "short": 0.1}

ROWS: dict[str, tuple[str, list[str], dict]] = {
    "recipe": ("the recipe (configs/pretrain/cpu_30min.yaml)", [], SOP),
    "random": ("random init, no pretraining", [], {}),
    "char": ("masking.strategy char", ["masking.strategy=char"], {}),
    "nsp": ("pair_mode nsp (Google pairs, short_seq_prob 0.1)", [], {"pair_mode": "nsp", "short": 0.1}),
    "mask30": ("mask_prob 0.30", ["masking.mask_prob=0.3"], {}),
    "postln": ("post-LN (BERT's)", ["model.pre_layernorm=false"], {}),
    "lr5e-4": ("peak lr 5e-4", ["train.lr=5e-4"], {}),
    "vocab21k": ("bert-base-chinese vocab (21,128)", [], {"vocab": "base"}),
    "dropout": ("dropout 0.1", ["model.hidden_dropout_prob=0.1", "model.attention_probs_dropout_prob=0.1"], {}),
    "ngram": ("masking.strategy ngram (MacBERT n-grams)", ["masking.strategy=ngram"], {}),
    "sop": ("pair_mode sop", [], SOP),
    "batch32": ("micro batch 32 (vs 64)", ["train.micro_batch_size=32"], {}),
    "noclip": ("no gradient clipping", ["train.clip_grad_norm=0"], {}),
    "seq64": ("max_seq_length 64", [], {"seq": 64}),
    # second round: from micro batch 16 (4x the optimizer steps of the recipe's 64 in the budget)
    "b16": ("micro batch 16", ["train.micro_batch_size=16"], {}),
    "b16_mask40": ("micro batch 16, mask_prob 0.40", ["train.micro_batch_size=16", "masking.mask_prob=0.4"], {}),
    "b32_seq64": ("max_seq_length 64, micro batch 32 (the tokens of b16)", ["train.micro_batch_size=32"],
                  {"seq": 64}),
    "b16_char": ("micro batch 16, char masking", ["train.micro_batch_size=16", "masking.strategy=char"], {}),
    "b16_postln": ("micro batch 16, post-LN", ["train.micro_batch_size=16", "model.pre_layernorm=false"], {}),
    "b16_nsp": ("micro batch 16, pair_mode nsp (short_seq_prob 0.1)", ["train.micro_batch_size=16"],
                {"pair_mode": "nsp", "short": 0.1}),
    "b16_sop": ("micro batch 16, pair_mode sop (short_seq_prob 0.1)", ["train.micro_batch_size=16"],
                SOP),
    "bf16": ("the recipe with deepspeed.precision bf16 (needs AVX-512 BF16 / AMX)", ["deepspeed.precision=bf16"],
             SOP),
    "b16_lr2e-3": ("micro batch 16, lr 2e-3", ["train.micro_batch_size=16", "train.lr=2e-3"], {}),
    "ramp": ("the recipe with a batch ramp 16 -> 64 (accumulation 1 -> 4 over the first 60% of the budget)",
             ["train.gradient_accumulation_steps=4", "train.batch_ramp_start=1", "train.batch_ramp_fraction=0.6"],
             SOP),
    "autocast": ("the recipe with deepspeed.autocast bf16 (fp32 weights; needs AVX-512 BF16 / AMX)",
                 ["deepspeed.autocast=bf16"], SOP),
    # one change each from the final recipe (micro batch 16, SOP), for the rows the first rounds
    # measured from an earlier recipe (pair mode none, micro batch 64) or not at all
    "r_dropout": ("the recipe with dropout 0.1", ["model.hidden_dropout_prob=0.1",
                                                  "model.attention_probs_dropout_prob=0.1"],
                  SOP),
    "r_postln": ("the recipe with post-LN (BERT's)", ["model.pre_layernorm=false"], SOP),
    "r_lr5e-4": ("the recipe with peak lr 5e-4", ["train.lr=5e-4"], SOP),
    "r_lr2e-3": ("the recipe with peak lr 2e-3", ["train.lr=2e-3"], SOP),
    "r_noclip": ("the recipe without gradient clipping", ["train.clip_grad_norm=0"], SOP),
    "r_mask30": ("the recipe with mask_prob 0.30", ["masking.mask_prob=0.3"], SOP),
    "r_ngram": ("the recipe with masking.strategy ngram (MacBERT n-grams of whole words)", ["masking.strategy=ngram"],
                SOP),
    "r_vocab21k": ("the recipe with bert-base-chinese's vocab (21,128) instead of the fitted 8,000", [],
                   {**SOP, "vocab": "base"}),
    # 2026-12-07: the choices table 1 backed (5 minutes, from the first draft), again from the
    # recipe as it is now (peak lr 5e-4)
    "r_char": ("the recipe with masking.strategy char", ["masking.strategy=char"], SOP),
    "r_nopair": ("the recipe with pair_mode none (one packed segment, MLM only)", [], {}),
    "r_nsp": ("the recipe with pair_mode nsp (Google pairs, short_seq_prob 0.1)", [], {"pair_mode": "nsp", "short": 0.1}),
    "r_mask40": ("the recipe with mask_prob 0.40", ["masking.mask_prob=0.4"], SOP),
    # 2026-12-07, evening: the recipe's mask_prob is 0.40 since (three pretraining seeds at 30
    # minutes), so r_mask40 is the recipe itself now; the r_* rows of tables 4 and 5 were measured from 0.15
    "r_mask15": ("the recipe with mask_prob 0.15 (the recipe's until 2026-12-07)", ["masking.mask_prob=0.15"], SOP),
    "r_mask25": ("the recipe with mask_prob 0.25", ["masking.mask_prob=0.25"], SOP),
    "r_b64": ("the recipe with micro batch 64 (the first draft's)", ["train.micro_batch_size=64"], SOP),
    "r_seq64": ("the recipe with max_seq_length 64, micro batch 32 (the tokens of a step)",
                ["train.micro_batch_size=32"], {**SOP, "seq": 64}),
}


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "DS_ACCELERATOR": "cpu",
            "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}


def sh(cmd: list, log: Path) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    with log.open("a") as f:
        rc = subprocess.call([str(c) for c in cmd], cwd=REPO, env=env(), stdout=f, stderr=subprocess.STDOUT)
    if rc:
        raise SystemExit(f"command failed ({rc}), see {log}: {' '.join(map(str, cmd))}")


def set_recipe(path: str) -> None:
    """The config the rows start from (module-level: every pretraining and preparation reads it)."""
    global RECIPE
    if not (REPO / path).is_file() and not Path(path).is_file():
        raise SystemExit(f"--recipe {path}: no such file")
    RECIPE = str(Path(path).resolve()) if Path(path).is_file() else path


def data_dir(out: Path, corpus: Path, vocab: Path, spec: dict, log: Path) -> Path:
    pm, seq, short = spec.get("pair_mode", "none"), spec.get("seq", 128), spec.get("short", 0.0)
    v = BASE_VOCAB if spec.get("vocab") == "base" else vocab
    d = out / "data" / f"{'base' if v == BASE_VOCAB else 'fit'}_{pm}_{seq}"
    if not (d / "zhbert_prepare.json").is_file():
        sh([sys.executable, "-m", "zhbert.cli", "prepare", "--config", RECIPE, "--input", corpus, "--output", d,
            "--vocab", v, "--pair-mode", pm, "--max-seq-length", seq, "--workers", 2,
            f"data.short_seq_prob={short}", "--overwrite"], log)
    return d


def probe(model: Path, out: Path, clue: Path, n_train: int, seeds: list[int], log: Path) -> dict:
    """OCNLI and TNEWS dev accuracy (%) of ``model``, mean over ``seeds``, with each seed's figure.

    Seeds already finished under ``out`` are reused by ``zhbert eval clue`` (after checking that
    they were made by the same weights), so asking for more seeds runs only the new ones."""
    sh([sys.executable, "-m", "zhbert.cli", "eval", "clue", "--model", model, "--tasks", "ocnli,tnews",
           "--data-dir", clue, "--output", out, "--seeds", ",".join(map(str, seeds)), "--lr", "3e-4",
           "--batch-size", "32", "--epochs", "2", "--max-train-samples", n_train, "--device", "cpu",
           "--wandb-mode", "disabled"], log)
    res = json.loads((out / "results.json").read_text())
    tasks = {t: res["tasks"][t] for t in ("ocnli", "tnews")}
    return {**{t: round(100 * r["mean"], 2) for t, r in tasks.items()},
            "std": {t: round(100 * r["std"], 2) for t, r in tasks.items()},
            "seeds": {t: {s: round(100 * v["dev"]["accuracy"], 2) for s, v in r["seeds"].items()}
                      for t, r in tasks.items()}}


def probe_seeds(row: dict, task: str = "ocnli") -> set[str]:
    """The fine-tuning seeds a row's probe figure for ``task`` is the mean of (rows from before
    ``--probe-seeds`` ran seed 1 alone)."""
    return set(row["probe"].get("seeds", {}).get(task, {"1": None}))


def data_overrides(spec: dict) -> list[str]:
    """The data section the prepared directory was made with (pretrain refuses a mismatch)."""
    return [f"data.pair_mode={spec.get('pair_mode', 'none')}", f"data.max_seq_length={spec.get('seq', 128)}",
            f"data.short_seq_prob={spec.get('short', 0.0)}"]


def pretrain_row(name: str, overrides: list[str], data: Path, vocab: Path, out: Path, budget: float,
                 corpus: Path, log: Path) -> dict:
    run = out / "pretrain"
    shutil.rmtree(run, ignore_errors=True)
    sh([sys.executable, "scripts/pretrain.py", "--config", RECIPE, f"data.dir={data}", f"data.vocab={vocab}",
        f"data.input=[{corpus}]", f"train.output_dir={run}", f"train.max_minutes={budget}",
        "train.resume=never", "wandb.mode=disabled", "train.eval_every=1000000",
        "train.checkpoint_every=1000000", "train.log_every=20", *overrides], log)
    recs = [json.loads(x) for x in (run / "metrics.jsonl").open()]
    last = recs[-1]
    return {"steps": last["step"], "tokens": last["tokens"], "train_s": round(last["train_s"], 1),
            "tokens_per_s": round(last["tokens"] / last["train_s"], 1),
            "heldout_mlm_loss": round(last["eval/mlm_loss"], 4), "heldout_mlm_acc": round(last["eval/mlm_acc"], 4),
            "model": str(run)}


def write_tables(out: Path, rows: dict, args) -> None:
    (out / "ablation.json").write_text(json.dumps({"budget_minutes": args.budget_minutes,
                                                   "recipe": RECIPE, "probe_train_rows": args.probe_train, "rows": rows},
                                                  indent=2, ensure_ascii=False) + "\n")
    lines = [f"Budget {args.budget_minutes:g} min of training per row; probes: a fixed random subset of "
             f"{args.probe_train} train rows, lr 3e-4, bs 32, 2 epochs, full dev; dev accuracy, mean ± std "
             "over the fine-tuning seeds in brackets.", "",
             "| row | change | tokens/s | steps | held-out MLM loss | MLM acc % | OCNLI dev % | TNEWS dev % |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]

    def dev(r: dict, task: str) -> str:
        seeds = probe_seeds(r, task)
        spread = f" ± {r['probe']['std'][task]:.2f}" if len(seeds) > 1 else ""
        return f"{r['probe'][task]:.2f}{spread} ({','.join(sorted(seeds))})"

    for name, r in rows.items():
        p = r.get("pretrain", {})
        f = (lambda k, fmt: fmt.format(p[k]) if k in p else "–")
        acc = f"{100 * p['heldout_mlm_acc']:.2f}" if "heldout_mlm_acc" in p else "–"
        lines.append(f"| {name} | {r['change']} | {f('tokens_per_s', '{:.0f}')} | {f('steps', '{}')} | "
                     f"{f('heldout_mlm_loss', '{:.3f}')} | {acc} | {dev(r, 'ocnli')} | {dev(r, 'tnews')} |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default="runs/ablate")
    ap.add_argument("--budget-minutes", type=float, default=10.0)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--probe-train", type=int, default=4000)
    ap.add_argument("--probe-seeds", default="1",
                    help="fine-tuning seeds of the probes, comma-separated; a finished row probed with fewer "
                         "seeds gets the missing ones (its pretraining is not redone)")
    ap.add_argument("--clue-dir", default=str(SHARED / "clue"))
    ap.add_argument("--corpus", default=None, help="corpus dir (default: OUTPUT/corpus/files, built if missing)")
    ap.add_argument("--recipe", default=RECIPE,
                    help="the config every row changes one thing of (an older recipe, to reproduce a table "
                         "measured with it: docs/pretraining.md names the file)")
    args = ap.parse_args()
    set_recipe(args.recipe)
    seeds = [int(x) for x in args.probe_seeds.split(",")]
    out = (REPO / args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "ablate.log"
    corpus = Path(args.corpus) if args.corpus else out / "corpus" / "files"
    vocab = corpus.parent / "vocab.txt"
    if not corpus.is_dir():
        import experiment_corpus
        experiment_corpus.build(corpus, Path(args.clue_dir))
    if not vocab.is_file():
        sh([sys.executable, "-m", "zhbert.cli", "vocab", "build", "--input", corpus, "--output", vocab,
            "--size", "8000"], log)
    rows: dict = {}
    if (out / "ablation.json").is_file():
        rows = json.loads((out / "ablation.json").read_text())["rows"]
    for name in args.rows.split(","):
        change, overrides, spec = ROWS[name]
        row_dir = out / name
        if (row_dir / "row.json").is_file():
            row = json.loads((row_dir / "row.json").read_text())
            if not set(map(str, seeds)) <= probe_seeds(row):
                model = row_dir / "random_init" if name == "random" else Path(row["pretrain"]["model"])
                row["probe"] = probe(model, row_dir / "clue", Path(args.clue_dir), args.probe_train,
                                     sorted(set(seeds) | set(map(int, probe_seeds(row)))), log)
                (row_dir / "row.json").write_text(json.dumps(row, indent=2) + "\n")
                write_tables(out, {**rows, name: row}, args)
            rows[name] = row
            continue
        row_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        row: dict = {"change": change, "overrides": overrides}
        if name == "random":  # no data: the twin of the recipe row's model
            from zhbert.clue.twin import random_twin
            from zhbert.hub import resolve_model_dir

            ref = json.loads((out / "recipe" / "row.json").read_text())["pretrain"]["model"]
            twin = random_twin(resolve_model_dir(ref), row_dir / "random_init")
            shutil.rmtree(row_dir / "clue", ignore_errors=True)
            row["probe"] = probe(twin, row_dir / "clue", Path(args.clue_dir), args.probe_train, seeds, log)
        else:
            d = data_dir(out, corpus, vocab, spec, log)
            v = BASE_VOCAB if spec.get("vocab") == "base" else vocab
            row["data"] = str(d)
            row["pretrain"] = pretrain_row(name, overrides + data_overrides(spec), d, v, row_dir, args.budget_minutes, corpus, log)
            shutil.rmtree(row_dir / "clue", ignore_errors=True)
            row["probe"] = probe(Path(row["pretrain"]["model"]), row_dir / "clue", Path(args.clue_dir),
                                 args.probe_train, seeds, log)
        row["wall_s"] = round(time.time() - t0, 1)
        (row_dir / "row.json").write_text(json.dumps(row, indent=2) + "\n")
        rows[name] = row
        write_tables(out, rows, args)
        print(f"[ablate] {name}: {json.dumps(row)}", flush=True)
    write_tables(out, rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
