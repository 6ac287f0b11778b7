"""Which weights does a name mean? Every checkpoint argument -> one complete local HF directory.

``model.init_from``, ``zhbert eval clue --model``, ``zhbert release CKPT`` and ``data.vocab``
all take the same kinds of name and resolve them by the same rule (:func:`resolve_model_dir`)::

    chinese-roberta-wwm-ext              registry name  -> hub snapshot / URL bundle (downloaded once)
    hfl/chinese-macbert-base             hub id         -> hub snapshot
    https://example.org/zhbert-tiny.tar.gz   URL        -> downloaded bundle
    path/to/model                        HF directory   -> itself
    runs/base/checkpoints/step_300       step directory -> its hf/
    runs/base  (or runs/base/checkpoints)  run directory -> hf/ of its newest COMPLETE step

Step 1, :func:`resolve_model`: a name that is not a local path is fetched
(:func:`zhbert.hub.download.download`); a local Google directory (``bert_config.json``, a
TensorFlow checkpoint) is converted into the cache (:mod:`zhbert.model.convert`); any other
local directory is returned as it is, whatever it holds.

Step 2, :func:`resolve_model_dir`: that directory -> the HF directory inside it. "Complete"
has one definition (:func:`hf_dir_problem`, :func:`step_problem`):

* an HF directory holds ``config.json``, ``vocab.txt`` and a weights file (``model.safetensors``,
  ``pytorch_model.bin`` or a sharded index), none of them empty; a ``model.safetensors`` must
  be as long as its header says (:func:`zhbert.train.checkpoint.safetensors_problem`: reads the
  header, not the tensors), so a copy cut short is not picked;
* a step directory (``step_<N>/``) is complete when its ``hf/`` is, and its ``meta.json`` is
  marked ``"complete": true`` -- the trainer writes that key last, before it renames
  ``step_<N>.tmp`` to ``step_<N>``. A step directory without a ``meta.json`` (an ``hf/``
  copied there by hand) is judged by its ``hf/`` alone.

The DeepSpeed state (``ds/``) is deliberately not looked at: it is what resuming a run needs
(``train.resume``, :func:`zhbert.train.checkpoint.find_latest`), not what a user of the weights
needs, and a step whose ``ds/`` was pruned or never copied is still the newest model. So on

    run/checkpoints/step_10/   hf/ complete, ds/ complete
    run/checkpoints/step_20/   hf/ complete, no ds/

every caller picks ``step_20/hf`` (while ``train.resume=auto`` would pick step_10). A run
directory's newer steps that are not complete are skipped with a warning that names the
reason; a directory named explicitly that is not complete is a ``CheckpointError`` that
says what was looked for. Errors start with the setting or flag being resolved (``what``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

from zhbert.errors import CheckpointError, ConfigError
from zhbert.hub.download import download
from zhbert.model.convert import ensure_hf_layout, is_google_format
from zhbert.model.weights import SAFETENSORS_NAME, WEIGHT_FILES
from zhbert.hub.layout import HF_DIR, META_NAME, list_checkpoints, safetensors_problem

LOOKED_FOR = "config.json + weights (" + " / ".join(WEIGHT_FILES) + ") + vocab.txt"


# ============================================================================ name -> directory
def resolve_model(name_or_path: str | Path, cache_dir: Optional[str | Path] = None,
                  revision: Optional[str] = None,
                  registry_files: Optional[list[str | Path]] = None) -> Path:
    """A checkpoint name, hub id, URL or local directory -> a local directory.

    A local directory is returned as is (an HF dir, a zhbert ``step_<N>/`` or run dir:
    :func:`resolve_model_dir` picks the weights inside), unless it holds a Google
    ``bert_config.json`` / TF checkpoint: then a converted copy under the cache is returned.
    """
    text = str(name_or_path)
    local = Path(text).expanduser()
    if local.exists():
        if not local.is_dir():
            raise CheckpointError(f"{local}: a checkpoint must be a directory (config.json + weights)")
        if is_google_format(local):
            return ensure_hf_layout(local, Path(cache_dir) if cache_dir else None)
        return local
    return download(text, cache_dir=cache_dir, revision=revision, registry_files=registry_files)


# ============================================================================== completeness
def _nonempty(f: Path) -> bool:
    return f.is_file() and f.stat().st_size > 0


def hf_dir_problem(d: Path) -> Optional[str]:
    """None when ``d`` is a complete HF model directory, else what is missing or broken."""
    weights = next((d / n for n in WEIGHT_FILES if (d / n).is_file()), None)
    missing = [n for n, ok in (("config.json", _nonempty(d / "config.json")),
                               ("weights", weights is not None and _nonempty(weights)),
                               ("vocab.txt", _nonempty(d / "vocab.txt"))) if not ok]
    if missing:
        return f"{d}: {', '.join(missing)} missing or empty"
    return safetensors_problem(weights) if weights.name == SAFETENSORS_NAME else None


def step_problem(step_dir: Path) -> Optional[str]:
    """None when the step directory's ``hf/`` is complete and its meta.json (if any) says so."""
    meta = step_dir / META_NAME
    if meta.is_file():
        try:
            complete = json.loads(meta.read_text(encoding="utf-8")).get("complete") is True
        except (OSError, ValueError, AttributeError):
            return f"{meta}: unreadable"
        if not complete:
            return f"{meta}: not marked complete"
    return hf_dir_problem(step_dir / HF_DIR)


