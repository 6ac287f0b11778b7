"""CLUE classification metrics: accuracy per seed, max/mean over seeds, the CLUE average.

All CLUE 1.1 classification tasks are scored by accuracy. Following HFL and CLUE, a task's
result over several fine-tuning seeds is reported as "max (mean)", and the CLUE score is the
plain average of the per-task numbers (here over the tasks that ran).
"""

from __future__ import annotations

from typing import Iterable, Sequence


def accuracy(predictions: Sequence, labels: Sequence) -> float:
    """Share of positions where prediction == label (fraction in [0, 1])."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    if not labels:
        return 0.0
    return sum(int(p == y) for p, y in zip(predictions, labels)) / len(labels)


def summarize_seeds(scores: Iterable[float]) -> dict[str, float]:
    """``{"max", "mean", "n"}`` of per-seed scores."""
    s = list(scores)
    if not s:
        return {"max": float("nan"), "mean": float("nan"), "n": 0}
    return {"max": max(s), "mean": sum(s) / len(s), "n": len(s)}


def clue_average(per_task: dict[str, dict[str, float]]) -> dict:
    """Average of the per-task max and mean over the tasks given."""
    tasks = sorted(per_task)
    if not tasks:
        return {"max": None, "mean": None, "tasks": []}
    return {
        "max": sum(per_task[t]["max"] for t in tasks) / len(tasks),
        "mean": sum(per_task[t]["mean"] for t in tasks) / len(tasks),
        "tasks": tasks,
    }
