"""Everything `zhbert eval clue` writes: per-seed files, results.json/md/png, the submission.

Layout of ``--output``::

    <task>/seed<k>/result.json            marks the (task, seed) finished (written last)
    <task>/seed<k>/dev_predictions.jsonl  one line per dev-file line: {"label": "..."} / null
    <task>/seed<k>/test_predictions.jsonl {"id": ..., "label": "..."} (+ label_desc for TNEWS)
    submission/<CLUE 1.1 file name>       test predictions of each task's best seed
                                          (tasks without test.json: left out, with a warning)
    submission.zip                        the submission/ files at the top level, for upload
    results.json, results.md, results.png
"""

from __future__ import annotations

import json
import math
import warnings
import zipfile
from pathlib import Path
from typing import Optional

from zhbert.files import write_json_atomic, write_text_atomic
from zhbert.clue.data import Split
from zhbert.clue.tasks import TASKS, TaskSpec


def write_json(path: Path, obj) -> None:
    """Atomic JSON write (zhbert.files), so a crash never leaves a half file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, obj)


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def dev_prediction_rows(spec: TaskSpec, dev: Split, pred: list[int]) -> list[dict]:
    """One row per dev-file line, in file order; dropped rows ("-" labels) get null."""
    return [{"label": None if k is None else spec.labels[pred[k]]} for k in dev.rows]


def test_prediction_rows(spec: TaskSpec, test: Optional[Split], pred: list[int]) -> list[dict]:
    rows = []
    for ex, p in zip(test.examples if test else [], pred):
        row = {"id": ex.id, "label": spec.labels[p]}
        if spec.label_descs:
            row["label_desc"] = spec.label_descs[spec.labels[p]]
        rows.append(row)
    return rows


def write_submission(output: Path, best: dict[str, Path]) -> Optional[Path]:
    """Copy each task's best-seed test predictions to submission/<CLUE name>; zip them.

    A task without test predictions (no ``test.json`` in its data dir, or an empty one) is
    left out of ``submission/`` and the zip with a warning: an empty prediction file would
    be scored as a failed task by the CLUE site, silently. Returns None when no task has any.
    """
    sub = output / "submission"
    files = []
    for task, seed_dir in best.items():
        src = seed_dir / "test_predictions.jsonl"
        dst = sub / TASKS[task].submission_file
        data = src.read_bytes() if src.is_file() else b""
        if not data.strip():
            dst.unlink(missing_ok=True)  # a stale copy from an earlier run
            warnings.warn(f"CLUE {TASKS[task].title}: no test predictions ({src} is "
                          f"{'empty' if src.is_file() else 'missing'}: the data dir has no "
                          f"{TASKS[task].dir_name}/{TASKS[task].test_file}); left out of submission.zip",
                          UserWarning, stacklevel=2)
            continue
        sub.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        files.append(dst)
    zpath = output / "submission.zip"
    if not files:
        zpath.unlink(missing_ok=True)
        return None
    zpath = output / "submission.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(files):
            z.write(f, arcname=f.name)
    return zpath


def _pct(x: Optional[float]) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


# A task scored within this much of its majority-class rate is flagged: the model did not learn it.
NEAR_MAJORITY = 0.01


def majority_rate(labels: list) -> float:
    """Dev accuracy of always answering the most frequent dev label (the floor a model that
    learned nothing reaches)."""
    from collections import Counter

    return Counter(labels).most_common(1)[0][1] / len(labels) if labels else 0.0


def near_majority(results: dict) -> list[str]:
    """One warning per task whose mean dev accuracy is at (or within NEAR_MAJORITY of) the
    majority-class rate, with the likely causes."""
    out = []
    for t, r in results["tasks"].items():
        maj = r.get("majority_rate")
        if maj is not None and r["mean"] <= maj + NEAR_MAJORITY:
            out.append(f"WARNING {TASKS[t].title}: {_pct(r['mean'])} is at the majority-class rate ({_pct(maj)}): the "
                       f"model did not learn the task. Likely causes: an lr too low for the model's size (small "
                       f"models need ~1e-4 to 5e-4, not BERT-base's 2e-5), too few steps or epochs, too few train rows.")
    return out


def results_markdown(results: dict) -> str:
    """HFL/CLUE style: one row, a column per task holding "max (mean)" dev accuracy."""
    tasks = results["tasks"]
    names = [t for t in TASKS if t in tasks]
    head = ["Model", *[TASKS[t].title for t in names], "Avg"]
    avg = results["clue_average"]
    cells = [f"{_pct(tasks[t]['max'])} ({_pct(tasks[t]['mean'])})" for t in names]
    row = [f"`{results['model']}`", *cells, f"{_pct(avg['max'])} ({_pct(avg['mean'])})"]
    lines = [
        "# CLUE dev results",
        "",
        f"Dev accuracy (%), max (mean) over seeds {', '.join(map(str, results['seeds']))}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
        "| " + " | ".join(row) + " |",
    ]
    majority = [tasks[t].get("majority_rate") for t in names]
    if majority and all(m is not None for m in majority):
        lines.append("| " + " | ".join(["majority class", *[_pct(m) for m in majority],
                                         _pct(sum(majority) / len(majority))]) + " |")
    warnings_ = near_majority(results)
    if warnings_:
        lines += ["", *[f"**{w}**" for w in warnings_]]
    lines += [
        "",
        "| Task | train rows used | dev rows scored | unlabelled rows skipped (train file/dev) | lr | epochs | batch "
        "| max len | per seed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in names:
        r, h = tasks[t], tasks[t]["hyperparameters"]
        seeds = ", ".join(f"{s}: {_pct(v['dev_accuracy'])}" for s, v in r["seeds"].items())
        d = r["dropped"]
        lines.append(f"| {TASKS[t].title} | {r['train_size']} | {r['dev_size']} | {d['train']}/{d['dev']} | "
                     f"{h['lr']:g} | {h['epochs']:g} | {h['batch_size']} | {h['max_seq_length']} | {seeds} |")
    if results["skipped"]:
        lines += ["", "Skipped:", ""] + [f"- {TASKS[t].title}: {why}" for t, why in results["skipped"].items()]
    return "\n".join(lines) + "\n"


def results_plot(results: dict, path: Path) -> None:
    """Bar chart: max and mean dev accuracy per task, each seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if t in results["tasks"]]
    fig, ax = plt.subplots(figsize=(1.6 * max(3, len(tasks)) + 1, 4))
    xs = range(len(tasks))
    r = results["tasks"]
    ax.bar([x - 0.2 for x in xs], [100 * r[t]["max"] for t in tasks], width=0.4, label="max")
    ax.bar([x + 0.2 for x in xs], [100 * r[t]["mean"] for t in tasks], width=0.4, label="mean")
    for x, t in zip(xs, tasks):
        vals = [100 * v["dev_accuracy"] for v in r[t]["seeds"].values()]
        ax.scatter([x + 0.2] * len(vals), vals, color="black", s=10, zorder=3)
    ax.set_xticks(list(xs), [TASKS[t].title for t in tasks])
    ax.set_ylabel("dev accuracy (%)")
    ax.set_title(f"CLUE dev: {Path(str(results['model'])).name}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
