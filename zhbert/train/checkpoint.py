"""Checkpoints: the ``step_<N>/`` layout, atomic saves, resume discovery and HF export.

Layout of one checkpoint (``<output_dir>/checkpoints/step_<N>/``)::

    step_<N>/
      ds/                 DeepSpeed state for resuming: engine.save_checkpoint(ds/, tag=global_step<N>)
        latest            (DeepSpeed's pointer to the tag)
        global_step<N>/   model + optimizer (+ ZeRO shards, one file per rank) + LR scheduler
      hf/                 HF-format export, fp32, both heads: config.json, model.safetensors,
                          vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json
      rng/rank_<r>.pt     torch (and CUDA) RNG state of every rank (dropout)
      meta.json           step, samples/tokens seen, data position, resolved config, versions,
                          world size ... and ``"complete": true``, written last

Atomicity: every rank writes into ``step_<N>.tmp/``; after a barrier rank 0 writes meta.json
(``complete`` last) and renames the directory to ``step_<N>``; a second barrier follows. A
directory without a complete meta.json or with missing files (a run killed mid-save, a full
disk) is never picked for resuming: :func:`find_latest` warns and falls back to the previous
checkpoint. Multi-node runs need ``output_dir`` on a shared file system.

World-size change: DeepSpeed's ZeRO state is sharded per rank. Convert a checkpoint to a
*universal* checkpoint (:func:`to_universal`, or the command it runs), then resume with
``train.resume=<step dir> train.resume_universal=true`` on any number of ranks.

``zhbert export CKPT OUT`` (:func:`export`) turns any checkpoint into a HF directory: it copies
``hf/`` when present, otherwise consolidates the DeepSpeed state (ZeRO-1/2/3 shards via
``deepspeed.utils.zero_to_fp32``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from zhbert.errors import CheckpointError, ConfigError, TrainingDiverged, disk_error
from zhbert.files import write_json_atomic
from zhbert.hub.layout import (DS_DIR, HF_DIR, META_NAME, RNG_DIR, checkpoints_dir, list_checkpoints,
                                safetensors_problem)
from zhbert.train.launch import barrier

FORMAT_VERSION = 1
HF_REQUIRED = ("config.json", "model.safetensors", "vocab.txt")
# Model-config keys that fix the shapes of the weights: a resume must not change them.
SHAPE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings", "type_vocab_size", "pre_layernorm")

# Every .pt file zhbert reads is opened by torch's weights-only unpickler, which rebuilds
# tensors and builtin containers and nothing else. DeepSpeed's own state files also pickle the
# classes below (plain records: a loss-scaler's numbers, an enum, a dataclass of two ints), so
# they are allowed by name; any other global in a file is refused before it can run. Files that
# DeepSpeed's loader unpickles itself (resume, ZeRO consolidation) pass this check first.
DS_SAFE_GLOBALS = ("deepspeed.runtime.fp16.loss_scaler.LossScaler",
                   "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
                   "deepspeed.runtime.zero.config.ZeroStageEnum",
                   "deepspeed.utils.tensor_fragment.fragment_address")



def ds_tag(step: int) -> str:
    return f"global_step{step}"


# ------------------------------------------------------------------------------ discovery


def read_meta(step_dir: str | Path) -> dict[str, Any]:
    """meta.json of a checkpoint; CheckpointError when missing or unreadable."""
    p = Path(step_dir) / META_NAME
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{p}: missing (incomplete checkpoint?)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{p}: unreadable: {e}") from None


def check_complete(step_dir: str | Path, verify: bool = False) -> Optional[str]:
    """None when ``step_dir`` is a complete checkpoint, else the reason it is not.

    Always: meta.json marked complete, the HF files present and ``model.safetensors`` as long
    as its header says, every DeepSpeed file of the recorded size. ``verify=True`` (resume,
    export) also recomputes the sha256 recorded at save time and opens every ``.pt`` file with
    the weights-only unpickler: a bit flip or a crafted pickle is found here, not as an
    ``UnpicklingError`` inside DeepSpeed.
    """
    d = Path(step_dir)
    if not d.is_dir():
        return f"{d}: not a directory"
    try:
        meta = read_meta(d)
    except CheckpointError as e:
        return str(e)
    if meta.get("complete") is not True:
        return f"{d / META_NAME}: not marked complete"
    for name in HF_REQUIRED:
        f = d / HF_DIR / name
        if not f.is_file() or f.stat().st_size == 0:
            return f"{f}: missing or empty"
    tag_dir = d / DS_DIR / meta.get("ds_tag", "")
    if not tag_dir.is_dir():
        return f"{tag_dir}: DeepSpeed state missing"
    expected = meta.get("ds_files") or {}
    for name, size in expected.items():
        f = tag_dir / name
        if not f.is_file() or f.stat().st_size != size:
            return f"{f}: missing or truncated"
    problem = safetensors_problem(d / HF_DIR / "model.safetensors")
    if problem:
        return problem
    if verify:
        for rel, digest in (meta.get("sha256") or {}).items():
            f = d / rel
            if not f.is_file():
                if rel.startswith(RNG_DIR + "/"):
                    continue  # resumable, but not exactly: the trainer warns
                return f"{f}: missing"
            if sha256_file(f) != digest:
                return f"{f}: sha256 differs from the one recorded at save time (corrupt)"
        for f in sorted(tag_dir.rglob("*.pt")) + sorted((d / RNG_DIR).glob("*.pt")):
            try:
                safe_torch_load(f, mmap=True)
            except CheckpointError as e:
                return str(e)
    return None



def sha256_file(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _safe_globals() -> list:
    import importlib

    out = []
    for name in DS_SAFE_GLOBALS:
        module, _, attr = name.rpartition(".")
        try:
            out.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):  # another DeepSpeed version: nothing to allow
            pass
    return out


def safe_torch_load(path: str | Path, *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with :data:`DS_SAFE_GLOBALS` allowed.

    A file that needs any other class is refused (CheckpointError naming it and the global),
    and so is one that does not unpickle (bit flips, truncation). ``mmap=True`` maps tensor
    storages instead of reading them: a cheap check of a large file's pickle.
    """
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        text = str(e)
        bad = re.search(r"GLOBAL ([\w.]+)", text)
        if bad or "Unsupported global" in text:
            raise CheckpointError(f"{path}: refused: the file would import {bad.group(1) if bad else 'a class'} "
                                  "when unpickled; zhbert loads checkpoint files with torch.load(weights_only=True) "
                                  "and DeepSpeed's allow-listed state classes only") from None
        raise CheckpointError(f"{path}: corrupt ({text.strip().splitlines()[-1] if text.strip() else 'unpickling failed'})") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError) as e:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: corrupt or truncated ({text})") from None