# ============================================================================ directory -> HF dir
def _steps_newest_first(root: Path) -> list[Path]:
    """``step_<N>`` directories of a run dir (under checkpoints/) or of a checkpoints dir."""
    steps = list_checkpoints(root / "checkpoints") or list_checkpoints(root)
    return [p for _, p in reversed(steps)]


def resolve_model_dir(name_or_path: str | Path, what: str = "model.init_from", *,
                      cache_dir: Optional[str | Path] = None,
                      registry_files: Optional[list[str | Path]] = None) -> Path:
    """Any checkpoint name or directory -> a complete local HF directory (module docstring).

    ``what`` names the setting being resolved (``model.init_from``, ``--model``, ...) at the
    start of every error: ConfigError for an empty value, CheckpointError when nothing
    complete is found (or the name cannot be fetched).
    """
    text = "" if name_or_path is None else str(name_or_path).strip()
    if not text:
        raise ConfigError(f"{what}: empty; expected a checkpoint directory, registry name, hub id or URL")
    try:
        root = resolve_model(text, cache_dir=cache_dir, registry_files=registry_files)
    except CheckpointError as e:
        raise CheckpointError(f"{what}: {e}") from None
    if (root / "config.json").is_file():  # an HF directory (a step's hf/ named directly, too)
        problem = hf_dir_problem(root)
    elif (root / HF_DIR).is_dir() or (root / META_NAME).is_file():  # a step directory
        problem = step_problem(root)
        root = root / HF_DIR
    else:  # a run directory, or its checkpoints/
        steps = _steps_newest_first(root)
        if not steps:
            raise CheckpointError(f"{what}: {root}: no model found; looked for {LOOKED_FOR} in it, in "
                                  f"its {HF_DIR}/ and in its checkpoints/step_<N>/{HF_DIR}/")
        skipped = []
        for step in steps:
            problem = step_problem(step)
            if problem is None:
                for reason in skipped:
                    warnings.warn(f"{what}: skipping incomplete checkpoint ({reason}); using "
                                  f"{step / HF_DIR}", stacklevel=2)
                return step / HF_DIR
            skipped.append(problem)
        raise CheckpointError(f"{what}: {root}: no model found; looked for {LOOKED_FOR} in "
                              f"{len(steps)} checkpoints, none complete: " + "; ".join(skipped[:4])
                              + (" ..." if len(skipped) > 4 else ""))
    if problem is not None:
        raise CheckpointError(f"{what}: not a complete checkpoint: {problem}")
    return root
