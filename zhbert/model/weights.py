"""Reading BERT checkpoints and reconciling their key names: the ONE place that does it.

Every Chinese BERT on the hub stores HF ``BertForPreTraining`` / ``BertModel`` names, but
with small variations that accumulated over the years. :func:`normalize_state_dict` maps them
all onto zhbert's names (which are exactly transformers' names):

    LayerNorm.gamma / LayerNorm.beta          -> LayerNorm.weight / LayerNorm.bias (TF-era)
    embeddings.position_ids / token_type_ids  -> dropped (buffers, not weights)
    embeddings.* / encoder.* / pooler.*       -> bert.embeddings.* ... (bare BertModel files)
    cls.predictions.decoder.bias only         -> cls.predictions.bias (the two are tied)

and :func:`load_into` checks the result against a model: a shape mismatch or a missing
encoder tensor is a :class:`CheckpointError`; heads absent from the file (MLM, NSP, pooler,
classifier) stay randomly initialised and are reported; unexpected keys are a warning.

Files are read by :func:`load_state_dict`: ``model.safetensors`` (or the sharded
``model.safetensors.index.json``) first, then ``pytorch_model.bin`` (or its index) through
``torch.load(weights_only=True)`` so a checkpoint can never run code.

Tied parameters. BERT's MLM decoder shares its weight with the word embeddings and its bias
with ``cls.predictions.bias`` (:data:`TIED_KEYS`, tied key -> the tensor it shares). A
safetensors file cannot hold one tensor under two names, so every writer drops the tied names
(:func:`without_tied`, used by :func:`save_state_dict`), as transformers' ``save_pretrained``
does; a state dict gathered from DeepSpeed may lack them too, and :func:`with_tied` puts them
back as aliases of their targets. Code elsewhere calls these helpers instead of listing the keys.

torch is imported inside the functions that need it, so the constants here (file names,
:data:`WEIGHT_FILES`, :data:`TIED_KEYS`) cost nothing to import (``zhbert download`` uses them).
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from zhbert.errors import CheckpointError

if TYPE_CHECKING:
    from torch import Tensor, nn

log = logging.getLogger(__name__)

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_NAME = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
# Every weights file an HF directory may hold, in the order they are preferred for reading.
WEIGHT_FILES = (SAFETENSORS_NAME, SAFETENSORS_INDEX, BIN_NAME, BIN_INDEX)

# Parameters the model ties to another one (tied key -> the key it shares its tensor with);
# a checkpoint may carry them or not.
TIED_KEYS = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
_BUFFER_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
_BARE_PREFIXES = ("embeddings.", "encoder.", "pooler.")


# ----------------------------------------------------------------------------- reading files
def has_weights(directory: str | Path) -> bool:
    """Does ``directory`` hold one of :data:`WEIGHT_FILES`?"""
    return any((Path(directory) / name).is_file() for name in WEIGHT_FILES)


def find_weights_file(path: str | Path) -> Path:
    """The weights file to read for ``path`` (a file, or a directory in preference order)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"checkpoint not found: {path}")
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise CheckpointError(
        f"no weights in {path}: expected {SAFETENSORS_NAME}, {SAFETENSORS_INDEX}, {BIN_NAME} "
        f"or {BIN_INDEX}")


def _read_one(file: Path) -> dict[str, Tensor]:
    import torch

    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(file), device="cpu")
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{file}: refusing to unpickle (weights_only=True rejects objects other than "
            f"tensors; convert the checkpoint to safetensors): {e}") from None
    except Exception as e:  # truncated / corrupt files: safetensors, zip or pickle errors
        raise CheckpointError(f"{file}: cannot read checkpoint: {type(e).__name__}: {e}") from None


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read all tensors of a checkpoint file or directory (sharded indexes included), on CPU."""
    from torch import Tensor

    file = find_weights_file(path)
    if file.name.endswith(".index.json"):
        try:
            weight_map = json.loads(file.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{file}: bad shard index ({e})") from None
        sd: dict[str, Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            if not (file.parent / shard).is_file():
                raise CheckpointError(f"{file}: shard {shard} is missing")
            sd.update(_read_one(file.parent / shard))
        return sd
    sd = _read_one(file)
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{file}: not a state dict of tensors")
    return sd


# ------------------------------------------------------------------------------ key names
def normalize_state_dict(sd: dict[str, Tensor], target_prefix: str = "bert.") -> dict[str, Tensor]:
    """Map legacy / bare / tied key variants onto HF ``BertForPreTraining`` names.

    ``target_prefix`` is where the encoder lives in the target model: ``"bert."`` for
    BertForPreTraining / BertForSequenceClassification, ``""`` for a bare BertModel.
    Returns a new dict; tensors are not copied.
    """
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
        key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
        if key.endswith(_BUFFER_SUFFIXES):
            continue
        if key.startswith(_BARE_PREFIXES):
            key = "bert." + key
        out[key] = value
    # The decoder bias and cls.predictions.bias are one tensor; keep the canonical name.
    dec_bias = out.pop("cls.predictions.decoder.bias", None)
    if dec_bias is not None and "cls.predictions.bias" not in out:
        out["cls.predictions.bias"] = dec_bias
    if target_prefix != "bert.":
        out = {(target_prefix + k[len("bert."):] if k.startswith("bert.") else k): v
               for k, v in out.items()}
    return out


# ------------------------------------------------------------------------------ tied keys
def without_tied(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``sd`` minus the :data:`TIED_KEYS` names: what a weights file stores."""
    return {k: v for k, v in sd.items() if k not in TIED_KEYS}


