"""The DeepSpeed JSON, derived from the typed config (the only place it is made).

There is no hand-kept ``ds_config.json`` in the repository: ``build_ds_config`` turns the
``train`` and ``deepspeed`` sections into the dict DeepSpeed expects, and the trainer writes it
to ``<output_dir>/ds_config.json`` so every run records exactly what DeepSpeed saw.

Mapping (config key -> DeepSpeed key):

==================================  ==========================================================
train.micro_batch_size              train_micro_batch_size_per_gpu
train.gradient_accumulation_steps   gradient_accumulation_steps
(micro x accumulation x world)      train_batch_size
train.clip_grad_norm                gradient_clipping (0 = off)
train.lr / adam_* / weight_decay    optimizer AdamW (``torch_adam`` on CPU) or Lamb (CUDA only)
train.decay + warmup_steps          scheduler: linear -> WarmupDecayLR, cosine ->
                                    WarmupCosineLR, constant -> WarmupLR
train.min_lr_ratio                  warmup_min_lr (linear/constant) / cos_min_ratio (cosine)
deepspeed.zero_stage                zero_optimization.stage
deepspeed.offload_*                 zero_optimization.offload_optimizer / offload_param
deepspeed.precision                 bf16.enabled / fp16.enabled (+ dynamic loss scaling)
train.resume_universal              checkpoint.load_universal
deepspeed.extra                     merged recursively, last (wins over everything above)
==================================  ==========================================================

Weights & Biases logging is done by the trainer on rank 0, not through DeepSpeed's monitor,
and ``steps_per_print`` is set very large so DeepSpeed's own console prints stay quiet.
"""

from __future__ import annotations

import copy
from typing import Any

from zhbert.errors import ConfigError

STEPS_PER_PRINT = 10**9


def build_ds_config(cfg, world_size: int, device_type: str) -> dict[str, Any]:
    """DeepSpeed config dict for ``cfg`` (a PretrainConfig) on ``world_size`` ranks.

    ``device_type`` is the accelerator's device name: ``"cuda"``, ``"cpu"``, ...
    """
    t, d = cfg.train, cfg.deepspeed
    on_cpu = device_type == "cpu"
    if world_size < 1:
        raise ConfigError(f"world size must be >= 1, got {world_size}")

    if d.optimizer == "lamb" and device_type != "cuda":
        raise ConfigError(
            f"deepspeed.optimizer=lamb needs CUDA (DeepSpeed's FusedLamb); this run is on {device_type!r}. "
            "Use deepspeed.optimizer=adamw."
        )
    if d.precision == "fp16" and on_cpu:
        raise ConfigError("deepspeed.precision=fp16 is not supported on CPU; use bf16 or fp32")

    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "train_batch_size": t.micro_batch_size * t.gradient_accumulation_steps * world_size,
        "gradient_clipping": float(t.clip_grad_norm),
        "steps_per_print": STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
    }

    # ---- optimizer
    betas = [t.adam_beta1, t.adam_beta2]
    if d.optimizer == "lamb":
        ds["optimizer"] = {"type": "Lamb", "params": {
            "lr": t.lr, "betas": betas, "eps": t.adam_eps, "weight_decay": t.weight_decay}}
    else:
        torch_adam = d.torch_adam if d.torch_adam is not None else (on_cpu or device_type != "cuda")
        params = {"lr": t.lr, "betas": betas, "eps": t.adam_eps, "weight_decay": t.weight_decay,
                  "torch_adam": bool(torch_adam)}
        if not torch_adam:
            params["adam_w_mode"] = True
        ds["optimizer"] = {"type": "AdamW", "params": params}
        if torch_adam and d.offload_optimizer != "none":
            # ZeRO-Offload insists on DeepSpeedCPUAdam unless told otherwise.
            ds["zero_force_ds_cpu_optimizer"] = False

    # ---- learning-rate schedule (DeepSpeed steps it once per optimizer step)
    min_lr = t.lr * t.min_lr_ratio
    if t.decay == "linear":
        ds["scheduler"] = {"type": "WarmupDecayLR", "params": {
            "warmup_min_lr": min_lr, "warmup_max_lr": t.lr, "warmup_num_steps": t.warmup_steps,
            "total_num_steps": max(t.max_steps, t.warmup_steps + 1), "warmup_type": "linear"}}
    elif t.decay == "cosine":
        ds["scheduler"] = {"type": "WarmupCosineLR", "params": {
            "total_num_steps": max(t.max_steps, t.warmup_steps + 1), "warmup_num_steps": t.warmup_steps,
            "warmup_min_ratio": t.min_lr_ratio, "cos_min_ratio": t.min_lr_ratio, "warmup_type": "linear"}}
    else:  # constant after warmup
        ds["scheduler"] = {"type": "WarmupLR", "params": {
            "warmup_min_lr": min_lr, "warmup_max_lr": t.lr, "warmup_num_steps": t.warmup_steps,
            "warmup_type": "linear"}}

    # ---- precision
    if d.precision == "bf16":
        ds["bf16"] = {"enabled": True}
    elif d.precision == "fp16":
        ds["fp16"] = {"enabled": True, "loss_scale": float(d.loss_scale), "initial_scale_power": 16,
                      "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1}

    # ---- ZeRO
    zero: dict[str, Any] = {"stage": d.zero_stage}
    if d.zero_stage >= 1 and not on_cpu:
        zero.update({"overlap_comm": True, "contiguous_gradients": True,
                     "reduce_bucket_size": 5e7, "allgather_bucket_size": 5e7})
    if d.zero_stage == 3:
        # We gather full fp32 weights ourselves for the HF export (zhbert/checkpoint.py).
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    if d.offload_optimizer != "none":
        zero["offload_optimizer"] = _offload(d.offload_optimizer, d.nvme_path, on_cpu)
    if d.offload_param != "none":
        zero["offload_param"] = _offload(d.offload_param, d.nvme_path, on_cpu)
    ds["zero_optimization"] = zero

    if getattr(t, "resume_universal", False):
        ds["checkpoint"] = {"load_universal": True}

    return deep_merge(ds, d.extra)


def _offload(device: str, nvme_path, on_cpu: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"device": device, "pin_memory": not on_cpu}
    if device == "nvme":
        out["nvme_path"] = nvme_path
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively by ``extra`` (a new dict; inputs are not modified)."""
    out = copy.deepcopy(base)
    for k, v in (extra or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out
