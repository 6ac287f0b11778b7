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
train.schedule = time               no scheduler key: zhbert's TimeBudgetLR is passed to
                                    deepspeed.initialize (zhbert/train/schedule.py)
deepspeed.zero_stage                zero_optimization.stage
deepspeed.offload_*                 zero_optimization.offload_optimizer / offload_param
deepspeed.precision                 bf16.enabled / fp16.enabled (+ dynamic loss scaling)
deepspeed.autocast                  torch_autocast (enabled, dtype)
train.resume_universal              checkpoint.load_universal
deepspeed.config_file, .extra       merged recursively, last (see below)
==================================  ==========================================================

``deepspeed.config_file`` (what ``--deepspeed_config FILE`` sets) and ``deepspeed.extra`` (merged
over the file) may add any DeepSpeed key. The keys zhbert derives from the config above
(:data:`DERIVED`) they may only repeat: ``"auto"`` (the HF convention) is filled in with the
derived value, an equal value is accepted, any other value is refused naming both keys (a
``train_micro_batch_size_per_gpu`` of 32 would be recorded while the trainer feeds 16). The
HF size ``"auto"`` values of ZeRO (``reduce_bucket_size`` = H², ``stage3_prefetch_bucket_size``
= 0.9·H², ``stage3_param_persistence_threshold`` = 10·H, H = model hidden size) are filled in
too; ``"auto"`` anywhere else is refused.

Weights & Biases logging is done by the trainer on rank 0, not through DeepSpeed's monitor,
and ``steps_per_print`` is set very large so DeepSpeed's own console prints stay quiet.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Optional

from zhbert.errors import ConfigError

STEPS_PER_PRINT = 10**9
AUTOCAST_MIN_DEEPSPEED = (0, 17, 2)  # the first release that reads the torch_autocast section


def _deepspeed_version() -> tuple[int, ...]:
    """The installed DeepSpeed's (major, minor, patch), from its distribution metadata."""
    import re
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("deepspeed")
    except PackageNotFoundError:
        return (0,)
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])

# DeepSpeed key path -> the zhbert config key it is derived from.
DERIVED = {
    ("train_micro_batch_size_per_gpu",): "train.micro_batch_size",
    ("gradient_accumulation_steps",): "train.gradient_accumulation_steps",
    ("train_batch_size",): "train.micro_batch_size x train.gradient_accumulation_steps x world size",
    ("gradient_clipping",): "train.clip_grad_norm",
    ("optimizer",): "deepspeed.optimizer and train.lr / adam_* / weight_decay",
    ("scheduler",): "train.schedule / train.decay / warmup_steps / max_steps / min_lr_ratio",
    ("bf16", "enabled"): "deepspeed.precision",
    ("fp16", "enabled"): "deepspeed.precision",
    ("torch_autocast", "enabled"): "deepspeed.autocast",
    ("torch_autocast", "dtype"): "deepspeed.autocast",
    ("zero_optimization", "stage"): "deepspeed.zero_stage",
}