def find_latest(root: str | Path, verify: bool = False) -> Optional[Path]:
    """The newest complete checkpoint under ``root``; newer incomplete (or, with ``verify``,
    corrupt) ones are skipped with a warning naming the reason."""
    for _, p in reversed(list_checkpoints(root)):
        reason = check_complete(p, verify=verify)
        if reason is None:
            return p
        warnings.warn(f"skipping incomplete or corrupt checkpoint {p}: {reason}; using the previous one",
                      stacklevel=2)
    return None


def resolve_resume(resume: str, output_dir: str | Path) -> Optional[Path]:
    """``train.resume`` -> the checkpoint directory to load, or None for a fresh start.

    ``auto``: newest complete checkpoint of this run (None if there is none); ``never``: None;
    anything else: that directory (a ``step_<N>`` dir, or a run/checkpoints dir whose newest
    complete checkpoint is taken).

    Every candidate is verified (sha256 and weights-only unpickling, see :func:`check_complete`);
    with ``auto``, a corrupt newest checkpoint is skipped with a warning, as an incomplete one is.
    """
    if resume == "never":
        return None
    if resume == "auto":
        return find_latest(checkpoints_dir(output_dir), verify=True)
    p = Path(resume)
    if not p.exists():
        raise CheckpointError(f"train.resume: {p} does not exist")
    if not (p / META_NAME).exists():
        for cand in (p, p / "checkpoints"):
            latest = find_latest(cand, verify=True) if cand.is_dir() else None
            if latest is not None:
                return latest
        raise CheckpointError(f"train.resume: {p} holds no complete checkpoint (no meta.json)")
    reason = check_complete(p, verify=True)
    if reason is not None:
        raise CheckpointError(f"train.resume: {p} is not a complete checkpoint: {reason}")
    return p


def normalization_key(norm: Optional[dict]) -> tuple[bool, bool]:
    """(fullwidth, t2s); None (nothing recorded) is raw text."""
    return (bool(norm.get("fullwidth")), bool(norm.get("t2s"))) if norm else (False, False)


