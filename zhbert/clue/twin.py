"""The random-init twin of a model: the yardstick for "did pretraining help?".

Same config.json (architecture, normalisation), vocab.txt and tokenizer files as the model,
weights freshly initialised as pretraining starts them (``BertForPreTraining`` init under
``torch.manual_seed(seed)``). Fine-tuned with the same protocol, the twin gives the score the
architecture reaches without pretraining; the difference to the pretrained model is what the
pretraining bought. ``twin.json`` records the source and seed, so a rerun reuses the twin.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from zhbert.files import write_json_atomic

COPIED = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def random_twin(model_dir: str | Path, out: str | Path, seed: int = 42) -> Path:
    """Write (or reuse) the random-init twin of ``model_dir`` at ``out``; returns ``out``."""
    import torch

    from zhbert.clue.protocol import weights_sha256
    from zhbert.model.modeling import BertConfig, BertForPreTraining

    model_dir, out = Path(model_dir), Path(out)
    record = {"source": str(model_dir.resolve()), "source_weights_sha256": weights_sha256(model_dir), "seed": seed,
              "init": "BertForPreTraining initialiser (N(0, initializer_range)), torch.manual_seed(seed)"}
    marker = out / "twin.json"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == record:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if (model_dir / name).is_file():
            shutil.copy(model_dir / name, out / name)
    config_text = (model_dir / "config.json").read_text(encoding="utf-8")
    torch.manual_seed(seed)
    BertForPreTraining(BertConfig.from_pretrained(model_dir)).save_pretrained(out)
    (out / "config.json").write_text(config_text, encoding="utf-8")  # the source's, byte for byte
    write_json_atomic(marker, record)
    return out
