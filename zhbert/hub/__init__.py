"""Checkpoints by name: the registry, downloads, name/dir resolution, release bundles.

    registry.py   configs/checkpoints.yaml (+ $ZHBERT_REGISTRY, --registry): names -> hub ids / URLs
    download.py   hub snapshots; URL bundles with resume, timeouts, locks, sha256, atomic placement
    archive.py    all-or-nothing safe extraction of .tar.gz / .zip bundles
    resolve.py    ANY checkpoint argument -> one complete local HF directory (one rule for all)
    release.py    a pretraining checkpoint -> a bundle others can download

Google TF checkpoint conversion is part of the model stage (:mod:`zhbert.model.convert`);
its functions are re-exported here for code written against zhbert 0.1's ``zhbert.hub``.
"""

from zhbert.hub.archive import extract_archive
from zhbert.hub.download import (HUB_BASE_PATTERNS, HUB_BIN_PATTERNS, HUB_SAFETENSORS_PATTERNS, MARKER,
                                 cached_path, default_cache_dir, download, fetch_with_resume, list_registry,
                                 sha256_file)
from zhbert.hub.registry import BUILTIN_REGISTRY, FORMATS, RegistryEntry, load_registry, lookup
from zhbert.hub.resolve import hf_dir_problem, resolve_model, resolve_model_dir, step_problem
from zhbert.model.convert import (TF_INDEX, convert_tf_checkpoint, google_config_to_hf, tf_name_to_hf,
                                  tf_variables_to_state_dict)
from zhbert.model.weights import WEIGHT_FILES

__all__ = [
    "BUILTIN_REGISTRY", "FORMATS", "HUB_BASE_PATTERNS", "HUB_BIN_PATTERNS", "HUB_SAFETENSORS_PATTERNS", "MARKER",
    "TF_INDEX", "WEIGHT_FILES", "RegistryEntry", "cached_path", "convert_tf_checkpoint", "default_cache_dir",
    "download", "extract_archive", "fetch_with_resume", "google_config_to_hf", "hf_dir_problem", "list_registry",
    "load_registry", "lookup", "resolve_model", "resolve_model_dir", "sha256_file", "step_problem",
    "tf_name_to_hf", "tf_variables_to_state_dict",
]
