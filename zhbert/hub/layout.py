"""What a checkpoint directory is, shared by everything that reads one (zhbert.hub.resolve,
zhbert.train.checkpoint): the layout and its cheap completeness checks.

A training run's ``output_dir``::

    checkpoints/step_<N>/
      hf/          a complete HF model directory (config.json, model.safetensors, vocab.txt, ...)
      ds/          DeepSpeed state for resuming (zhbert.train.checkpoint)
      rng/         per-rank RNG states
      meta.json    ... "complete": true, written last

Users of the weights need only ``hf/``; resuming needs ``ds/`` and ``rng/`` too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

META_NAME = "meta.json"
HF_DIR = "hf"
DS_DIR = "ds"
RNG_DIR = "rng"
_STEP_RE = re.compile(r"^step_(\d+)$")


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """All ``step_<N>`` directories under ``root`` (complete or not), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def safetensors_problem(path: str | Path) -> Optional[str]:
    """None when ``path`` is a whole safetensors file, else what is wrong (cheap: header only).

    Layout: 8-byte little-endian header length n, n bytes of JSON header whose tensors'
    ``data_offsets`` index the data block that follows; the file ends where the last one ends.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{p}: truncated (no safetensors header)"
            n = int.from_bytes(head, "little")
            size = p.stat().st_size
            if n > size - 8:
                return f"{p}: truncated (header of {n} bytes, file of {size})"
            header = json.loads(f.read(n))
    except FileNotFoundError:
        return f"{p}: missing"
    except (OSError, ValueError) as e:
        return f"{p}: not a safetensors file ({e})"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    expected = 8 + n + max(ends, default=0)
    if size != expected:
        return f"{p}: {size} bytes but its header describes {expected} (truncated or corrupt)"
    return None
