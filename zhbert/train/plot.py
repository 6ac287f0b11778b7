"""``zhbert plot RUN_DIR``: loss and accuracy curves (PNG) from a run's metrics.jsonl.

Writes ``loss.png`` (train loss / mlm_loss / nsp_loss, eval mlm_loss), ``accuracy.png``
(train and eval MLM/NSP accuracy) and ``lr.png`` (learning rate, grad norm) into
``RUN_DIR/plots/`` (or ``--out``). Uses matplotlib's Agg backend, so no display is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from zhbert.errors import DataError

_FIGURES = {
    "loss": [("loss", "train loss"), ("mlm_loss", "train MLM loss"), ("nsp_loss", "train NSP loss"),
             ("eval/mlm_loss", "eval MLM loss"), ("eval/nsp_loss", "eval NSP loss")],
    "accuracy": [("mlm_acc", "train MLM acc"), ("nsp_acc", "train NSP acc"),
                 ("eval/mlm_acc", "eval MLM acc"), ("eval/nsp_acc", "eval NSP acc")],
    "lr": [("lr", "learning rate"), ("grad_norm", "grad norm")],
}


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)):
            xs.append(int(r["step"]))
            ys.append(float(v))
    return xs, ys


def plot_run(run_dir: str | Path, out: Optional[str | Path] = None) -> list[Path]:
    """Write the PNG figures for ``run_dir``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zhbert.train.metrics import read_metrics

    run_dir = Path(run_dir)
    records = [r for r in read_metrics(run_dir) if "step" in r]
    if not records:
        raise DataError(f"{run_dir / 'metrics.jsonl'}: no records to plot")
    out_dir = Path(out) if out else run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, keys in _FIGURES.items():
        if name == "lr":
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
            for ax, (key, label) in zip(axes, keys):
                xs, ys = _series(records, key)
                ax.plot(xs, ys, label=label)
                ax.set_xlabel("step")
                ax.set_title(label)
                ax.grid(alpha=0.3)
        else:
            fig, ax = plt.subplots(figsize=(7, 4))
            for key, label in keys:
                xs, ys = _series(records, key)
                if xs:
                    ax.plot(xs, ys, marker="o" if key.startswith("eval/") else None, markersize=3, label=label)
            ax.set_xlabel("step")
            ax.set_ylabel(name)
            ax.set_title(f"{run_dir.name}: {name}")
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