def build_ds_config(cfg, world_size: int, device_type: str, hidden_size: Optional[int] = None) -> dict[str, Any]:
    """DeepSpeed config dict for ``cfg`` (a PretrainConfig) on ``world_size`` ranks.

    ``device_type`` is the accelerator's device name: ``"cuda"``, ``"cpu"``, ...;
    ``hidden_size`` (the model's) fills ZeRO's size ``"auto"`` values.
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

    # ---- learning-rate schedule (DeepSpeed steps it once per optimizer step). Created at
    # iteration 0 (not DeepSpeed's default -1, whose constructor warns "Attempting to get
    # learning rate from scheduler before it has started"); the trainer's scheduler.step(0)
    # then sets the first step's lr exactly as before.
    # schedule: time has no DeepSpeed scheduler: the trainer passes zhbert's TimeBudgetLR.
    min_lr = t.lr * t.min_lr_ratio
    if getattr(t, "schedule", "steps") == "time":
        pass
    elif t.decay == "linear":
        ds["scheduler"] = {"type": "WarmupDecayLR", "params": {
            "warmup_min_lr": min_lr, "warmup_max_lr": t.lr, "warmup_num_steps": t.warmup_steps,
            "total_num_steps": max(t.max_steps, t.warmup_steps + 1), "warmup_type": "linear", "last_batch_iteration": 0}}
    elif t.decay == "cosine":
        ds["scheduler"] = {"type": "WarmupCosineLR", "params": {
            "total_num_steps": max(t.max_steps, t.warmup_steps + 1), "warmup_num_steps": t.warmup_steps,
            "warmup_min_ratio": t.min_lr_ratio, "cos_min_ratio": t.min_lr_ratio, "warmup_type": "linear", "last_batch_iteration": 0}}
    else:  # constant after warmup
        ds["scheduler"] = {"type": "WarmupLR", "params": {
            "warmup_min_lr": min_lr, "warmup_max_lr": t.lr, "warmup_num_steps": t.warmup_steps,
            "warmup_type": "linear", "last_batch_iteration": 0}}

    # ---- precision
    if d.precision == "bf16":
        ds["bf16"] = {"enabled": True}
    elif d.precision == "fp16":
        ds["fp16"] = {"enabled": True, "loss_scale": float(d.loss_scale), "initial_scale_power": 16,
                      "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1}
    if d.autocast == "bf16":
        if _deepspeed_version() < AUTOCAST_MIN_DEEPSPEED:
            # an older DeepSpeed ignores the section: the run would silently be fp32
            raise ConfigError("deepspeed.autocast=bf16 needs DeepSpeed >= "
                              f"{'.'.join(map(str, AUTOCAST_MIN_DEEPSPEED))} (its torch_autocast section); installed: "
                              f"{'.'.join(map(str, _deepspeed_version()))}")
        # fp32 weights, gradients and optimizer; DeepSpeed wraps the engine's forward in
        # torch.autocast (nn.Linear and the other autocast-safe ops run in bf16)
        ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}

    # ---- ZeRO
    zero: dict[str, Any] = {"stage": d.zero_stage}
    if d.zero_stage >= 1 and not on_cpu:
        zero.update({"overlap_comm": True, "contiguous_gradients": True,
                     "reduce_bucket_size": 5e7, "allgather_bucket_size": 5e7})
    if d.zero_stage == 3:
        # We gather full fp32 weights ourselves for the HF export (zhbert/train/checkpoint.py).
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    if d.offload_optimizer != "none":
        zero["offload_optimizer"] = _offload(d.offload_optimizer, d.nvme_path, on_cpu)
    if d.offload_param != "none":
        zero["offload_param"] = _offload(d.offload_param, d.nvme_path, on_cpu)
    ds["zero_optimization"] = zero

    if getattr(t, "resume_universal", False):
        ds["checkpoint"] = {"load_universal": True}

    user = deep_merge(read_config_file(d.config_file), d.extra) if d.config_file else d.extra
    return merge_user_config(ds, user, hidden_size)


def read_config_file(path: str) -> dict[str, Any]:
    """A DeepSpeed JSON file (``--deepspeed_config``); ConfigError naming it when unusable."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"deepspeed.config_file: {p} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"deepspeed.config_file: {p}: unreadable ({e})") from None
    except ValueError as e:
        raise ConfigError(f"deepspeed.config_file: {p}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"deepspeed.config_file: {p}: must be a JSON object")
    return data


def merge_user_config(derived: dict[str, Any], user: dict[str, Any], hidden_size: Optional[int]) -> dict[str, Any]:
    """``derived`` updated by the user's keys (``deepspeed.config_file`` + ``deepspeed.extra``),
    after filling ``"auto"`` values and refusing any that contradict a derived key."""
    user = copy.deepcopy(user or {})
    for path, source in DERIVED.items():
        node = user
        for k in path[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if not isinstance(node, dict) or path[-1] not in node:
            continue
        value, mine = node[path[-1]], _get(derived, path)
        if mine is None and path[-1] == "enabled":
            mine = False  # bf16/fp16/torch_autocast not derived: that mode is off
        if mine is None and path == ("torch_autocast", "dtype"):
            continue  # autocast off: its dtype does not matter
        if value == "auto" or value == mine:
            if mine is None and path == ("scheduler",):  # schedule: time derives no scheduler
                del node[path[-1]]
                continue
            node[path[-1]] = copy.deepcopy(mine)
            continue
        if isinstance(value, dict) and isinstance(mine, dict):  # optimizer / scheduler section
            conflicts = _section_conflicts(value, mine)
            if not conflicts:  # the user may add params zhbert does not derive (amsgrad, ...)
                params = {k: v for k, v in value.get("params", {}).items() if v != "auto"}
                node[path[-1]] = deep_merge(mine, {"params": params})
                continue
            value, mine = conflicts[0][1], conflicts[0][2]
            path = path + (conflicts[0][0],)
        raise ConfigError(f"deepspeed config: {'.'.join(path)} is {json.dumps(value)} but zhbert derives "
                          f"{json.dumps(mine)} from {source}; set that key instead (or drop it from "
                          "deepspeed.extra / the --deepspeed_config file)")
    h = hidden_size
    sizes = {"reduce_bucket_size": h * h if h else None,
             "stage3_prefetch_bucket_size": int(0.9 * h * h) if h else None,
             "stage3_param_persistence_threshold": 10 * h if h else None}
    zero = user.get("zero_optimization")
    if isinstance(zero, dict):
        for k, v in sizes.items():
            if zero.get(k) == "auto" and v is not None:
                zero[k] = v
    left = _autos(user)
    if left:
        raise ConfigError(f"deepspeed config: {left[0]} is \"auto\", which zhbert cannot fill in; give a value")
    return deep_merge(derived, user)


def _get(d: dict, path: tuple) -> Any:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _section_conflicts(user: dict, mine: dict) -> list[tuple[str, Any, Any]]:
    """(key, user value, derived value) for each key of a repeated optimizer/scheduler section
    that contradicts the derived one; ``"auto"`` and keys zhbert does not derive never do."""
    out = []
    if user.get("type", mine.get("type")) not in (mine.get("type"), "auto"):
        out.append(("type", user.get("type"), mine.get("type")))
    params, derived = user.get("params", {}), mine.get("params", {})
    if not isinstance(params, dict):
        return out + [("params", params, derived)]
    for k, v in params.items():
        if v != "auto" and k in derived and v != derived[k] and not (
                isinstance(v, list) and list(v) == list(derived[k] if isinstance(derived[k], (list, tuple)) else [])):
            out.append((f"params.{k}", v, derived[k]))
    return out


def _autos(d: Any, prefix: str = "") -> list[str]:
    if isinstance(d, dict):
        return [x for k, v in d.items() for x in _autos(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")] if d == "auto" else []


def finetune_ds_config(batch_size: int, clip_grad_norm: float, bf16: bool) -> dict[str, Any]:
    """The DeepSpeed JSON of CLUE fine-tuning (``zhbert eval clue --deepspeed``): one process,
    ZeRO 0, zhbert's own optimizer and schedule passed to deepspeed.initialize."""
    return {"train_micro_batch_size_per_gpu": batch_size, "gradient_accumulation_steps": 1,
            "gradient_clipping": clip_grad_norm, "zero_optimization": {"stage": 0},
            "bf16": {"enabled": bool(bf16)}, "steps_per_print": STEPS_PER_PRINT}


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