def with_tied(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``sd`` with every absent tied key aliasing its target (when the target is present),
    e.g. a ZeRO-consolidated state dict, which stores shared parameters once."""
    out = dict(sd)
    for key, target in TIED_KEYS.items():
        if key not in out and target in out:
            out[key] = out[target]
    return out


def save_state_dict(sd: Mapping[str, Tensor], file: str | Path) -> Path:
    """Write ``sd`` as one safetensors file (tied keys dropped, tensors made contiguous)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in without_tied(sd).items()}, str(file),
              metadata={"format": "pt"})
    return Path(file)


# ---------------------------------------------------------------------------- into a model
@dataclass
class LoadReport:
    """What :func:`load_into` did. Key lists are sorted model-side names."""

    source: str
    loaded: list[str] = field(default_factory=list)
    initialized: list[str] = field(default_factory=list)  # absent from the file: random init
    unexpected: list[str] = field(default_factory=list)   # in the file, not in the model

    def summary(self) -> str:
        return (f"{self.source}: loaded {len(self.loaded)} tensors, "
                f"{len(self.initialized)} randomly initialised, {len(self.unexpected)} unexpected")


def _short(keys: list[str], n: int = 12) -> str:
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_into(model: nn.Module, sd: dict[str, Tensor], *, optional_prefixes: tuple[str, ...],
              source: str = "checkpoint", ignore_prefixes: tuple[str, ...] = ()) -> LoadReport:
    """Copy a *normalised* state dict into ``model`` after checking names and shapes.

    optional_prefixes: model keys that may be absent from the file (heads, pooler); they keep
        their random initialisation and are listed in ``report.initialized``.
    ignore_prefixes: file keys dropped silently (e.g. ``cls.`` when fine-tuning).
    Raises CheckpointError on a shape mismatch or a missing required key.
    """
    import torch

    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith(ignore_prefixes)}
    report = LoadReport(source)
    for key, value in sd.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            hint = ""
            if key.endswith("word_embeddings.weight"):
                hint = " (vocab_size in config.json does not match the checkpoint's vocabulary)"
            raise CheckpointError(
                f"{source}: tensor {key} has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(own[key].shape)} in the model{hint}")
    tied = {k: v for k, v in TIED_KEYS.items() if k in own}
    for key, target in tied.items():  # an untied copy in the file is redundant
        if key in sd and target in sd and not torch.equal(sd[key], sd[target]):
            warnings.warn(f"{source}: {key} differs from {target}; zhbert ties them and uses "
                          f"{target}", stacklevel=3)
    missing = sorted(k for k in own if k not in sd and k not in tied)
    required = [k for k in missing if not k.startswith(optional_prefixes)]
    if required:
        raise CheckpointError(f"{source}: missing {len(required)} required tensors: "
                              f"{_short(required)}")
    report.initialized = missing
    report.unexpected = sorted(k for k in sd if k not in own)
    report.loaded = sorted(k for k in sd if k in own and k not in tied)
    if report.unexpected:
        warnings.warn(f"{source}: ignoring {len(report.unexpected)} unexpected tensors: "
                      f"{_short(report.unexpected)}", stacklevel=3)
    if report.initialized:
        log.warning("%s: randomly initialised (not in checkpoint): %s", source,
                    _short(report.initialized))
    with torch.no_grad():
        for key in report.loaded:
            own[key].copy_(sd[key])
    return report
