"""Google's BERT releases -> HF-format directories (config.json + model.safetensors).

The Chinese BERTs of 2018-2020 (Google's ``chinese_L-12_H-768_A-12``, early HFL releases)
ship as a TensorFlow checkpoint with a Google config::

    bert_config.json                        HF field names already, plus TF-only pooler keys
    bert_model.ckpt.index / .data-*         TF variables, one per tensor (+ Adam slots)
    vocab.txt

Conversion is a renaming plus two layout fixes, done once and cached:

1. Config: ``bert_config.json`` minus the TF-only keys (``directionality``, ``pooler_*``),
   plus what HF assumes and TF BERT used: ``layer_norm_eps`` 1e-12, ``pad_token_id`` 0,
   ``model_type: bert``, ``architectures: [BertForPreTraining]`` (:func:`google_config_to_hf`).
2. Names (:func:`tf_name_to_hf`): ``/`` becomes ``.``, ``layer_3`` becomes ``layer.3``,
   ``kernel`` / ``output_weights`` become ``weight``, ``output_bias`` becomes ``bias``; the
   embedding tables get their ``.weight``; ``cls/predictions/output_bias`` is
   ``cls.predictions.bias``. Optimizer slots (``adam_m``, ``adam_v``) and ``global_step`` are
   dropped. LayerNorm ``gamma``/``beta`` are left for :func:`zhbert.model.weights.normalize_state_dict`.
3. Layout: a TF dense ``kernel`` is stored (in, out); torch's ``nn.Linear.weight`` is
   (out, in), so kernels are transposed. ``cls/seq_relationship/output_weights`` is already
   (2, H) and is not.

The TF-free half (:func:`tf_variables_to_state_dict`) is tested without TensorFlow; reading
the checkpoint (:func:`convert_tf_checkpoint`) needs it, and says so when it is missing. The
result is loaded into :class:`~zhbert.model.modeling.BertForPreTraining` before it is placed,
so a shape that disagrees with the config names the tensor.

Where the converted files go (:func:`ensure_hf_layout`): into the directory itself when it is
a fresh download being placed (``in_place``), otherwise into ``<cache>/converted/<name>-<hash
of the source path>/`` so a user's directory is never written to. Either way a reader never
sees half a conversion: a cached copy is built in a temporary directory and renamed into
place, and an in-place conversion writes ``config.json`` last.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from zhbert.errors import CheckpointError
from zhbert.model.weights import WEIGHT_FILES, has_weights

TF_INDEX = "bert_model.ckpt.index"  # marks a TensorFlow checkpoint directory
GOOGLE_CONFIG = "bert_config.json"

# Google's bert_config.json uses the HF field names already; these keys are TF-only.
_GOOGLE_ONLY_KEYS = {"directionality", "pooler_fc_size", "pooler_num_attention_heads",
                     "pooler_num_fc_layers", "pooler_size_per_head", "pooler_type"}


# =============================================================================== config
def google_config_to_hf(cfg: dict[str, Any]) -> dict[str, Any]:
    """Google ``bert_config.json`` -> HF ``config.json`` (BertForPreTraining)."""
    out = {k: v for k, v in cfg.items() if k not in _GOOGLE_ONLY_KEYS}
    out.setdefault("layer_norm_eps", 1e-12)  # TF BERT's LayerNorm epsilon
    out.setdefault("pad_token_id", 0)
    out.setdefault("model_type", "bert")
    out.setdefault("architectures", ["BertForPreTraining"])
    return out


def write_hf_config(google: Path, out: Path) -> None:
    """Translate the Google config file ``google`` into the HF config file ``out``."""
    try:
        cfg = json.loads(google.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{google}: not a valid JSON config: {e}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{google}: expected a JSON object")
    out.write_text(json.dumps(google_config_to_hf(cfg), indent=2, sort_keys=True) + "\n", encoding="utf-8")


# ================================================================== directory, in and out
def is_google_format(path: Path) -> bool:
    """bert_config.json without config.json, or a TF checkpoint without PyTorch weights."""
    if (path / "config.json").is_file():
        return (path / TF_INDEX).is_file() and not has_weights(path)
    return (path / GOOGLE_CONFIG).is_file() or (path / TF_INDEX).is_file()


def ensure_hf_layout(path: Path, cache: Optional[Path], in_place: bool = False) -> Path:
    """Return an HF-format directory for ``path`` (converting Google formats if needed).

    ``in_place`` (a fresh download being placed): write the converted files into ``path``.
    Otherwise the source is left untouched and the conversion goes to ``cache`` (default:
    zhbert's cache directory, :func:`zhbert.cache.cache_root`).
    """
    has_config = (path / "config.json").is_file()
    has_tf = (path / TF_INDEX).is_file()
    if has_config and has_weights(path):
        return path
    if not has_config and not (path / GOOGLE_CONFIG).is_file():
        if has_weights(path) or has_tf:
            raise CheckpointError(f"{path}: no config.json (or Google bert_config.json) next to the weights")
        raise CheckpointError(f"{path}: not a checkpoint directory: expected config.json and one of "
                              f"{', '.join(WEIGHT_FILES)} (or a TensorFlow {TF_INDEX})")
    if in_place:
        target = path
    else:
        from zhbert.cache import cache_root

        cache = Path(cache or cache_root())
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        target = cache / "converted" / f"{path.name}-{digest}"
        if target.is_dir() and (target / "config.json").is_file() and has_weights(target):
            return target
    if has_tf and not has_weights(path):
        return convert_tf_checkpoint(path, target)
    if not has_weights(path):
        raise CheckpointError(f"{path}: no model weights ({', '.join(WEIGHT_FILES)})")
    # bert_config.json + PyTorch weights: only the config needs translating.
    tmp = Path(tempfile.mkdtemp(prefix=".convert.", dir=_mkdir(target.parent))) if not in_place else path
    if not in_place:
        for f in path.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
    write_hf_config(path / GOOGLE_CONFIG, tmp / "config.json")
    if not in_place:
        _place_dir(tmp, target)
    return target


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _place_dir(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


# ============================================================================== weights
def tf_name_to_hf(name: str) -> Optional[tuple[str, bool]]:
    """A Google TF variable name -> (HF key, transpose?), or None for optimizer state.

    bert/encoder/layer_3/attention/self/query/kernel -> bert.encoder.layer.3.attention.self.query.weight (T)
    bert/embeddings/LayerNorm/gamma                  -> bert.embeddings.LayerNorm.gamma (normalised later)
    cls/predictions/output_bias                      -> cls.predictions.bias
    cls/seq_relationship/output_weights              -> cls.seq_relationship.weight (already (2, H))
    """
    parts = name.split("/")
    if any(p in ("adam_m", "adam_v", "AdamWeightDecayOptimizer", "AdamWeightDecayOptimizer_1")
           for p in parts) or name in ("global_step",) or not parts[0] in ("bert", "cls"):
        return None
    if name == "cls/predictions/output_bias":
        return "cls.predictions.bias", False
    out: list[str] = []
    transpose = False
    for p in parts:
        m = re.fullmatch(r"layer_(\d+)", p)
        if m:
            out += ["layer", m.group(1)]
        elif p == "kernel":
            out.append("weight")
            transpose = True
        elif p == "output_weights":
            out.append("weight")
        elif p == "output_bias":
            out.append("bias")
        else:
            out.append(p)
    key = ".".join(out)
    if parts[-1] in ("word_embeddings", "token_type_embeddings", "position_embeddings"):
        key += ".weight"
    return key, transpose


def tf_variables_to_state_dict(variables) -> dict:
    """(TF variable name, array) pairs -> normalised HF state dict (the TF-free half of the
    conversion: names mapped, kernels transposed, optimizer slots dropped, tied keys left out)."""
    import numpy as np
    import torch

    from zhbert.model.weights import normalize_state_dict, without_tied

    sd: dict[str, torch.Tensor] = {}
    for name, value in variables:
        mapped = tf_name_to_hf(name)
        if mapped is None:
            continue
        key, transpose = mapped
        arr = np.asarray(value, dtype=np.float32)
        sd[key] = torch.from_numpy(arr.T.copy() if transpose else arr)
    return without_tied(normalize_state_dict(sd))


def convert_tf_checkpoint(tf_dir: str | Path, out_dir: str | Path) -> Path:
    """Google TF BERT (bert_model.ckpt.* + bert_config.json + vocab.txt) -> HF directory.

    Needs TensorFlow (only to read the checkpoint). The result is checked by loading it into
    ``BertForPreTraining`` so a shape that disagrees with the config names the tensor.
    """
    tf_dir, out_dir = Path(tf_dir), Path(out_dir)
    if not (tf_dir / TF_INDEX).is_file():
        raise CheckpointError(f"{tf_dir}: no TensorFlow checkpoint ({TF_INDEX} missing)")
    if not (tf_dir / GOOGLE_CONFIG).is_file():
        raise CheckpointError(f"{tf_dir}: TensorFlow checkpoint without bert_config.json")
    try:
        import tensorflow as tf  # noqa: F401
    except ImportError:
        raise CheckpointError(
            f"{tf_dir} is a Google TensorFlow checkpoint ({TF_INDEX}); converting it needs "
            f"TensorFlow: `pip install tensorflow` (CPU is enough), then run the command again. "
            f"Or download the PyTorch/safetensors release of the same model instead.") from None
    from zhbert.model.weights import save_state_dict

    reader = tf.train.load_checkpoint(str(tf_dir / "bert_model.ckpt"))
    names = sorted(reader.get_variable_to_shape_map())
    sd = tf_variables_to_state_dict((n, reader.get_tensor(n)) for n in names)
    tmp = Path(tempfile.mkdtemp(prefix=".convert.", dir=_mkdir(out_dir.parent)))
    try:
        save_state_dict(sd, tmp / "model.safetensors")
        write_hf_config(tf_dir / GOOGLE_CONFIG, tmp / "config.json")
        for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
            if (tf_dir / f).is_file():
                shutil.copy2(tf_dir / f, tmp / f)
        from zhbert.model.modeling import BertForPreTraining

        BertForPreTraining.from_pretrained(tmp)  # shape vs config check, names the tensor
        if out_dir.resolve() == tf_dir.resolve():  # config.json last: it marks completion
            for f in sorted(tmp.iterdir(), key=lambda f: f.name == "config.json"):
                os.replace(f, out_dir / f.name)
            tmp.rmdir()
        else:
            _place_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
