"""Everything `zhbert eval clue` writes: per-seed files, results.json/md/png, the submission.

Layout of ``--output`` (one model; with several, one such dir per model under ``<label>/``
plus the combined results.md/png and comparison.json at the top)::

    <task>/<point>/seed<k>/result.json        marks the (task, grid point, seed) finished (written last)
    <task>/<point>/seed<k>/dev_predictions.jsonl
                                              one line per dev example/file line: {"label": ...} (null for
                                              unlabelled NLI rows); CMRC2018 {"id", "answer"}; C3/ChID
                                              {"id", "label": option index, "answer": option text}
    <task>/<point>/seed<k>/<CLUE file name>   the test predictions in CLUE's submission format
    submission/<CLUE 1.1 file name>           test predictions of each task's best seed of its selected point
                                              (tasks without a test file: left out, with a warning)
    submission.zip                            the submission/ files at the top level, for upload
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
from zhbert.clue.metrics import clue_average
from zhbert.clue.tasks import TASKS


def write_json(path: Path, obj) -> None:
    """Atomic JSON write (zhbert.files), so a crash never leaves a half file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, obj)


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)


def write_submission(output: Path, best: dict[str, Path]) -> Optional[Path]:
    """Copy each task's best-seed test predictions (``<seed dir>/<CLUE file name>``) to
    submission/<CLUE file name>; zip them.

    A task without test predictions (no test file in its data dir, or an empty one) is left
    out of ``submission/`` and the zip with a warning: an empty prediction file would be
    scored as a failed task by the CLUE site, silently. Returns None when no task has any.
    """
    sub = output / "submission"
    files = []
    for task, seed_dir in best.items():
        name = TASKS[task].submission_file
        src = seed_dir / name
        dst = sub / name
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
    """One warning per task whose mean dev score is at (or within NEAR_MAJORITY of) its floor
    (majority class / most frequent answer position), with the likely causes."""
    out = []
    for t, r in results["tasks"].items():
        floor = r.get("floor") or ({"name": "majority class", "value": r["majority_rate"]}
                                   if r.get("majority_rate") is not None else None)
        if floor is not None and r["mean"] <= floor["value"] + NEAR_MAJORITY:
            who = f"{results.get('label', results.get('model'))}: " if results.get("label") else ""
            out.append(f"WARNING {who}{TASKS[t].title}: {_pct(r['mean'])} is at the {'majority-class' if floor['name'] == 'majority class' else floor['name']} rate "
                       f"({_pct(floor['value'])}): the model did not learn the task. Likely causes: an lr too low for "
                       f"the model's size (small models need ~1e-4 to 5e-4, not BERT-base's 2e-5), too few steps or "
                       f"epochs, too few train rows.")
    return out


def _cell(r: dict, metric: Optional[str] = None) -> str:
    """"max (mean ± std)" of a task's selected point; CMRC2018: EM then F1."""
    def one(s: dict) -> str:
        std = s.get("std")
        return f"{_pct(s['max'])} ({_pct(s['mean'])}{f' ± {100 * std:.2f}' if std else ''})"

    scores = r.get("scores") or {r.get("metric", "accuracy"): {"max": r["max"], "mean": r["mean"], "std": r.get("std")}}
    return " / ".join(one(scores[m]) for m in r.get("metrics", [r.get("metric", "accuracy")]))


def _names(results: list[dict]) -> list[str]:
    present = set().union(*(r["tasks"] for r in results)) if results else set()
    return [t for t in TASKS if t in present]


