"""What a training step measures, and where it goes: named step sums, throughput and MFU,
``metrics.jsonl``, wandb and the console.

Step sums. Each optimizer step adds, per micro-batch, the losses, accuracy counts and token
counts of this rank into a float64 tensor kept on the device (:class:`DeviceSums`), so one
step costs one device-to-host sync, after the all-reduce over ranks. The fields have names
(:class:`StepTotals`, :class:`EvalTotals`), not positions.

Logged loss: the mean over the A x W micro-batches of one optimizer step (each micro-batch's
loss is its own mean over masked tokens, as in the gradient DeepSpeed averages), so it does
not depend on how a global batch is split over ranks and accumulation steps.

MFU estimate: model FLOPs per token = 6 x (non-embedding parameters) + 12 x L x H x T (the
attention score and value products, forward + backward, PaLM appendix B), where T is the mean
padded sequence length of the step; MFU = FLOPs/s / (world_size x train.peak_tflops x 1e12).
With ``peak_tflops: 0`` a dense bf16/fp32 peak is guessed for known GPUs; on CPU MFU is not
reported.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from zhbert.config import PretrainConfig, to_dict
from zhbert.errors import DataError
from zhbert.files import write_text_atomic

# Dense peak TFLOP/s per device (bf16/fp16, fp32 incl. TF32 where it applies), for the MFU guess.
_PEAK_TFLOPS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0),
                "A800": (312.0, 156.0), "H800": (989.0, 494.0), "L40S": (362.0, 183.0),
                "A10": (125.0, 62.5), "V100": (125.0, 15.7), "4090": (165.0, 82.6), "3090": (71.0, 35.6)}


# ------------------------------------------------------------------------------ step sums


@dataclass(frozen=True)
class StepTotals:
    """One optimizer step's sums over its micro-batches and ranks."""

    loss: float  # sum of the micro-batches' losses (each a mean over its masked tokens + NSP)
    mlm_loss: float
    nsp_loss: float
    mlm_correct: float  # masked tokens predicted right
    mlm_count: float  # masked tokens
    nsp_correct: float
    nsp_count: float  # rows with an NSP/SOP label
    tokens: float  # real (non-pad) tokens
    samples: float  # sequences
    padded_tokens: float  # B x T over the micro-batches


@dataclass(frozen=True)
class EvalTotals:
    """Validation sums over batches and ranks (losses weighted by their counts)."""

    mlm_loss_sum: float
    mlm_correct: float
    mlm_count: float
    nsp_loss_sum: float
    nsp_correct: float
    nsp_count: float


class DeviceSums:
    """Named float64 sums on ``device``: :meth:`add` per micro-batch (no sync), :meth:`totals`
    all-reduces over ranks and syncs once."""

    def __init__(self, totals_cls, device):
        import torch

        self.cls, self.device = totals_cls, device
        self.names = [f.name for f in dataclasses.fields(totals_cls)]
        self.acc = torch.zeros(len(self.names), dtype=torch.float64, device=device)

    def add(self, **values) -> None:
        import torch

        self.acc += torch.stack([torch.as_tensor(values[n], dtype=torch.float64, device=self.device).detach()
                                 for n in self.names])

    def totals(self, world: int):
        import torch.distributed as dist

        if world > 1:
            dist.all_reduce(self.acc)
        return self.cls(*self.acc.cpu().tolist())


def model_flops_per_token(config, seq_len: float) -> float:
    """6 x non-embedding params + 12 x L x H x T (see module docstring)."""
    h, L, i = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_layer = 4 * h * h + 2 * h * i + 4 * h + i + h + 4 * h  # QKVO, FFN, biases, 2 LayerNorms
    non_embedding = L * per_layer + h * h + h  # + pooler
    return 6.0 * non_embedding + 12.0 * L * h * seq_len


def peak_tflops(cfg: PretrainConfig, device_type: str) -> Optional[float]:
    if cfg.train.peak_tflops > 0:
        return cfg.train.peak_tflops
    if device_type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name()
    for key, (low, fp32) in _PEAK_TFLOPS.items():
        if key in name:
            return low if cfg.deepspeed.precision != "fp32" else fp32
    return None


class Throughput:
    """Tokens, samples and model FLOPs since the last logged record (a window), per second."""

    def __init__(self, model_config, peak: Optional[float], world: int):
        self.model_config, self.peak, self.world = model_config, peak, world
        self.reset()

    def reset(self) -> None:
        self.t0, self.tokens, self.samples, self.flops = time.perf_counter(), 0, 0, 0.0

    def add(self, s: StepTotals) -> None:
        self.tokens += int(s.tokens)
        self.samples += int(s.samples)
        self.flops += model_flops_per_token(self.model_config, s.padded_tokens / max(1.0, s.samples)) * s.tokens

    def record(self) -> dict[str, float]:
        """``tokens_per_s``, ``samples_per_s`` (and ``mfu`` with a peak) of the window; resets it."""
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rec = {"tokens_per_s": self.tokens / dt, "samples_per_s": self.samples / dt}
        if self.peak:
            rec["mfu"] = self.flops / dt / (self.peak * 1e12 * self.world)
        self.reset()
        return rec


