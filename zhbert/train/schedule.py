"""The time budget (``train.max_minutes``) and the time-based LR schedule (``train.schedule: time``).

**Training time** is wall time counted by :class:`TrainingClock` from the start of the first
optimizer step of a process: batch assembly, forward, backward, optimizer step, the step's
all-reduce, logging (metrics.jsonl, wandb, console) and the non-finite check all count.
Start-up does not (process group, data preparation and loading, model and DeepSpeed
initialisation, checkpoint loading, wandb start, the first data iterator), and neither do the
validation passes (``train.eval_every``) and checkpoint writes, final ones included: the
trainer pauses the clock around them. Each checkpoint records the count (meta.json
``train_seconds``) and a resumed run continues from it, so the time between that checkpoint
and a kill is not counted, just as those steps are repeated.

**Budget-based schedule** (Cramming, Geiping & Goldstein 2022): with ``u`` = elapsed training
time / (``max_minutes`` x 60) clipped to [0, 1], ``w`` = ``train.warmup_fraction`` and
``m`` = ``train.min_lr_ratio``, lr = ``train.lr`` x :func:`time_lr_ratio`::

    u < w (warmup):   m + (1 - m) * u / w                      (linear, from the min lr to the peak)
    u >= w, linear:   m + (1 - m) * (1 - p)                    p = (u - w) / (1 - w)
            cosine:   m + (1 - m) * (1 + cos(pi * p)) / 2
            constant: 1

the shapes of DeepSpeed's WarmupDecayLR / WarmupCosineLR / WarmupLR that ``schedule: steps``
uses, with steps replaced by the fraction of the budget spent. A run stops at the first step
boundary where the budget is used up, so the LR it stops with (the one saved in its final
checkpoint) is the fully decayed ``lr x min_lr_ratio``.

DeepSpeed's Warmup* schedulers count steps and need >= 2 warmup steps, so the time schedule is
zhbert's own :class:`TimeBudgetLR`, passed to ``deepspeed.initialize(lr_scheduler=...)``, which
checkpoints it with the engine. The trainer hands it the elapsed training time before every
step (:meth:`TimeBudgetLR.set_elapsed`; the same value on every rank: rank 0's clock,
broadcast), so the LR of a step is the schedule's value at the training time elapsed when the
step starts.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

DECAYS = ("linear", "cosine", "constant")


def time_lr_ratio(u: float, warmup_fraction: float, decay: str, min_lr_ratio: float) -> float:
    """lr / peak lr at budget fraction ``u`` (clipped to [0, 1]); see the module docstring."""
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {', '.join(DECAYS)}; got {decay!r}")
    u = min(1.0, max(0.0, float(u)))
    w, m = float(warmup_fraction), float(min_lr_ratio)
    if u < w:
        return m + (1.0 - m) * u / w
    if decay == "constant":
        return 1.0
    p = (u - w) / (1.0 - w) if w < 1.0 else 1.0
    if decay == "linear":
        return m + (1.0 - m) * (1.0 - p)
    return m + (1.0 - m) * (1.0 + math.cos(math.pi * p)) / 2.0


def ramp_accumulation(u: float, start: int, final: int, fraction: float) -> int:
    """Micro-batches per optimizer step at run fraction ``u`` under a batch-size ramp
    (``train.batch_ramp_fraction``; Cramming's batch ramp): ``start`` at ``u`` = 0, then
    ``start + floor((final - start) * u / fraction)``, so each value holds for an equal share of
    the ramp and ``final`` is reached exactly at ``u`` = ``fraction``; ``final`` from there on
    and whenever ``fraction`` is 0 (no ramp). ``u`` is training time over the budget
    (``schedule: time``) or steps done over ``max_steps`` (``schedule: steps``)."""
    if fraction <= 0 or u >= fraction:
        return int(final)
    return int(start) + int(math.floor((int(final) - int(start)) * max(0.0, float(u)) / float(fraction)))


class TimeBudgetLR:
    """LR = ``peak`` x :func:`time_lr_ratio` (elapsed / ``budget_s``), set on ``optimizer``'s
    param groups.

    DeepSpeed calls :meth:`step` after every applied optimizer step: it counts steps
    (``last_batch_iteration``, the key DeepSpeed's own schedulers keep, so a checkpoint of a
    time-scheduled run still resumes under ``schedule: steps``) and re-applies the LR of the
    last elapsed time. The trainer moves the schedule on with :meth:`set_elapsed`. The
    optimizer may be bound after construction (:meth:`bind`): the scheduler is handed to
    ``deepspeed.initialize`` before DeepSpeed has made its optimizer.

    Deliberately not a ``torch.optim.lr_scheduler.LRScheduler`` (DeepSpeed refuses one next to
    an optimizer it builds from the config) and not callable (DeepSpeed would call it as a
    factory).
    """

    def __init__(self, peak_lr: float, budget_s: float, warmup_fraction: float, decay: str,
                 min_lr_ratio: float, optimizer: Any = None):
        if not budget_s > 0:
            raise ValueError(f"budget_s must be > 0, got {budget_s}")
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
        time_lr_ratio(0.0, warmup_fraction, decay, min_lr_ratio)  # checks decay
        self.peak_lr, self.budget_s = float(peak_lr), float(budget_s)
        self.warmup_fraction, self.decay, self.min_lr_ratio = float(warmup_fraction), decay, float(min_lr_ratio)
        self.elapsed_s = 0.0
        self.last_batch_iteration = 0
        self.optimizer = None
        self._last_lr = [self.lr_at(0.0)]
        if optimizer is not None:
            self.bind(optimizer)

    def lr_at(self, elapsed_s: float) -> float:
        return self.peak_lr * time_lr_ratio(elapsed_s / self.budget_s, self.warmup_fraction, self.decay,
                                            self.min_lr_ratio)

    def bind(self, optimizer: Any) -> None:
        """Drive ``optimizer`` (anything with ``param_groups``) from now on; sets its LR."""
        self.optimizer = optimizer
        self._apply()

    def set_elapsed(self, elapsed_s: float) -> None:
        """Move to ``elapsed_s`` seconds of training time: the next step's LR."""
        self.elapsed_s = float(elapsed_s)
        self._apply()

    def step(self, *args, **kwargs) -> None:
        """Called by DeepSpeed once per applied optimizer step (any arguments are ignored)."""
        self.last_batch_iteration += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def get_lr(self) -> list[float]:
        return self.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers and strings (checkpoint files are read with weights-only unpickling)."""
        return {"last_batch_iteration": self.last_batch_iteration, "elapsed_s": self.elapsed_s,
                "last_lr": list(self._last_lr), "peak_lr": self.peak_lr, "budget_s": self.budget_s,
                "warmup_fraction": self.warmup_fraction, "decay": self.decay, "min_lr_ratio": self.min_lr_ratio}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore the step count and elapsed time; the schedule's shape stays this run's
        (a resume with another ``max_minutes`` stretches the rest of the schedule over the new
        budget). A DeepSpeed step scheduler's state (``schedule: steps`` checkpoint) has no
        elapsed time: the trainer sets it from meta.json's ``train_seconds``."""
        self.last_batch_iteration = int(sd.get("last_batch_iteration", 0))
        if "elapsed_s" in sd:
            self.elapsed_s = float(sd["elapsed_s"])
        self._apply()

    def _apply(self) -> None:
        lr = self.lr_at(self.elapsed_s)
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self._last_lr = [lr for _ in self.optimizer.param_groups]
        else:
            self._last_lr = [lr]

    def __repr__(self) -> str:
        return (f"TimeBudgetLR(peak_lr={self.peak_lr:g}, budget_s={self.budget_s:g}, "
                f"warmup_fraction={self.warmup_fraction:g}, decay={self.decay}, min_lr_ratio={self.min_lr_ratio:g})")


class TrainingClock:
    """Training wall time in seconds (what counts: the module docstring).

    ``clock`` is the time source (default :func:`time.monotonic`); tests pass a fake one.
    ``elapsed`` is the count carried over from a checkpoint. The count runs from
    :meth:`start` and stops inside :meth:`paused`.
    """

    def __init__(self, clock: Optional[Callable[[], float]] = None, elapsed: float = 0.0):
        self.clock = clock or time.monotonic
        self._base = float(elapsed)
        self._mark: Optional[float] = None

    @property
    def running(self) -> bool:
        return self._mark is not None

    def start(self) -> None:
        if self._mark is None:
            self._mark = self.clock()

    def elapsed(self) -> float:
        return self._base + (self.clock() - self._mark if self._mark is not None else 0.0)

    def set(self, elapsed: float) -> None:
        """Continue from ``elapsed`` seconds (a resumed checkpoint's count)."""
        self._base = float(elapsed)
        if self._mark is not None:
            self._mark = self.clock()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside does not count (evaluation, checkpoint writes)."""
        if self._mark is None:
            yield
            return
        self._base += self.clock() - self._mark
        self._mark = None
        try:
            yield
        finally:
            self._mark = self.clock()


def synced_elapsed(clock: TrainingClock, world: int, device: Any) -> float:
    """Rank 0's training time, on every rank (one broadcast when ``world`` > 1), so every rank
    stops at the same step and applies the same LR."""
    value = clock.elapsed()
    if world <= 1:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())