def check_normalization(theirs: Optional[dict], ours: Optional[dict], what: str, data_dir: str,
                        allow: bool) -> None:
    """``what`` (a checkpoint) was trained on text normalised as ``theirs``; the data as
    ``ours``. A difference is a ConfigError unless ``train.allow_normalization_change``."""
    a, b = normalization_key(theirs), normalization_key(ours)
    if a == b:
        return
    msg = (f"{what} was trained on text normalised with fullwidth={a[0]}, t2s={a[1]} but data.dir {data_dir} "
           f"was prepared with fullwidth={b[0]}, t2s={b[1]}")
    if allow:
        warnings.warn(f"{msg} (train.allow_normalization_change=true)", stacklevel=2)
        return
    raise ConfigError(f"{msg}; prepare the data with data.fullwidth={str(a[0]).lower()} "
                      f"data.t2s={str(a[1]).lower()}, or set train.allow_normalization_change=true to "
                      "train on it anyway")


def check_resume_compatible(step_dir: str | Path, meta: dict[str, Any], model_config, tokenizer,
                            data_dir: str | Path, allow_normalization_change: bool = False) -> None:
    """Refuse (CheckpointError, one line) to resume ``step_dir`` with another model shape or
    with data tokenized differently: another vocabulary (size or sha256, also when the size is
    the same) or another text normalisation.

    The checkpoint's side comes from meta.json (``model_config``, ``vocab_sha256``,
    ``text_normalization``), or from its ``hf/`` files for checkpoints saved before those keys.
    """
    d = Path(step_dir)
    data_vocab = Path(data_dir) / "vocab.txt"
    old = meta.get("model_config") or {}
    new = model_config.to_dict()
    if "vocab_size" in old and old["vocab_size"] != new["vocab_size"]:
        raise CheckpointError(f"cannot resume {d}: it was trained with a {old['vocab_size']}-token vocabulary but "
                              f"data.dir {data_dir} has {new['vocab_size']} tokens ({data_vocab}); use a new "
                              "train.output_dir (or train.resume=never) for a run on this data")
    changed = [k for k in SHAPE_KEYS if k in old and old.get(k) != new.get(k)]
    if changed:
        what = ", ".join(f"{k} {old.get(k)}, config {new.get(k)}" for k in changed)
        raise CheckpointError(f"cannot resume {d}: the model shape changed (checkpoint has {what}); use a new "
                              "train.output_dir, or model.init_from to start from its weights")
    from zhbert.prep.tokenizer import ChineseTokenizer

    hf_tok = None
    theirs = meta.get("vocab_sha256")
    if theirs is None and (d / HF_DIR / "vocab.txt").is_file():
        hf_tok = ChineseTokenizer.from_dir(d / HF_DIR)
        theirs = hf_tok.vocab_sha256()
    if theirs is not None and theirs != tokenizer.vocab_sha256():
        raise CheckpointError(f"cannot resume {d}: its vocabulary (sha256 {theirs[:12]}…) is not the one of data.dir "
                              f"{data_dir} ({data_vocab}, sha256 {tokenizer.vocab_sha256()[:12]}…), although both "
                              "have the same size: the ids would mean other characters")
    if "text_normalization" in meta:
        norm = meta["text_normalization"]
    elif (d / HF_DIR / "vocab.txt").is_file():
        norm = (hf_tok or ChineseTokenizer.from_dir(d / HF_DIR)).normalization
    else:
        return
    from zhbert.errors import ConfigError

    try:
        check_normalization(norm, tokenizer.normalization, f"cannot resume {d}: it", str(data_dir),
                            allow_normalization_change)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def load_into(engine, step_dir: str | Path, meta: dict[str, Any], *, world: int, resume_universal: bool) -> None:
    """Load ``step_dir``'s DeepSpeed state (weights, optimizer, LR schedule) into ``engine``.

    ZeRO-0 state (one replicated file) loads on any number of ranks; sharded state (ZeRO 1-3)
    needs the same world size, or its universal conversion with ``train.resume_universal``.
    """
    d = Path(step_dir)
    tag = meta["ds_tag"]
    sharded = is_sharded(d)
    if sharded and meta.get("world_size") != world and not resume_universal:
        raise CheckpointError(
            f"{d} was saved by {meta.get('world_size')} ranks, this run has {world}, and its "
            f"ZeRO stage {meta.get('zero_stage')} state is sharded per rank. Convert it with "
            f"`zhbert universal {d}` and resume with train.resume={d} train.resume_universal=true")
    if sharded and resume_universal:
        tag = meta.get("ds_universal_tag") or universal_tag(d)
        if not (d / DS_DIR / tag).is_dir():
            raise CheckpointError(f"{d}: no universal checkpoint {tag}; run `zhbert universal {d}` first")
    load_path, _ = engine.load_checkpoint(str(d / DS_DIR), tag=tag, load_optimizer_states=True,
                                          load_lr_scheduler_states=True)
    if load_path is None:
        raise CheckpointError(f"{d}: DeepSpeed could not load tag {tag}")


