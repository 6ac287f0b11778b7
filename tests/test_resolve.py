"""One resolver: every checkpoint argument picks the same weights (zhbert.hub.resolve).

The run below is the case that used to split the callers: its newest checkpoint, step_20, has
a complete hf/ export but no DeepSpeed state (pruned, or never copied). ``train.resume`` needs
that state and rightly falls back to step_10; a user of the weights does not, so
``model.init_from``, ``eval clue --model``, ``release CKPT`` and ``data.vocab`` must all pick
step_20's hf/ -- and all fall back to step_10 when step_20's hf/ itself is broken.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_release import make_checkpoint  # tests/ is on sys.path (pytest rootdir conftest)
from zhbert.errors import CheckpointError, ConfigError


def _with_deepspeed_state(step_dir: Path) -> None:
    """Add the ds/ part of a checkpoint as meta.json records it (sizes checked, not contents)."""
    step = int(step_dir.name.removeprefix("step_"))
    tag = step_dir / "ds" / f"global_step{step}"
    tag.mkdir(parents=True)
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"\0" * 64)
    meta = json.loads((step_dir / "meta.json").read_text())
    meta.pop("complete")
    meta.update(ds_tag=tag.name, ds_files={"mp_rank_00_model_states.pt": 64}, complete=True)
    (step_dir / "meta.json").write_text(json.dumps(meta))


@pytest.fixture
def run(tmp_path) -> Path:
    """run/checkpoints/step_10 (complete, with DeepSpeed state) and step_20 (hf/ only)."""
    from zhbert.train.checkpoint import check_complete

    _with_deepspeed_state(make_checkpoint(tmp_path, step=10, seed=0))
    make_checkpoint(tmp_path, step=20, seed=1)
    run = tmp_path / "run"
    # the premise: a resume takes step_10, since step_20 cannot be resumed
    assert check_complete(run / "checkpoints" / "step_10") is None
    assert "DeepSpeed state missing" in check_complete(run / "checkpoints" / "step_20")
    return run


def _init_from(arg: str) -> Path:
    from zhbert.train.trainer import resolve_init_from

    return resolve_init_from(arg)


def _eval_clue(arg: str) -> Path:
    from zhbert.clue.run import resolve_model_dir  # what run_clue calls

    return resolve_model_dir(arg, what="--model")


def _release(arg: str) -> Path:
    from zhbert.release import locate_checkpoint

    return locate_checkpoint(arg).hf


def _data_vocab(arg: str) -> Path:
    from zhbert.prep.prepare import resolve_vocab

    vocab = resolve_vocab(arg)
    assert vocab.name == "vocab.txt"
    return vocab.parent


CALLERS = {"model.init_from": _init_from, "eval clue --model": _eval_clue, "release CKPT": _release,
           "data.vocab": _data_vocab}


@pytest.mark.parametrize("caller", CALLERS)
def test_run_dir_resolves_to_newest_step_with_complete_weights(run, caller):
    resolve = CALLERS[caller]
    step_20 = run / "checkpoints" / "step_20" / "hf"
    assert resolve(str(run)) == step_20
    assert resolve(str(run / "checkpoints")) == step_20
    assert resolve(str(run / "checkpoints" / "step_20")) == step_20
    assert resolve(str(step_20)) == step_20


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("damage", ["truncated weights", "meta.json not complete"])
def test_newer_step_with_broken_weights_is_skipped(run, caller, damage):
    step_20 = run / "checkpoints" / "step_20"
    if damage == "truncated weights":  # a copy cut short: the safetensors header says more
        weights = step_20 / "hf" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])
    else:  # killed mid-save (meta.json written, "complete" not yet true)
        (step_20 / "meta.json").write_text(json.dumps({"step": 20, "complete": False}))
    with pytest.warns(UserWarning, match="skipping incomplete"):
        assert CALLERS[caller](str(run)) == run / "checkpoints" / "step_10" / "hf"
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        CALLERS[caller](str(step_20))  # named explicitly: an error, not a silent fallback


def test_complete_means_config_weights_and_vocab(run, tmp_path):
    from zhbert.hub import hf_dir_problem, resolve_model_dir

    hf = run / "checkpoints" / "step_10" / "hf"
    assert hf_dir_problem(hf) is None
    (hf / "vocab.txt").unlink()
    assert "vocab.txt missing or empty" in hf_dir_problem(hf)
    with pytest.raises(CheckpointError, match=r"^model\.init_from: not a complete checkpoint: .*vocab\.txt"):
        resolve_model_dir(hf)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"^--model: .*empty: no model found; looked for config\.json"):
        resolve_model_dir(empty, what="--model")
    with pytest.raises(ConfigError, match="^data.vocab: empty"):
        resolve_model_dir(" ", what="data.vocab")
