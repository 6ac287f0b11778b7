"""`zhbert eval clue`: resolve the model, fine-tune every (task, grid point, seed), write the results.

Per task: the defaults (:mod:`zhbert.clue.protocol`: task yaml < size class < flags), then
every grid point x every seed, each in ``<task>/<point>/seed<k>/``. The point with the best
mean dev score over the seeds is selected; its max, mean and std are the task's result. A
rerun with the same ``--output`` skips every (task, point, seed) whose ``result.json`` exists
and was made with the same hyperparameters, data and model weights (sha256), so an interrupted
evaluation continues where it stopped; a finished result made with other settings or another
model is an error, never reused.
Tasks without a train file are reported under ``skipped`` with the reason.

Several models (``--model A --model B``) are evaluated one after another into
``<output>/<label>/`` and compared in one table at ``<output>/results.md`` (:func:`compare`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
import time
from pathlib import Path
from typing import Optional

from zhbert.clue import protocol, report
from zhbert.clue.kinds import kind_of
from zhbert.clue.metrics import clue_average
from zhbert.clue.tasks import ClueTaskConfig, TaskSpec, load_task_config
from zhbert.errors import CheckpointError, ConfigError, DataError
from zhbert.hub.resolve import resolve_model_dir

CONFIG_DIR = protocol.CONFIG_DIR


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


def task_config(spec: TaskSpec, overrides: list[str], config_dir: Optional[Path] = None,
                size: str = "base") -> tuple[ClueTaskConfig, list[str], dict]:
    """The task's settings: its yaml, the size class's measured settings, then ``overrides``.
    Returns (config, the files the defaults came from, the size-class settings applied)."""
    path = (config_dir or CONFIG_DIR) / f"{spec.name}.yaml"
    sizes, where = protocol.size_overrides(size, spec.name, config_dir)
    size_items = [f"{k}={json.dumps(v)}" for k, v in sizes.items()]
    cfg = load_task_config(path if path.is_file() else None, size_items + list(overrides))
    defaults = [f"configs/clue/{path.name}" if path.is_file() else "built-in defaults"] + ([where] if where else [])
    return cfg, defaults, sizes


class _Wandb:
    """One wandb run per (task, point, seed) plus a summary run; nothing at all when disabled."""

    def __init__(self, mode: str, output: Path, group: str):
        self.mode, self.dir, self.group = mode, output, group

    def init(self, name: str, config: dict):
        if self.mode == "disabled":
            return None
        import wandb

        return wandb.init(mode=self.mode, project="zhbert-clue", name=name, group=self.group,
                          dir=str(self.dir), config=config, reinit="create_new")


def _stats(values: list[float]) -> dict:
    return {"max": max(values), "mean": sum(values) / len(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def model_label(model: str, taken: set[str]) -> str:
    """A directory-safe, unique label for a model argument (its last path component)."""
    base = re.sub(r"[^\w.+-]", "_", Path(str(model).rstrip("/")).name) or "model"
    if base in ("hf", "model") or re.fullmatch(r"step_\d+", base):
        parts = [p for p in Path(str(model).rstrip("/")).parts if p not in ("hf", "checkpoints")]
        base = "-".join(parts[-2:]) if len(parts) >= 2 else base
        base = re.sub(r"[^\w.+-]", "_", base)
    label, k = base, 2
    while label in taken:
        label, k = f"{base}-{k}", k + 1
    return label


def run_clue(model: str, tasks: list[TaskSpec], data_dir: str | Path, output: str | Path,
             seeds: list[int], overrides: Optional[list[str]] = None, grid: Optional[dict] = None,
             max_train_samples: Optional[int] = None, max_eval_samples: Optional[int] = None, device: str = "cpu",
             use_deepspeed: bool = False, wandb_mode: str = "offline", explicit_tasks: bool = True,
             config_dir: Optional[Path] = None, train_files: Optional[dict[str, Path]] = None,
             label: Optional[str] = None, save_models: bool = False) -> dict:
    """Fine-tune and evaluate ``tasks`` x grid points x ``seeds``; write and return results.json's content.

    ``grid``: ``{"lr": [...], "batch_size": [...], "epochs": [...]}`` (missing keys: the defaults).
    ``train_files``: task name -> a train file to use instead of the data dir's.
    ``save_models``: write each fine-tuned model (its best dev weights) in HF format to
    ``<task>/<point>/seed<k>/model/`` (loads with transformers' BertFor<Head>.from_pretrained).
    """
    from tqdm import tqdm

    t0 = time.time()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    if not Path(data_dir).is_dir():
        raise DataError(f"{data_dir}: CLUE data directory not found (expected <task>_public/ folders inside)")
    model_dir = resolve_model_dir(model, what="--model")
    tokenizer = load_model_tokenizer(model_dir)
    record = protocol.model_record(model_dir)
    size = record["size_class"]
    grid = {k: list(v) for k, v in (grid or {}).items() if v}
    wb = _Wandb(wandb_mode, output, group=output.name)
    results: dict = {"model": str(model), "label": label or model_label(model, set()), "model_dir": str(model_dir),
                     "seeds": list(seeds), "device": device, "protocol": record, "tasks": {}, "skipped": {}}
    not_found = []
    best_dirs: dict[str, Path] = {}
    # Read and check every task's files before fine-tuning anything: a bad dev file of the
    # last task fails the command in seconds, not after hours spent on the first ones.
    loaded = []
    for spec in tasks:
        cfg, defaults, sizes = task_config(spec, overrides or [], config_dir, size)
        kind = kind_of(spec)
        try:
            data = kind.load(data_dir, max_train_samples, max_eval_samples, (train_files or {}).get(spec.name))
        except DataError as e:
            if explicit_tasks or "no dev file found" not in str(e):
                raise
            results["skipped"][spec.name] = str(e)
            not_found.append(str(e))
            continue
        if data.train is None:
            results["skipped"][spec.name] = (f"no train file ({data.dir / spec.train_file} not found; give one "
                                             f"with --train-file {spec.name}=PATH)")
            continue
        if not data.train.examples:
            results["skipped"][spec.name] = f"no train examples in {data.train.path}"
            continue
        points = [dataclasses.replace(cfg, **p) for p in protocol.grid_points(grid)]
        for p in points:
            p.validate(f"{spec.name} grid point {protocol.point_name(p)}")
            if spec.kind == "span" and p.max_query_length > p.max_seq_length - 8:
                raise ConfigError(f"{spec.name}: max_query_length {p.max_query_length} leaves no room for the "
                                  f"context in max_seq_length {p.max_seq_length} (needs <= max_seq_length - 8)")
        loaded.append((spec, kind, cfg, points, data, defaults, sizes))
    weights = record["weights_sha256"]
    earlier = _recorded_weights(output)
    for spec, kind, cfg, points, data, defaults, sizes in loaded:
        task_t0 = time.time()
        floor = kind.floor(data.dev)
        sizes_rec = {"train_size": len(data.train.examples), "dev_size": len(data.dev.examples),
                     "test_size": len(data.test.examples) if data.test else 0,
                     "dropped": {"train": data.train.dropped, "dev": data.dev.dropped}}
        prot = protocol.task_record(data, cfg, grid, seeds, defaults, sizes, max_train_samples, max_eval_samples)
        data_key = {"data_files": prot["data_files"], "train_rows": prot["train_rows"], "dev_rows": prot["dev_rows"]}
        todo = [(p, s) for p in points for s in seeds
                if not (output / spec.name / protocol.point_name(p) / f"seed{s}" / "result.json").is_file()]
        bar = tqdm(total=sum(_steps(kind, data, p, tokenizer) for p, _ in todo), desc=f"clue {spec.name}",
                   unit="step", disable=None) if todo else None
        grid_res: dict[str, dict] = {}
        for point in points:
            name = protocol.point_name(point)
            hp = {**dataclasses.asdict(point), "max_train_samples": max_train_samples,
                  "max_eval_samples": max_eval_samples}
            per_seed: dict[str, dict] = {}
            for seed in seeds:
                seed_dir = output / spec.name / name / f"seed{seed}"
                done = seed_dir / "result.json"
                if done.is_file():
                    prev = json.loads(done.read_text(encoding="utf-8"))
                    if prev.get("hyperparameters") != hp or prev.get("data") != data_key:
                        raise ConfigError(f"{done}: made with other settings or data than this run "
                                          f"({_what_differs(prev, hp, data_key)}); use another --output")
                    _check_same_model(done, prev.get("model_weights_sha256", earlier), weights, model_dir)
                    per_seed[str(seed)] = prev
                    continue
                run = wb.init(f"{spec.name}-{name}-seed{seed}", {"task": spec.name, "seed": seed, **hp, **sizes_rec})
                out = _finetune(kind, model_dir, spec, data, tokenizer, point, seed, device, use_deepspeed, run, bar,
                                f"{name} " if len(points) > 1 else "", seed_dir / "model" if save_models else None)
                report.write_jsonl(seed_dir / "dev_predictions.jsonl", kind.dev_rows(data.dev, out.pop("dev_predictions")))
                test_pred = out.pop("test_predictions")
                if data.test is not None and data.test.examples:
                    report.write_text(seed_dir / spec.submission_file, kind.submission(data.test, test_pred))
                res = {"task": spec.name, "seed": seed, "point": name, **out, "hyperparameters": hp, "data": data_key,
                       "model_weights_sha256": weights, **sizes_rec}
                if run is not None:
                    run.summary.update({f"dev/best_{k}": v for k, v in res["dev"].items()} | {"best_step": res["best_step"]})
                    run.finish()
                report.write_json(done, res)  # last: marks the (task, point, seed) finished
                per_seed[str(seed)] = res
            grid_res[name] = _point_summary(kind, per_seed, hp)
        if bar is not None:
            bar.close()
        # Selection: the best mean over seeds (first listed point wins ties), reported as max (mean ± std).
        selected = max(grid_res, key=lambda n: grid_res[n]["scores"][kind.metric]["mean"])
        sel = grid_res[selected]
        best_seed = max(sel["seeds"], key=lambda s: sel["seeds"][s]["dev"][kind.metric])  # first max wins
        best_dirs[spec.name] = output / spec.name / selected / f"seed{best_seed}"
        prot["selected"] = {"point": selected, **{k: sel["hyperparameters"][k] for k in protocol.GRID_KEYS}}
        main = sel["scores"][kind.metric]
        results["tasks"][spec.name] = {
            "kind": kind.name, "metric": kind.metric, "metrics": list(kind.metrics),
            "max": main["max"], "mean": main["mean"], "std": main["std"], "scores": sel["scores"],
            "best_seed": int(best_seed), "selected": selected, "seeds": sel["seeds"],
            "grid": grid_res, "floor": floor,
            **({"majority_rate": floor["value"]} if kind.name == "classification" else {}),
            **({"extra_eval": sel["extra_eval"]} if sel.get("extra_eval") else {}),
            **sizes_rec, "hyperparameters": sel["hyperparameters"], "notes": list(data.notes), "protocol": prot,
            "wall_time_s": round(time.time() - task_t0, 2),
        }
    if not results["tasks"] and not_found and len(not_found) == len(tasks):
        raise DataError(f"{data_dir}: no CLUE task found; " + "; ".join(not_found))
    results["clue_average"] = clue_average(results["tasks"])
    results["wall_time_s"] = round(time.time() - t0, 2)
    report.write_json(output / "results.json", results)
    report.write_outputs(output, [results])
    if results["tasks"]:
        sub = report.write_submission(output, best_dirs)
        results["submission"] = str(sub) if sub else None
        report.write_json(output / "results.json", results)
        _summary_run(wb, results)
    return results


def _recorded_weights(output: Path) -> Optional[str]:
    """The weights sha256 of the model an earlier, finished run into ``output`` evaluated (its
    results.json), for per-seed results written before they recorded it themselves."""
    try:
        return (json.loads((output / "results.json").read_text(encoding="utf-8")).get("protocol") or {}).get(
            "weights_sha256")
    except (OSError, ValueError, AttributeError):
        return None


def _check_same_model(done: Path, made_with: Optional[str], weights: Optional[str], model_dir: Path) -> None:
    """A finished (task, point, seed) is reused only for the model that made it: the same label
    (output dir) with other weights -- a checkpoint trained further, a re-exported model -- is an
    error, never a silent mix of two models' scores."""
    if weights is None or made_with == weights:
        return
    if made_with is None:
        raise ConfigError(f"{done}: does not record which model made it (written by an older zhbert, and no "
                          f"finished results.json beside it); use another --output")
    raise ConfigError(f"{done}: made with another model (weights sha256 {made_with[:12]}, {model_dir} has "
                      f"{weights[:12]}); use another --output")


def _what_differs(prev: dict, hp: dict, data_key: dict) -> str:
    diff = [k for k in sorted(set(hp) | set(prev.get("hyperparameters", {})))
            if prev.get("hyperparameters", {}).get(k) != hp.get(k)]
    if prev.get("data") != data_key:
        diff.append("data")
    return ", ".join(diff) or "unknown"


def _steps(kind, data, cfg, tokenizer, _windows: dict = {}) -> int:  # noqa: B006 (per-process cache)
    """Optimizer steps of one seed, for the progress bar. CMRC2018 trains on windows, so its
    train set is featurised once per window setting to count them."""
    n = len(data.train.examples)
    if kind.name == "span":
        key = (id(data.train), cfg.max_seq_length, cfg.doc_stride, cfg.max_query_length)
        if key not in _windows:
            _windows[key] = len(kind.features(tokenizer, data.train, cfg, train=True))
        n = _windows[key]
    return math.ceil(cfg.epochs * math.ceil(n / cfg.batch_size))


def _point_summary(kind, per_seed: dict[str, dict], hp: dict) -> dict:
    scores = {m: _stats([r["dev"][m] for r in per_seed.values()]) for m in kind.metrics}
    out = {"hyperparameters": hp, "scores": scores,
           "seeds": {s: {k: r[k] for k in ("dev", "best_step", "total_steps", "wall_time_s")} for s, r in per_seed.items()}}
    extra_names = sorted({n for r in per_seed.values() for n in r.get("extra_eval", {})})
    if extra_names:
        out["extra_eval"] = {n: {m: _stats([r["extra_eval"][n][m] for r in per_seed.values()]) for m in kind.metrics}
                             for n in extra_names}
    return out


def _finetune(kind, model_dir, spec, data, tokenizer, cfg, seed, device, use_deepspeed, run, bar, point,
              save_dir) -> dict:
    from zhbert.clue.finetune import finetune_seed

    log = (lambda metrics, step: run.log(metrics, step=step)) if run is not None else None
    return finetune_seed(kind, model_dir, data, tokenizer, cfg, seed, device=device, use_deepspeed=use_deepspeed,
                         log=log, progress=bar, label=f"{spec.name} {point}seed {seed}: ", save_dir=save_dir)


def _summary_run(wb: _Wandb, results: dict) -> None:
    run = wb.init("clue-summary", {"model": results["model"], "seeds": results["seeds"]})
    if run is None:
        return
    import wandb

    table = wandb.Table(columns=["task", "metric", "max", "mean", "std", "seeds", "train_size", "dev_size"])
    for t, r in results["tasks"].items():
        table.add_data(t, r["metric"], r["max"], r["mean"], r["std"], len(r["seeds"]), r["train_size"], r["dev_size"])
    run.log({"clue/results": table})
    avg = results["clue_average"]
    run.summary.update({"clue/average_max": avg["max"], "clue/average_mean": avg["mean"]})
    run.finish()


def run_many(models: list[str], tasks: list[TaskSpec], data_dir, output, seeds, **kw) -> list[dict]:
    """Evaluate each model into ``<output>/<label>/`` under the same protocol, then compare."""
    output = Path(output)
    labels: set[str] = set()
    all_results = []
    for m in models:
        label = model_label(m, labels)
        labels.add(label)
        all_results.append(run_clue(m, tasks, data_dir, output / label, seeds, label=label, **kw))
    compare(all_results, output)
    return all_results


def load_results(dirs: list[str | Path]) -> list[dict]:
    """results.json of each evaluation output dir (DataError naming a dir without one).

    Results of the same model (same label and weights sha256) for different tasks, e.g. one
    run per task with task-specific flags, are merged into one row; a task scored twice for
    the same model is an error (which one would the table show?)."""
    out: list[dict] = []
    for d in dirs:
        path = Path(d) / "results.json"
        if not path.is_file():
            raise DataError(f"{path}: not found (expected the --output dir of a `zhbert eval clue` run)")
        try:
            res = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from None
        if "tasks" not in res:
            raise DataError(f"{path}: no 'tasks' key; not a `zhbert eval clue` results file")
        res.setdefault("label", model_label(res.get("model", str(d)), set()))
        sha = (res.get("protocol") or {}).get("weights_sha256")
        same = next((r for r in out if r["label"] == res["label"] and sha
                     and (r.get("protocol") or {}).get("weights_sha256") == sha), None)
        if same is not None:
            twice = sorted(set(same["tasks"]) & set(res["tasks"]))
            if twice:
                raise DataError(f"{path}: {', '.join(twice)} of {res['label']} already read from another "
                                "directory; compare each task once per model")
            same["tasks"].update(res["tasks"])
            same["skipped"] = {k: v for k, v in {**same.get("skipped", {}), **res.get("skipped", {})}.items()
                               if k not in same["tasks"]}
            same["seeds"] = sorted(set(same.get("seeds", [])) | set(res.get("seeds", [])))
            same["clue_average"] = clue_average(same["tasks"])
            continue
        if any(r["label"] == res["label"] for r in out):
            res["label"] = model_label(res["label"], {r["label"] for r in out})
        out.append(res)
    return out


def compare(all_results: list[dict], output: str | Path) -> dict:
    """One results.json/md/png over several models' results: a row per model, the floor row,
    protocol warnings when the models were not evaluated alike."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    warnings_ = protocol.comparability_warnings(all_results)
    combined = {"models": [r["label"] for r in all_results], "results": all_results, "warnings": warnings_}
    report.write_json(output / "comparison.json", combined)
    report.write_outputs(output, all_results)
    return combined
