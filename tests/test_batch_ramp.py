"""The batch-size ramp (train.batch_ramp_fraction / batch_ramp_start; Cramming's batch ramp).

The schedule alone against hand-worked values; then real runs (DeepSpeed on CPU, gloo, one
rank): a ramped run's steps must be exactly the steps a plain run with that many micro-batches
per step makes from the same state (the reference resumes the ramped run's checkpoint with a
fixed ``gradient_accumulation_steps``), and the data consumed must add up to the hand-worked
micro-batch counts. Under ``schedule: time`` the ramp follows the training time (fake clock).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from _pretrain_fixtures import build_data, metrics, overrides, spawn_train


def test_ramp_accumulation_hand_worked():
    from zhbert.train.schedule import ramp_accumulation

    # start 1, final 4, ramp over the first half: 1 + floor(3u / 0.5) -> 1 on [0, 1/6),
    # 2 on [1/6, 2/6), 3 on [2/6, 1/2), 4 from u = 1/2 on
    got = [ramp_accumulation(u, 1, 4, 0.5) for u in (0.0, 0.1, 0.17, 0.3, 0.34, 0.49, 0.5, 0.9, 1.0, 1.7)]
    assert got == [1, 1, 2, 2, 3, 3, 4, 4, 4, 4]
    assert [ramp_accumulation(u, 2, 8, 1.0) for u in (0.0, 0.5, 0.99, 1.0)] == [2, 5, 7, 8]
    assert ramp_accumulation(0.0, 1, 4, 0.0) == 4  # fraction 0: no ramp
    assert ramp_accumulation(-0.2, 3, 5, 0.5) == 3  # clipped at the start


@pytest.mark.parametrize("ov, message", [
    (["train.batch_ramp_fraction=1.5"], "train.batch_ramp_fraction must be in [0, 1]"),
    (["train.batch_ramp_fraction=-0.1"], "train.batch_ramp_fraction must be in [0, 1]"),
    (["train.batch_ramp_fraction=0.5", "train.gradient_accumulation_steps=4", "train.batch_ramp_start=5"],
     "train.batch_ramp_start must be in [1, train.gradient_accumulation_steps = 4]"),
    (["train.batch_ramp_start=0"], "train.batch_ramp_start must be in [1,"),
])
def test_ramp_settings_are_validated_in_one_line(ov, message):
    from zhbert.config import load_config
    from zhbert.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(None, ov)
    assert message in str(e.value) and "\n" not in str(e.value)


def _weights(step_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(step_dir / "hf" / "model.safetensors"))


def _plain(data: Path, out: Path, *extra: str, zero: int = 0) -> list[str]:
    # constant LR after 2 warmup steps, so a reference run with another max_steps applies the same LRs
    return overrides(data, out, "train.decay=constant", "train.checkpoint_every=5", "train.keep_last=10",
                     f"deepspeed.zero_stage={zero}", *extra)


@pytest.mark.slow
@pytest.mark.parametrize("zero", [0, 2])  # 0: zhbert's own fp32 step; 2: DeepSpeed's ZeRO optimizer
def test_ramped_steps_equal_plain_accumulation_steps(tmp_path, zero):
    from zhbert.train.checkpoint import read_meta

    data = build_data(tmp_path)
    ramp, ref2, ref3 = tmp_path / "ramp", tmp_path / "ref2", tmp_path / "ref3"
    # 20 steps, final accumulation 3, ramp from 1 over the first half of max_steps:
    # A = 1 + floor(2 * u / 0.5) with u = (step - 1) / 20 -> steps 1-5: 1, 6-10: 2, 11-20: 3
    spawn_train(1, [
        _plain(data, ramp, "train.max_steps=20", "train.gradient_accumulation_steps=3",
               "train.batch_ramp_start=1", "train.batch_ramp_fraction=0.5", zero=zero),
        # the references: the ramped run's checkpoints, continued with a fixed accumulation
        _plain(data, ref2, "train.max_steps=10", "train.gradient_accumulation_steps=2",
               f"train.resume={ramp / 'checkpoints' / 'step_5'}", zero=zero),
        _plain(data, ref3, "train.max_steps=15", "train.gradient_accumulation_steps=3",
               f"train.resume={ramp / 'checkpoints' / 'step_10'}", zero=zero),
    ])
    expected = [1] * 5 + [2] * 5 + [3] * 10
    recs = metrics(ramp)
    assert [r["step"] for r in recs] == list(range(1, 21))
    assert [r["global_batch_size"] for r in recs] == [2 * a for a in expected]  # micro batch 2
    assert [r["samples"] for r in recs] == [2 * sum(expected[:s]) for s in range(1, 21)]
    for step in (5, 10, 15, 20):  # the data position: micro-batches consumed so far
        assert read_meta(ramp / "checkpoints" / f"step_{step}")["data_position"]["batch_index"] \
            == sum(expected[:step])
    # a ramped step with A micro-batches is exactly a plain DeepSpeed step with A (loss / A, one update)
    for ref, step in ((ref2, 10), (ref3, 15)):
        a, b = _weights(ramp / "checkpoints" / f"step_{step}"), _weights(ref / "checkpoints" / f"step_{step}")
        assert a.keys() == b.keys()
        for k in a:
            assert (a[k] == b[k]).all(), (ref.name, k)
    assert [r["loss"] for r in recs[5:10]] == [r["loss"] for r in metrics(ref2)]
    # and not trivially: the steps of another accumulation move the weights elsewhere
    w5, w10 = _weights(ramp / "checkpoints" / "step_5"), _weights(ramp / "checkpoints" / "step_10")
    assert any(not (w5[k] == w10[k]).all() for k in w5)


@pytest.mark.slow
def test_ramp_follows_training_time_under_schedule_time(tmp_path):
    """schedule: time: u = training time / budget. Fake clock, 1 s per step, 30 s budget, ramp
    1 -> 3 over the first half: A = 1 + floor(2 * u / 0.5) with u = (s - 1) / 30 for step s,
    so steps 1-8: 1, 9-15: 2, 16-30: 3 (u >= 0.5)."""
    from test_time_budget import drive

    data = build_data(tmp_path)
    out = tmp_path / "timed"
    argv = _plain(data, out, "train.schedule=time", "train.max_minutes=0.5", "train.max_steps=1000",
                  "train.gradient_accumulation_steps=3", "train.batch_ramp_start=1", "train.batch_ramp_fraction=0.5")
    [res] = drive([{"argv": argv, "clock_start": 777.0}], tmp_path)
    assert res["rc"] == 0, res["stdout"][-3000:]
    recs = metrics(out)
    expected = [1] * 8 + [2] * 7 + [3] * 15
    assert [r["step"] for r in recs] == list(range(1, 31))
    assert [r["global_batch_size"] for r in recs] == [2 * a for a in expected]
    assert recs[-1]["samples"] == 2 * sum(expected)
