"""Reading CLUE files: one JSON object per line, laid out as CLUE distributes them.

``--data-dir`` holds ``<task>_public/`` directories (``tnews_public/train.json`` ...). Every
problem names the file and line: a malformed JSON line, a missing field, an unknown label,
a WSC span that is not where its index says, a dev file with nothing to score. A UTF-8
BOM at the start of a file is accepted. Rows labelled ``"-"`` (NLI items without a
gold label) are dropped and counted; for dev files the row stays in :attr:`Split.rows` as
``None`` so predictions can be written one line per file line.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from zhbert.clue.tasks import TaskSpec
from zhbert.errors import DataError


@dataclass
class Example:
    text_a: str
    text_b: Optional[str]
    label: Optional[int]  # None for test rows
    id: object = None  # the row's "id" (test files), else its 0-based line index
    line: int = 0  # 1-based line number in the file


@dataclass
class Split:
    path: Path
    examples: list[Example] = field(default_factory=list)
    rows: list[Optional[int]] = field(default_factory=list)  # per file line: example index or None
    dropped: int = 0  # rows whose label is the task's drop_label


def find_task_dir(data_dir: str | Path, spec: TaskSpec) -> Path:
    """The directory holding ``spec``'s files; DataError listing every place looked at."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: CLUE data directory not found")
    names = (spec.dir_name, spec.name, *spec.alt_dirs)
    candidates = [root / n for n in names]
    if root.name in names:
        candidates.insert(0, root)
    dev_files = (spec.dev_file, *spec.alt_dev_files)
    for d in candidates:
        if any((d / f).is_file() for f in dev_files):
            return d
    looked = ", ".join(str(d / f) for d in candidates for f in dev_files[:1])
    if len(dev_files) > 1:
        looked += f" (or {', '.join(dev_files[1:])} there)"
    raise DataError(f"{spec.title}: no dev file found; looked for {looked}")


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; DataError naming file:line."""
    out = []
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: a BOM is accepted, as `zhbert prepare` does
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: malformed JSON line ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                out.append((lineno, obj))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return out


def _label_text(value) -> str:
    if isinstance(value, bool):  # some WSC copies store JSON true/false
        return "true" if value else "false"
    return str(value).strip()


def load_split(spec: TaskSpec, path: Path, labeled: bool, limit: Optional[int] = None) -> Split:
    """Read one file of ``spec``; ``labeled=False`` for test files (labels ignored)."""
    label2id = {lab: i for i, lab in enumerate(spec.labels)}
    split = Split(path=path)
    for k, (lineno, row) in enumerate(read_jsonl(path)):
        if limit is not None and k >= limit:
            break
        label = None
        if labeled:
            if "label" not in row:
                raise DataError(f"{path}:{lineno}: missing field 'label'")
            text = _label_text(row["label"])
            if spec.drop_label is not None and text == spec.drop_label:
                split.dropped += 1
                split.rows.append(None)
                continue
            if text not in label2id:
                raise DataError(f"{path}:{lineno}: unknown {spec.title} label {text!r}; "
                                f"expected one of {', '.join(spec.labels)}")
            label = label2id[text]
        try:
            a, b = spec.texts(row)
        except KeyError as e:
            raise DataError(f"{path}:{lineno}: missing field {e.args[0]!r} for {spec.title}") from None
        except (ValueError, TypeError) as e:
            raise DataError(f"{path}:{lineno}: {e}") from None
        split.rows.append(len(split.examples))
        split.examples.append(Example(a, b, label, row.get("id", k), lineno))
    return split


@dataclass
class TaskData:
    spec: TaskSpec
    dir: Path
    train: Optional[Split]
    dev: Split
    test: Optional[Split]
    extra: dict = field(default_factory=dict)  # name -> labelled Split scored after selection (ChID test_public)
    notes: list = field(default_factory=list)  # what the reader chose, for results (e.g. "trained on the trial set")
    files: dict = field(default_factory=dict)  # split -> [paths read], recorded in the protocol


def load_task(data_dir: str | Path, spec: TaskSpec, max_train_samples: Optional[int] = None,
              max_eval_samples: Optional[int] = None) -> TaskData:
    """All splits of a task. A missing train file is not an error here (``train=None``);
    the runner reports the task as skipped. ``max_train_samples`` takes a fixed random
    subset (``random.Random(0)``, the same for every seed); ``max_eval_samples`` the first N
    dev rows."""
    d = find_task_dir(data_dir, spec)
    train = None
    if (d / spec.train_file).is_file():
        train = load_split(spec, d / spec.train_file, labeled=True)
        if max_train_samples is not None and len(train.examples) > max_train_samples:
            keep = sorted(random.Random(0).sample(range(len(train.examples)), max_train_samples))
            train.examples = [train.examples[i] for i in keep]
    dev = load_split(spec, d / spec.dev_file, labeled=True, limit=max_eval_samples)
    if not dev.examples:  # would score 0.00 and drag the CLUE average and the submission down
        why = (f"all {dev.dropped} rows are labelled {spec.drop_label!r}" if dev.dropped
               else "--max-eval-samples is 0" if max_eval_samples == 0 else "the file has no rows")
        raise DataError(f"{dev.path}: no labelled dev examples to score {spec.title} on ({why})")
    test = load_split(spec, d / spec.test_file, labeled=False) if (d / spec.test_file).is_file() else None
    files = {"train": [train.path] if train else [], "dev": [dev.path], "test": [test.path] if test else []}
    return TaskData(spec, d, train, dev, test, files=files)


def dev_strings(data_dir: str | Path) -> list[str]:
    """Every string field of every row of every CLUE dev file under ``data_dir`` (``*/dev*.json``,
    JSON lines or one JSON document), in file order: the text a tokenizer check runs over."""
    out: list[str] = []

    def walk(x) -> None:
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    for f in sorted(Path(data_dir).glob("*/dev*.json")):
        text = f.read_text(encoding="utf-8-sig")
        try:
            walk(json.loads(text))
        except ValueError:  # JSON lines; "\n" only: IFLYTEK's sentences hold U+2028 and other breaks
            for line in text.split("\n"):
                if line.strip():
                    walk(json.loads(line))
    return out
