"""The evaluation protocol: size-aware defaults, the grid, and what makes two results comparable.

Defaults, lowest precedence first::

    ClueTaskConfig field defaults
    configs/clue/<task>.yaml                 the CLUE baseline's BERT-base settings (cited there)
    configs/clue/sizes.yaml [<size class>]   measured settings for small models ("all", then the task)
    --lr/--batch-size/--epochs/... and key=value overrides

The size class comes from the model's config.json (:func:`size_class`): ``tiny`` up to
H=256, ``small`` up to H=512, ``base`` above (base/large keep the baseline settings). A grid
(``--lr 1e-4,3e-4 --batch-size 16,32``) is the product of the listed values; every point runs
with every seed and the point with the best *mean* dev score is selected.

Everything that decides a score is recorded per task in results.json under ``protocol`` (train
rows used, dev rows, data file hashes, seeds, grid, selected point, max length, epochs, size
class) and once per run (zhbert version, model config, weights sha256). :func:`differences`
lists what differs between two results for the same task, so a comparison of results made
under different protocols warns instead of silently ranking them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from pathlib import Path
from typing import Optional

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "clue"
GRID_KEYS = ("lr", "batch_size", "epochs")


def size_class(model_config: dict) -> str:
    """``tiny`` (hidden_size <= 256), ``small`` (<= 512) or ``base`` (larger: base and large)."""
    h = int(model_config.get("hidden_size", 768))
    return "tiny" if h <= 256 else "small" if h <= 512 else "base"


SIZES = ("tiny", "small", "base")


def load_size_table(path: Path) -> dict:
    """configs/clue/sizes.yaml, checked: ``{size: {"all" | task: {ClueTaskConfig field: value}}}``.
    ConfigError naming the file and the offending key."""
    import yaml

    from zhbert.clue.tasks import TASKS, load_task_config
    from zhbert.errors import ConfigError

    try:
        table = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: expected a mapping of size classes ({', '.join(SIZES)})")
    for size, entry in table.items():
        if size not in SIZES:
            raise ConfigError(f"{path}: unknown size class {size!r}; expected {', '.join(SIZES)}")
        for scope, values in (entry or {}).items():
            if scope != "all" and scope not in TASKS:
                raise ConfigError(f"{path}: {size}.{scope}: expected 'all' or a task name ({', '.join(TASKS)})")
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: {size}.{scope}: expected a mapping of fine-tuning settings")
            try:
                load_task_config(None, [f"{k}={json.dumps(v)}" for k, v in values.items()])
            except ConfigError as e:
                raise ConfigError(f"{path}: {size}.{scope}: {str(e).split(': ', 1)[-1]}") from None
    return table


def size_overrides(size: str, task: str, config_dir: Optional[Path] = None) -> tuple[dict, str]:
    """The sizes.yaml settings of ``size`` for ``task`` ("all" merged with the task's own) and
    a description of where they came from ("" when none apply)."""
    path = (config_dir or CONFIG_DIR) / "sizes.yaml"
    if not path.is_file():
        return {}, ""
    entry = load_size_table(path).get(size) or {}
    merged = {**(entry.get("all") or {}), **(entry.get(task) or {})}
    return merged, (f"{path.name}[{size}]" if merged else "")


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the listed values, in the order given (lr fastest-varying last)."""
    keys = [k for k in GRID_KEYS if grid.get(k)]
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))] or [{}]


def point_name(cfg) -> str:
    """Directory name of a grid point: ``lr3e-04_bs32_ep3``."""
    return f"lr{cfg.lr:.0e}_bs{cfg.batch_size}_ep{cfg.epochs:g}"


def sha256_file(path: Path, _cache: dict = {}) -> str:  # noqa: B006 (a per-process cache of file hashes)
    path = Path(path)
    key = (str(path.resolve()), path.stat().st_mtime_ns, path.stat().st_size)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _cache[key] = h.hexdigest()
    return _cache[key]


def weights_sha256(model_dir: Path) -> Optional[str]:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (Path(model_dir) / name).is_file():
            return sha256_file(Path(model_dir) / name)
    return None


def model_record(model_dir: Path) -> dict:
    """Run-level protocol: zhbert version, the model's config.json, its weights' sha256."""
    from zhbert import __version__

    cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    keep = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
            "max_position_embeddings", "pre_layernorm")
    return {"zhbert_version": __version__, "model_config": {k: cfg[k] for k in keep if k in cfg},
            "weights_sha256": weights_sha256(model_dir), "size_class": size_class(cfg)}


def task_record(data, cfg, grid: dict, seeds: list[int], defaults: list[str], sizes: dict,
                max_train_samples: Optional[int], max_eval_samples: Optional[int]) -> dict:
    """Task-level protocol: everything about data and procedure that decides the score."""
    files = {split: [{"name": Path(p).name, "sha256": sha256_file(p)} for p in paths]
             for split, paths in data.files.items() if paths and split != "test"}
    return {
        "train_rows": len(data.train.examples), "dev_rows": len(data.dev.examples),
        "max_train_samples": max_train_samples, "max_eval_samples": max_eval_samples,
        "data_files": files, "seeds": list(seeds),
        "grid": {k: list(v) for k, v in grid.items() if v},
        "max_seq_length": cfg.max_seq_length, "epochs": cfg.epochs, "warmup_ratio": cfg.warmup_ratio,
        "weight_decay": cfg.weight_decay, "defaults": defaults, "size_overrides": sizes,
        "notes": list(data.notes),
    }


# Keys whose difference makes two scores of one task incomparable (the model may differ: that
# is what is being compared; hyperparameters chosen by the grid are compared via "grid").
COMPARED = ("train_rows", "dev_rows", "data_files", "seeds", "grid", "max_seq_length", "epochs", "notes")


def differences(a: dict, b: dict) -> list[str]:
    """The protocol keys on which task records ``a`` and ``b`` differ, as "key: a vs b"."""
    out = []
    for k in COMPARED:
        va, vb = a.get(k), b.get(k)
        if va != vb:
            if k == "data_files":
                out.append("data files differ (sha256)")
            else:
                out.append(f"{k}: {json.dumps(va, ensure_ascii=False)} vs {json.dumps(vb, ensure_ascii=False)}")
    return out


def comparability_warnings(results: list[dict]) -> list[str]:
    """One line per (task, model) whose protocol differs from the first model's for that task."""
    out = []
    if len(results) < 2:
        return out
    first = results[0]
    for other in results[1:]:
        if first.get("protocol", {}).get("zhbert_version") != other.get("protocol", {}).get("zhbert_version"):
            out.append(f"{other['label']} was evaluated by zhbert {other.get('protocol', {}).get('zhbert_version')}, "
                       f"{first['label']} by {first.get('protocol', {}).get('zhbert_version')}")
        for task, r in other["tasks"].items():
            base = first["tasks"].get(task)
            if base is None:
                continue
            diff = differences(base.get("protocol", {}), r.get("protocol", {}))
            if diff:
                out.append(f"{task}: {other['label']} vs {first['label']} used different protocols ("
                           + "; ".join(diff) + "): the scores are not comparable")
    return out


def config_fields(cfg) -> dict:
    return dataclasses.asdict(cfg)