def results_markdown(results: dict | list[dict]) -> str:
    """HFL/CLUE style: a row per model, a column per task holding "max (mean ± std)" over seeds
    of the selected grid point (CMRC2018: EM / F1), then the floor row, warnings, protocol."""
    from zhbert.clue.protocol import comparability_warnings

    all_results = results if isinstance(results, list) else [results]
    names = _names(all_results)
    head = ["Model", *[TASKS[t].title + (" (EM / F1)" if TASKS[t].kind == "span" else "") for t in names], "Avg"]
    seeds = sorted({s for r in all_results for s in r.get("seeds", [])})
    lines = ["# CLUE dev results", "",
             "Dev score (%), max (mean ± std) over the seeds of each task's selected grid point (seeds "
             f"{', '.join(map(str, seeds))}; per task below); accuracy, CMRC2018 EM / F1 (Avg over EM and "
             "accuracies).", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for res in all_results:
        tasks = res["tasks"]
        avg = clue_average({t: tasks[t] for t in names if t in tasks})
        row = [f"`{res.get('label') or res['model']}`", *[_cell(tasks[t]) if t in tasks else "–" for t in names],
               f"{_pct(avg['max'])} ({_pct(avg['mean'])})" if avg["tasks"] else "–"]
        lines.append("| " + " | ".join(row) + " |")
    floors = []
    for t in names:
        r = next(res["tasks"][t] for res in all_results if t in res["tasks"])
        f = r.get("floor") or ({"name": "majority class", "value": r["majority_rate"]}
                               if r.get("majority_rate") is not None else None)
        floors.append(f)
    if any(f is not None for f in floors):
        other = any(f is None or f["name"] != "majority class" for f in floors)
        avg = _pct(sum(f["value"] for f in floors) / len(floors)) if all(floors) else "–"
        lines.append("| " + " | ".join(["majority class" + ("¹" if other else ""),
                                         *[_pct(f["value"]) if f else "–" for f in floors], avg]) + " |")
        if other:
            lines += ["", "¹ classification: the most frequent dev label; C3/ChID: the most frequent gold answer "
                      "position; CMRC2018 has none."]
    warns = [w for res in all_results for w in near_majority(res)] + comparability_warnings(all_results)
    if warns:
        lines += ["", *[f"**{w if w.startswith('WARNING') else 'WARNING ' + w}**" for w in warns]]
    for res in all_results:
        lines += ["", f"## `{res.get('label') or res['model']}`", ""]
        p = res.get("protocol") or {}
        if p:
            mc = p.get("model_config", {})
            lines.append(f"Protocol: zhbert {p.get('zhbert_version')}, model {mc.get('num_hidden_layers')} layers "
                         f"H{mc.get('hidden_size')} vocab {mc.get('vocab_size')} (size class {p.get('size_class')}), "
                         f"weights sha256 {str(p.get('weights_sha256'))[:12]}…, device {res.get('device')}.")
            lines.append("")
        lines += ["| Task | train rows used | dev rows scored | unlabelled rows skipped (train file/dev) | selected "
                  "(lr, batch, epochs) | grid | max len | per seed | defaults | fine-tuning minutes |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for t in [n for n in names if n in res["tasks"]]:
            r = res["tasks"][t]
            h = r["hyperparameters"]
            m = r.get("metric", "accuracy")
            seed_scores = ", ".join(f"{s}: {_pct(v['dev'][m] if 'dev' in v else v['dev_accuracy'])}"
                                    for s, v in r["seeds"].items())
            d = r.get("dropped", {"train": 0, "dev": 0})
            prot = r.get("protocol", {})
            grid = prot.get("grid") or {}
            gtxt = " × ".join(f"{k} {','.join(f'{x:g}' for x in v)}" for k, v in grid.items() if len(v) > 1) or "–"
            minutes = sum(v.get("wall_time_s", 0) for p in r.get("grid", {}).values()
                          for v in p.get("seeds", {}).values()) / 60 or r.get("wall_time_s", 0) / 60
            lines.append(f"| {TASKS[t].title} | {r['train_size']} | {r['dev_size']} | {d['train']}/{d['dev']} | "
                         f"{h['lr']:g}, {h['batch_size']}, {h['epochs']:g} | {gtxt} | {h['max_seq_length']} | "
                         f"{seed_scores} | {' + '.join(prot.get('defaults', [])) or '–'} | "
                         f"{minutes:.1f} |")
        notes = [f"- {TASKS[t].title}: {n}" for t in names if t in res["tasks"] for n in res["tasks"][t].get("notes", [])]
        extra = [f"- {TASKS[t].title} {name} (scored once, after selection on dev): "
                 + _cell({"scores": sc, "metrics": res["tasks"][t]["metrics"]})
                 for t in names if t in res["tasks"] for name, sc in res["tasks"][t].get("extra_eval", {}).items()]
        if notes or extra:
            lines += ["", *notes, *extra]
        if res.get("skipped"):
            lines += ["", "Skipped:", ""] + [f"- {TASKS[t].title}: {why}" for t, why in res["skipped"].items()]
    return "\n".join(lines) + "\n"


def write_outputs(output: Path, all_results: list[dict]) -> None:
    """results.md and (when anything was scored) results.png in ``output``."""
    write_text(output / "results.md", results_markdown(all_results))
    if any(r["tasks"] for r in all_results):
        results_plot(all_results, output / "results.png")


def results_plot(results: dict | list[dict], path: Path) -> None:
    """Grouped bars: the mean dev score of each model per task, every seed as a dot, the
    floor (majority class) as a dashed mark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_results = results if isinstance(results, list) else [results]
    tasks = _names(all_results)
    n = len(all_results)
    width = 0.8 / max(1, n)
    fig, ax = plt.subplots(figsize=(1.4 * max(3, len(tasks)) * max(1, n ** 0.5) + 1, 4.2))
    for k, res in enumerate(all_results):
        xs = [x - 0.4 + width * (k + 0.5) for x in range(len(tasks))]
        means = [100 * res["tasks"][t]["mean"] if t in res["tasks"] else 0 for t in tasks]
        ax.bar(xs, means, width=width * 0.9, label=str(res.get("label") or Path(str(res["model"])).name))
        for x, t in zip(xs, tasks):
            if t in res["tasks"]:
                r = res["tasks"][t]
                m = r.get("metric", "accuracy")
                vals = [100 * (v["dev"][m] if "dev" in v else v["dev_accuracy"]) for v in r["seeds"].values()]
                ax.scatter([x] * len(vals), vals, color="black", s=10, zorder=3)
    for x, t in enumerate(tasks):
        r = next(res["tasks"][t] for res in all_results if t in res["tasks"])
        f = r.get("floor") or ({"value": r["majority_rate"]} if r.get("majority_rate") is not None else None)
        if f:
            ax.hlines(100 * f["value"], x - 0.45, x + 0.45, colors="gray", linestyles="dashed", zorder=4,
                      label="majority class" if x == 0 or "majority class" not in ax.get_legend_handles_labels()[1]
                      else None)
    ax.set_xticks(list(range(len(tasks))), [TASKS[t].title + (" EM" if TASKS[t].kind == "span" else "") for t in tasks])
    ax.set_ylabel("dev score (%), mean over seeds")
    ax.set_title("CLUE dev" + (f": {all_results[0].get('label')}" if n == 1 else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
