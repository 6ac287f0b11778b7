"""Shared test set-up: CPU DeepSpeed, offline wandb, and the optional ../shared data."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test when this checkout has none beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def bert_chinese_vocab(shared_data) -> Path:
    vocab = shared_data / "bert_base_chinese" / "vocab.txt"
    if not vocab.is_file():
        pytest.skip(f"{vocab} not present")
    return vocab


@pytest.fixture(scope="session")
def shared_corpus_sample(shared_data):
    """``sample(per_file)``: up to `per_file` evenly spaced non-blank lines of every file of
    ../shared/data/pretrain_corpus, in path order (the test is skipped when it is absent)."""
    root = shared_data / "pretrain_corpus"
    if not root.is_dir():
        pytest.skip(f"{root} not present")

    def sample(per_file: int) -> list[str]:
        texts = []
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            lines = [line for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
            texts += lines[:: max(1, len(lines) // per_file)][:per_file]
        return texts

    return sample