# ------------------------------------------------------------------------------ metrics file


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only records with ``step <= step`` (a resumed run re-logs what came after)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if rec.get("step", 0) <= step:
            keep.append(line)
    write_text_atomic(path, "".join(x + "\n" for x in keep))


def read_metrics(run_dir: str | Path) -> list[dict]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        raise DataError(f"{p}: not found (is {run_dir} a training output_dir?)")
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


# metrics.jsonl key -> wandb key: training curves under train/, throughput under perf/,
# validation (already "eval/...") as it is.
_WANDB_KEYS = {"tokens_per_s": "perf/tokens_per_s", "samples_per_s": "perf/samples_per_s", "mfu": "perf/mfu"}


def wandb_key(key: str) -> str:
    return _WANDB_KEYS.get(key, key if "/" in key else f"train/{key}")


def finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def duration(seconds: float) -> str:
    m, sec = divmod(int(seconds + 0.5), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


class RunLogger:
    """metrics.jsonl + wandb + progress, rank 0 only.

    Progress is a tqdm bar on a terminal; otherwise (nohup, SLURM, a pipe) one plain line per
    logged step: step, loss, MLM/NSP accuracy, lr, tokens/s and ETA.
    """

    def __init__(self, cfg: PretrainConfig, out: Path, start_step: int, rank: int,
                 run_info: Optional[dict[str, Any]] = None):
        self.rank = rank
        self.path = out / "metrics.jsonl"
        self.wandb = None
        self.bar = None
        self.max_steps = cfg.train.max_steps
        self.budget_s = cfg.train.max_minutes * 60 if cfg.train.max_minutes is not None else None
        self.t0, self.step0 = time.perf_counter(), start_step
        if rank != 0:
            return
        truncate_metrics(self.path, start_step)
        if cfg.wandb.mode != "disabled":
            import wandb

            wdir = Path(cfg.wandb.dir or out)
            wdir.mkdir(parents=True, exist_ok=True)
            # A resumed run continues the same wandb run (same id, resume="allow"), so its
            # curves stay one line; a fresh run (step 0) gets a new id.
            id_file = out / "wandb_run_id"
            run_id = id_file.read_text().strip() if start_step > 0 and id_file.is_file() else None
            if not run_id:
                run_id = uuid.uuid4().hex[:12]
                id_file.write_text(run_id + "\n")
            self.wandb = wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity, name=cfg.wandb.name,
                                    group=cfg.wandb.group, tags=cfg.wandb.tags or None, mode=cfg.wandb.mode,
                                    dir=str(wdir), config={**to_dict(cfg), **(run_info or {})},
                                    reinit="finish_previous", id=run_id, resume="allow")
            where = self.wandb.url or f"{self.wandb.dir} (offline; upload with: wandb sync {Path(self.wandb.dir).parent})"
            print(f"[zhbert] wandb run {run_id}: {where}", flush=True)
        from tqdm.auto import tqdm

        self.bar = tqdm(total=cfg.train.max_steps, initial=start_step, desc="pretrain", dynamic_ncols=True,
                        disable=None)

    def log(self, rec: dict) -> None:
        if self.rank != 0:
            return
        rec = {k: finite_or_none(v) for k, v in rec.items()}  # NaN/inf -> null: strict JSON
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, allow_nan=False) + "\n")
        if self.wandb is not None:
            self.wandb.log({wandb_key(k): v for k, v in rec.items() if k != "step" and v is not None},
                           step=rec["step"])
        if self.bar is None or self.bar.disable:
            print(self.line(rec), flush=True)

    def line(self, rec: dict) -> str:
        """``step 20/300 | loss 7.412 | mlm_acc 0.061 | nsp_acc 0.52 | lr 3.3e-04 | 5,210 tok/s | ETA 4m10s``"""
        parts = [f"step {rec['step']}/{self.max_steps}", f"loss {fmt(rec.get('loss'))}"]
        for k in ("mlm_acc", "nsp_acc"):
            if rec.get(k) is not None:
                parts.append(f"{k} {rec[k]:.3f}")
        parts.append(f"lr {rec['lr']:.2e}")
        if rec.get("tokens_per_s") is not None:
            parts.append(f"{rec['tokens_per_s']:,.0f} tok/s")
        if rec.get("eval/mlm_acc") is not None:
            parts.append(f"eval mlm_acc {rec['eval/mlm_acc']:.3f}")
        done = rec["step"] - self.step0
        if done > 0 and rec["step"] < self.max_steps:
            eta = (time.perf_counter() - self.t0) / done * (self.max_steps - rec["step"])
            if self.budget_s is not None and rec.get("train_s") is not None:  # the time budget may end it first
                eta = min(eta, max(0.0, self.budget_s - rec["train_s"]))
            parts.append(f"ETA {duration(eta)}")
        if rec.get("nonfinite"):
            parts.append("NON-FINITE")
        return "[zhbert] " + " | ".join(parts)

    def advance(self, n: int, postfix: dict) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()