def run_meta(cfg, *, samples_seen: int, tokens_seen: int, position, batches, data_dir: str, tokenizer,
             model_config, nonfinite_steps: int, train_seconds: float = 0.0) -> dict[str, Any]:
    """What a training checkpoint records besides the DeepSpeed state (meta.json; the layout
    keys -- step, ds_tag, world size, file sizes and hashes -- are added by save_checkpoint)."""
    from zhbert.config import to_dict

    return {"samples_seen": samples_seen, "tokens_seen": tokens_seen,
            "data_position": position.to_dict(), "global_micro_batch": batches.global_micro,
            "batches_per_epoch": batches.batches_per_epoch,
            "seed": cfg.train.seed, "zero_stage": cfg.deepspeed.zero_stage,
            "precision": cfg.deepspeed.precision, "data_dir": str(Path(data_dir).resolve()),
            "vocab_sha256": tokenizer.vocab_sha256(), "text_normalization": tokenizer.normalization,
            "nonfinite_steps": nonfinite_steps,
            "train_seconds": train_seconds,  # training time so far (zhbert.train.schedule); resume continues it
            "model_config": model_config.to_dict(), "config": to_dict(cfg),
            "rng_note": "per-rank torch RNG states in rng/rank_<r>.pt"}


# ------------------------------------------------------------------------------ saving


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("zhbert", "torch", "deepspeed", "transformers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    out["python"] = sys.version.split()[0]
    return out


def full_state_dict(engine, zero_stage: int, rank: int) -> Optional[dict]:
    """fp32 CPU copy of the full model state dict on rank 0 (None on other ranks).

    Collective under ZeRO-3 (parameters are gathered with ``GatheredParameters``): every rank
    must call it. Under bf16/fp16 the module's (low-precision) weights are cast to fp32.
    """
    module = engine.module
    if zero_stage == 3:
        import deepspeed

        params = list(module.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            sd = {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()} if rank == 0 else None
        return sd
    if rank != 0:
        return None
    return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}


def save_hf(state_dict: dict, config, directory: str | Path, tokenizer=None) -> Path:
    """Write a HF ``BertForPreTraining`` directory from an (fp32) state dict."""
    from zhbert.model.weights import save_state_dict

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(d, architectures=["BertForPreTraining"])
    save_state_dict(state_dict, d / "model.safetensors")  # tied decoder keys left out, as transformers does
    if tokenizer is not None:
        tokenizer.save(d)
    return d


def save_checkpoint(engine, *, output_dir: str | Path, step: int, meta: dict[str, Any], model_config,
                    tokenizer, zero_stage: int, keep_last: int) -> Path:
    """Save ``step_<step>`` atomically (collective: every rank calls it). Returns the path.

    Refused (TrainingDiverged, nothing written) when any weight is NaN/inf. A failed write (a
    full or read-only disk) removes ``step_<step>.tmp`` and raises CheckpointError ("no space
    left on device: PATH"); the earlier checkpoints are untouched, since they are pruned only
    after the new one is complete.
    """
    import torch
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    root = checkpoints_dir(output_dir)
    final = root / f"step_{step}"
    tmp = root / f"step_{step}.tmp"
    device = getattr(engine, "device", torch.device("cpu"))
    if not _all_ranks(_local_weights_finite(engine.module), device):
        raise TrainingDiverged(f"step {step}: the weights hold NaN/inf, so no checkpoint was written; "
                               f"last good checkpoint: {find_latest(root) or 'none'}")
    tag = ds_tag(step)
    failure: Optional[BaseException] = None
    try:
        if rank == 0:
            if tmp.exists():
                shutil.rmtree(tmp)
            (tmp / RNG_DIR).mkdir(parents=True)
        barrier()
        # the model config travels inside DeepSpeed's model-states file too, so a bare DeepSpeed
        # folder (without meta.json/hf/) can still be exported
        engine.save_checkpoint(str(tmp / DS_DIR), tag=tag, save_latest=True,
                               client_state={"zhbert_step": step, "zhbert_model_config": model_config.to_dict()})
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        torch.save(rng, tmp / RNG_DIR / f"rank_{rank}.pt")
        sd = full_state_dict(engine, zero_stage, rank)
        if rank == 0:
            save_hf(sd, model_config, tmp / HF_DIR, tokenizer)
            del sd
    except (OSError, RuntimeError) as e:
        failure = e
    if _all_ranks(failure is None, device):
        barrier()
        if rank == 0:
            try:
                _finish_save(tmp, final, tag, meta, step, world)
            except (OSError, RuntimeError) as e:
                failure = e
        ok = _all_ranks(failure is None, device)
    else:
        ok = False
    if not ok:
        where = disk_error(failure, tmp) if failure is not None else None  # before freeing the space
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        barrier()
        reason = str(where) if where else (f"{type(failure).__name__}: {failure}" if failure else "another rank failed")
        raise CheckpointError(f"checkpoint of step {step} not written ({reason}); removed {tmp}; earlier "
                              f"checkpoints are intact (newest: {find_latest(root) or 'none'})")
    if rank == 0:
        prune(root, keep_last)
    barrier()
    return final


def _finish_save(tmp: Path, final: Path, tag: str, meta: dict[str, Any], step: int, world: int) -> None:
    """Rank 0: meta.json (sizes and sha256 of every file a resume reads, ``complete`` last),
    then the rename that publishes the checkpoint."""
    tag_dir = tmp / DS_DIR / tag
    hashed = [f for f in sorted(tag_dir.iterdir()) if f.is_file()] + sorted((tmp / RNG_DIR).glob("*.pt"))
    hashed.append(tmp / HF_DIR / "model.safetensors")
    meta = dict(meta, format_version=FORMAT_VERSION, step=step, ds_tag=tag, world_size=world,
                ds_files={f.name: f.stat().st_size for f in sorted(tag_dir.iterdir()) if f.is_file()},
                rng_files=[f"{RNG_DIR}/rank_{r}.pt" for r in range(world)],
                sha256={f.relative_to(tmp).as_posix(): sha256_file(f) for f in hashed},
                versions=versions(), saved_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    meta.pop("complete", None)
    meta["complete"] = True  # last key: a reader that sees it saw the whole file
    write_json_atomic(tmp / META_NAME, meta, default=str)
    if final.exists():  # same step saved again (e.g. a restarted run): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)


def _local_weights_finite(module) -> bool:
    """No NaN/inf in this rank's parameters (its partition, ``ds_tensor``, under ZeRO-3)."""
    import torch

    flags = [torch.isfinite(getattr(p, "ds_tensor", p).detach()).all() for p in module.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def _all_ranks(ok: bool, device) -> bool:
    """True when ``ok`` holds on every rank (one all-reduce; no collective in one process)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def prune(root: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints (and stale ``*.tmp``)."""
    removed = []
    complete = [p for _, p in list_checkpoints(root) if check_complete(p) is None]
    for p in complete[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    for p in Path(root).glob("step_*.tmp"):
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def load_rng(step_dir: str | Path, rank: int) -> bool:
    """Restore this rank's RNG state; False (nothing restored) when the file is missing."""
    import torch

    f = Path(step_dir) / RNG_DIR / f"rank_{rank}.pt"
    if not f.is_file():
        return False
    state = safe_torch_load(f)
    if not (isinstance(state, dict) and isinstance(state.get("torch"), torch.Tensor)):
        raise CheckpointError(f"{f}: not a zhbert RNG state file (expected {{'torch': ByteTensor}})")
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    return True


def universal_tag(step_dir: str | Path) -> str:
    return read_meta(step_dir)["ds_tag"] + "_universal"


def is_sharded(step_dir: str | Path) -> bool:
    """Whether the DeepSpeed state is split per rank (ZeRO 1-3 ``*optim_states.pt`` shards).

    ZeRO-0 state (model + optimizer in one ``mp_rank_00_model_states.pt``) is replicated: any
    number of ranks resumes from it as it is, with no universal conversion.
    """
    d = Path(step_dir)
    tag_dir = d / DS_DIR / read_meta(d)["ds_tag"]
    return any(tag_dir.glob("*optim_states.pt"))


def to_universal(step_dir: str | Path) -> Path:
    """Convert ``step_<N>/ds/<tag>`` into a DeepSpeed universal checkpoint ``<tag>_universal``.

    Runs ``python -m deepspeed.checkpoint.ds_to_universal --input_folder ds/<tag>
    --output_folder ds/<tag>_universal --inject_missing_state``. Resume from it (any world size)
    with ``train.resume=<step_dir> train.resume_universal=true``.
    """
    d = Path(step_dir)
    reason = check_complete(d)
    if reason is not None:
        raise CheckpointError(f"cannot convert {d}: {reason}")
    meta = read_meta(d)
    if not is_sharded(d):
        raise NothingToConvert(f"{d}: ZeRO stage {meta.get('zero_stage', 0)} state is not sharded per rank; it "
                               "resumes on any number of ranks as it is (no conversion needed)")
    src = d / DS_DIR / meta["ds_tag"]
    dst = d / DS_DIR / universal_tag(d)
    if dst.exists():
        shutil.rmtree(dst)
    cmd = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(src),
           "--output_folder", str(dst), "--inject_missing_state", "--num_extract_workers", "1",
           "--num_merge_workers", "1"]
    env = dict(os.environ)
    env.setdefault("DS_ACCELERATOR", "cpu" if not _cuda() else "cuda")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        shutil.rmtree(dst, ignore_errors=True)
        last = next((x.strip() for x in reversed(r.stderr.splitlines()) if x.strip()), f"exit {r.returncode}")
        raise CheckpointError(f"DeepSpeed's ds_to_universal failed for {src}: {last}")
    meta["ds_universal_tag"] = dst.name
    write_json_atomic(d / META_NAME, {**{k: v for k, v in meta.items() if k != "complete"}, "complete": True}, default=str)
    return dst


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


# ------------------------------------------------------------------------------ export


def export(ckpt: str | Path, out: str | Path, tokenizer_dir: Optional[str | Path] = None) -> Path:
    """Write the HF-format directory for checkpoint ``ckpt`` into ``out``.

    ``ckpt`` may be a ``step_<N>`` directory (its ``hf/`` is copied; without one the DeepSpeed
    state is consolidated), a run's output dir / checkpoints dir (newest complete checkpoint),
    or a bare DeepSpeed checkpoint folder (with ``latest`` or a ``global_step*`` tag dir).
    Tokenizer files come from ``hf/`` or ``tokenizer_dir``; the model config from ``hf/`` or
    ``meta.json``'s ``model_config``.
    """
    ckpt, out = Path(ckpt), Path(out)
    if not ckpt.exists():
        raise CheckpointError(f"{ckpt}: no such checkpoint")
    if not (ckpt / META_NAME).exists() and not (ckpt / "latest").exists() and not _tag_dirs(ckpt):
        latest = find_latest(ckpt) or find_latest(ckpt / "checkpoints")
        if latest is None:
            raise CheckpointError(f"{ckpt}: no complete checkpoint found (expected step_<N>/ with meta.json)")
        ckpt = latest
    if out.exists() and any(out.iterdir()):
        raise CheckpointError(f"{out}: output directory exists and is not empty")

    hf = ckpt / HF_DIR
    if all((hf / n).is_file() for n in ("config.json", "model.safetensors")):
        problem = safetensors_problem(hf / "model.safetensors")
        recorded = (read_meta(ckpt).get("sha256") or {}).get(f"{HF_DIR}/model.safetensors") \
            if (ckpt / META_NAME).exists() else None
        if problem is None and recorded and sha256_file(hf / "model.safetensors") != recorded:
            problem = f"{hf / 'model.safetensors'}: sha256 differs from the one recorded at save time (corrupt)"
        if problem:
            raise CheckpointError(f"cannot export {ckpt}: {problem}")
        out.mkdir(parents=True, exist_ok=True)
        for f in hf.iterdir():
            if f.is_file():
                shutil.copy2(f, out / f.name)
        if tokenizer_dir is not None:
            _copy_tokenizer(tokenizer_dir, out)
        return out

    # Only DeepSpeed state: consolidate (works for ZeRO-0/1/2/3 checkpoints).
    from zhbert.model.modeling import BertConfig

    ds_dir, tag = _locate_ds(ckpt)
    meta = read_meta(ckpt) if (ckpt / META_NAME).exists() else {}
    if meta.get("model_config"):
        config = BertConfig.from_dict(meta["model_config"], source=f"{ckpt / META_NAME}: model_config")
    elif (hf / "config.json").exists():
        config = BertConfig.from_pretrained(hf)
    else:
        d = _client_model_config(ds_dir, tag)
        if d is None:
            raise CheckpointError(f"{ckpt}: no model config (meta.json model_config, hf/config.json or "
                                  "zhbert_model_config in the DeepSpeed model states)")
        config = BertConfig.from_dict(d, source=f"{ckpt}: zhbert_model_config")
    sd = consolidate(ds_dir, tag)
    tok = None
    for cand in (tokenizer_dir, hf if (hf / "vocab.txt").exists() else None,
                 meta.get("data_dir")):
        if cand and (Path(cand) / "vocab.txt").exists():
            from zhbert.prep.tokenizer import ChineseTokenizer

            tok = ChineseTokenizer.from_dir(cand)
            break
    if tok is None:
        warnings.warn(f"{ckpt}: no tokenizer found; {out} gets model files only", stacklevel=2)
    save_hf(sd, config, out, tok)
    return out


def consolidate(ds_dir: str | Path, tag: Optional[str] = None) -> dict:
    """fp32 full state dict from DeepSpeed state in ``ds_dir`` (tag dir inside it)."""
    import torch

    ds_dir = Path(ds_dir)
    tag = tag or _read_latest(ds_dir)
    tag_dir = ds_dir / tag
    if not tag_dir.is_dir():
        raise CheckpointError(f"{tag_dir}: DeepSpeed checkpoint tag not found")
    for f in sorted(tag_dir.glob("*.pt")):  # before DeepSpeed's own loader unpickles them
        safe_torch_load(f, mmap=True)
    if any(tag_dir.glob("*optim_states.pt")) and any(tag_dir.glob("zero_pp_rank_*")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        try:
            sd = get_fp32_state_dict_from_zero_checkpoint(str(ds_dir), tag=tag)
        except Exception as e:  # corrupt shards etc.
            raise CheckpointError(f"{tag_dir}: cannot consolidate ZeRO shards: {e}") from None
        sd = {k: v.float() for k, v in sd.items()}
    else:
        files = sorted(tag_dir.glob("mp_rank_*_model_states.pt"))
        if not files:
            raise CheckpointError(f"{tag_dir}: no model states file")
        state = safe_torch_load(files[0])
        if not isinstance(state, dict) or not isinstance(state.get("module"), dict):
            raise CheckpointError(f"{files[0]}: no 'module' state dict (not a DeepSpeed model-states file)")
        sd = {k: v.float() for k, v in state["module"].items()}
    # A ZeRO-consolidated state dict stores shared (tied) parameters once.
    from zhbert.model.weights import with_tied

    return with_tied(sd)


def _client_model_config(ds_dir: Path, tag: Optional[str]) -> Optional[dict]:
    files = sorted((Path(ds_dir) / (tag or _read_latest(Path(ds_dir)))).glob("*mp_rank_00_model_states.pt"))
    if not files:
        return None
    state = safe_torch_load(files[0], mmap=True)
    return state.get("zhbert_model_config") if isinstance(state, dict) else None


def _tag_dirs(d: Path) -> list[Path]:
    return [p for p in d.glob("global_step*") if p.is_dir()] if d.is_dir() else []


def _read_latest(ds_dir: Path) -> str:
    latest = ds_dir / "latest"
    if latest.is_file():
        return latest.read_text().strip()
    tags = sorted(_tag_dirs(ds_dir), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
    if not tags:
        raise CheckpointError(f"{ds_dir}: no DeepSpeed checkpoint (no 'latest' file or global_step* dir)")
    return tags[-1].name


def _locate_ds(ckpt: Path) -> tuple[Path, Optional[str]]:
    if (ckpt / DS_DIR).is_dir():
        meta = read_meta(ckpt) if (ckpt / META_NAME).exists() else {}
        return ckpt / DS_DIR, meta.get("ds_tag")
    return ckpt, None


def _copy_tokenizer(src: str | Path, out: Path) -> None:
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        f = Path(src) / name
        if f.is_file():
            shutil.copy2(f, out / name)


class NothingToConvert(CheckpointError):
    """``zhbert universal`` on a checkpoint whose state is not sharded: not a failure."""
