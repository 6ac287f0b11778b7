"""`zhbert eval clue`: resolve the model, fine-tune every (task, seed), write the results.

A rerun with the same ``--output`` skips every (task, seed) whose ``result.json`` exists, so
an interrupted evaluation continues where it stopped. Tasks without a train file (several
are missing from the offline copy of CLUE) are reported under ``skipped`` with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Optional

from zhbert.clue import report
from zhbert.clue.data import load_task
from zhbert.clue.metrics import clue_average, summarize_seeds
from zhbert.clue.tasks import ClueTaskConfig, TaskSpec, load_task_config
from zhbert.errors import CheckpointError, DataError
from zhbert.hub.resolve import resolve_model_dir

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "clue"


def load_model_tokenizer(model_dir: Path):
    """Tokenizer of the model dir, checked against the embedding matrix size."""
    from zhbert.model.modeling import BertConfig
    from zhbert.prep.tokenizer import ChineseTokenizer

    tok = ChineseTokenizer.from_dir(model_dir)
    cfg = BertConfig.from_pretrained(model_dir)
    if tok.vocab_size != cfg.vocab_size:
        raise CheckpointError(f"{model_dir}: vocab.txt has {tok.vocab_size} tokens but the model's embeddings "
                              f"have {cfg.vocab_size} rows (config.json vocab_size); the vocab does not "
                              "belong to this checkpoint")
    return tok


def task_config(spec: TaskSpec, overrides: list[str], config_dir: Optional[Path] = None) -> ClueTaskConfig:
    path = (config_dir or CONFIG_DIR) / f"{spec.name}.yaml"
    return load_task_config(path if path.is_file() else None, overrides)


class _Wandb:
    """One wandb run per (task, seed) plus a summary run; nothing at all when disabled."""

    def __init__(self, mode: str, output: Path, group: str):
        self.mode, self.dir, self.group = mode, output, group

    def init(self, name: str, config: dict):
        if self.mode == "disabled":
            return None
        import wandb

        return wandb.init(mode=self.mode, project="zhbert-clue", name=name, group=self.group,
                          dir=str(self.dir), config=config, reinit="create_new")


def run_clue(model: str, tasks: list[TaskSpec], data_dir: str | Path, output: str | Path,
             seeds: list[int], overrides: Optional[list[str]] = None, max_train_samples: Optional[int] = None,
             max_eval_samples: Optional[int] = None, device: str = "cpu", use_deepspeed: bool = False,
             wandb_mode: str = "offline", explicit_tasks: bool = True, config_dir: Optional[Path] = None) -> dict:
    """Fine-tune and evaluate ``tasks`` x ``seeds``; write and return results.json's content."""
    from tqdm import tqdm

    t0 = time.time()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if not Path(data_dir).is_dir():
        raise DataError(f"{data_dir}: CLUE data directory not found (expected <task>_public/ folders inside)")
    model_dir = resolve_model_dir(model, what="--model")
    tokenizer = load_model_tokenizer(model_dir)
    wb = _Wandb(wandb_mode, output, group=output.name)
    results: dict = {"model": str(model), "model_dir": str(model_dir), "seeds": list(seeds), "device": device,
                     "tasks": {}, "skipped": {}}
    not_found = []
    best_dirs: dict[str, Path] = {}
    # Read and check every task's files before fine-tuning anything: a bad dev file of the
    # last task fails the command in seconds, not after hours spent on the first ones.
    loaded = []
    for spec in tasks:
        cfg = task_config(spec, overrides or [], config_dir)
        try:
            data = load_task(data_dir, spec, max_train_samples, max_eval_samples)
        except DataError as e:
            if explicit_tasks or "no dev file found" not in str(e):
                raise
            results["skipped"][spec.name] = str(e)
            not_found.append(str(e))
            continue
        if data.train is None:
            results["skipped"][spec.name] = f"no train file ({data.dir / spec.train_file} not found)"
            continue
        if not data.train.examples:
            results["skipped"][spec.name] = f"no train examples in {data.train.path}"
            continue
        loaded.append((spec, cfg, data))
    for spec, cfg, data in loaded:
        hp = {**dataclasses.asdict(cfg), "max_train_samples": max_train_samples, "max_eval_samples": max_eval_samples}
        sizes = {"train_size": len(data.train.examples), "dev_size": len(data.dev.examples),
                 "test_size": len(data.test.examples) if data.test else 0,
                 "dropped": {"train": data.train.dropped, "dev": data.dev.dropped},
                 "majority_rate": report.majority_rate([e.label for e in data.dev.examples])}
        per_seed: dict[str, dict] = {}
        task_t0 = time.time()
        todo = [s for s in seeds if not (output / spec.name / f"seed{s}" / "result.json").is_file()]
        steps = math.ceil(cfg.epochs * math.ceil(len(data.train.examples) / cfg.batch_size))
        bar = tqdm(total=steps * len(todo), desc=f"clue {spec.name}", unit="step", disable=None)
        for seed in seeds:
            seed_dir = output / spec.name / f"seed{seed}"
            done = seed_dir / "result.json"
            if done.is_file():
                per_seed[str(seed)] = json.loads(done.read_text(encoding="utf-8"))
                continue
            run = wb.init(f"{spec.name}-seed{seed}", {"task": spec.name, "seed": seed, **hp, **sizes})
            out = _finetune(model_dir, spec, data, tokenizer, cfg, seed, device, use_deepspeed, run, bar)
            report.write_jsonl(seed_dir / "dev_predictions.jsonl",
                               report.dev_prediction_rows(spec, data.dev, out.pop("dev_predictions")))
            report.write_jsonl(seed_dir / "test_predictions.jsonl",
                               report.test_prediction_rows(spec, data.test, out.pop("test_predictions")))
            res = {"task": spec.name, "seed": seed, **out, "hyperparameters": hp, **sizes}
            if run is not None:
                run.summary.update({"dev/best_accuracy": res["dev_accuracy"], "best_step": res["best_step"]})
                run.finish()
            report.write_json(done, res)  # last: marks the (task, seed) finished
            per_seed[str(seed)] = res
        bar.close()
        summary = summarize_seeds(r["dev_accuracy"] for r in per_seed.values())
        best_seed = max(per_seed, key=lambda s: per_seed[s]["dev_accuracy"])  # first max wins
        best_dirs[spec.name] = output / spec.name / f"seed{best_seed}"
        results["tasks"][spec.name] = {
            "metric": "accuracy", "max": summary["max"], "mean": summary["mean"], "best_seed": int(best_seed),
            "seeds": {s: {k: r[k] for k in ("dev_accuracy", "best_step", "total_steps", "wall_time_s")}
                      for s, r in per_seed.items()},
            **sizes, "hyperparameters": hp, "wall_time_s": round(time.time() - task_t0, 2),
        }
    if not results["tasks"] and not_found and len(not_found) == len(tasks):
        raise DataError(f"{data_dir}: no CLUE task found; " + "; ".join(not_found))
    results["clue_average"] = clue_average(results["tasks"])
    results["wall_time_s"] = round(time.time() - t0, 2)
    report.write_json(output / "results.json", results)
    (output / "results.md").write_text(report.results_markdown(results), encoding="utf-8")
    if results["tasks"]:
        report.results_plot(results, output / "results.png")
        sub = report.write_submission(output, best_dirs)
        results["submission"] = str(sub) if sub else None
        report.write_json(output / "results.json", results)
        _summary_run(wb, results)
    return results


def _finetune(model_dir, spec, data, tokenizer, cfg, seed, device, use_deepspeed, run, bar) -> dict:
    from zhbert.clue.finetune import finetune_seed

    log = (lambda metrics, step: run.log(metrics, step=step)) if run is not None else None
    test = data.test.examples if data.test else []
    return finetune_seed(model_dir, spec.num_labels, data.train.examples, data.dev.examples, test, tokenizer,
                         cfg, seed, device=device, use_deepspeed=use_deepspeed, log=log, progress=bar,
                         label=f"{spec.name} seed {seed}: ")


def _summary_run(wb: _Wandb, results: dict) -> None:
    run = wb.init("clue-summary", {"model": results["model"], "seeds": results["seeds"]})
    if run is None:
        return
    import wandb

    table = wandb.Table(columns=["task", "max", "mean", "seeds", "train_size", "dev_size"])
    for t, r in results["tasks"].items():
        table.add_data(t, r["max"], r["mean"], len(r["seeds"]), r["train_size"], r["dev_size"])
    run.log({"clue/results": table})
    avg = results["clue_average"]
    run.summary.update({"clue/average_max": avg["max"], "clue/average_mean": avg["mean"]})
    run.finish()
