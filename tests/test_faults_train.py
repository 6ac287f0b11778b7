"""Fault tests of pretraining and checkpoints (issue #10): real runs of scripts/pretrain.py in
subprocesses, real files corrupted on disk, a real full disk (a small tmpfs) where the test may
mount one.

Each test names the failure it reproduces; before the fixes every one of them ended "done"
with exit 0, trained on the wrong ids, ran a pickled payload or printed a library traceback.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _faults import tmpfs
from _pretrain_fixtures import REPO, SAMPLE, build_data, cpu_env, overrides, run_script

CHECKPOINT_EVERY_STEP = ["train.checkpoint_every=1", "train.keep_last=2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_data(tmp_path_factory.mktemp("fault_data"))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """A 4-step run with checkpoints at steps 2 and 4 (copied by tests that damage it)."""
    out = tmp_path_factory.mktemp("fault_run") / "run"
    r = run_script(overrides(data, out, "train.checkpoint_every=2", "train.keep_last=5"))
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def strict_json_lines(path: Path) -> list[dict]:
    def refuse(token):
        raise ValueError(f"non-JSON constant {token} in {path}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines() if line.strip()]


def hf_weights(step_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(step_dir / "hf" / "model.safetensors"))


def error_line(r: subprocess.CompletedProcess) -> str:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert lines, "no message on stderr"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return lines[-1]


def prepare(data_dir: Path, vocab: Path, *extra: str) -> Path:
    r = subprocess.run([sys.executable, "-m", "zhbert.cli", "prepare", "--input", str(SAMPLE), "--output", str(data_dir),
                        "--vocab", str(vocab), "--max-seq-length", "64", "data.validation_fraction=0.2", *extra],
                       env=cpu_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return data_dir


# ------------------------------------------------------------------------------ non-finite loss


def test_nonfinite_loss_stops_with_exit_3_and_keeps_the_last_good_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    # lr 1e6: a few finite (huge) losses, then NaN; before the fix the run ended "done", exit 0,
    # with NaN checkpoints that had pruned every finite one
    r = run_script(overrides(data, out, "train.lr=1e6", "train.max_steps=8", *CHECKPOINT_EVERY_STEP))
    assert r.returncode == 3, r.stderr[-3000:]
    recs = strict_json_lines(out / "metrics.jsonl")  # NaN is logged as null, not as bare NaN
    bad = recs[-1]["step"]
    assert bad >= 3 and recs[-1]["nonfinite"] is True and not any(x.get("nonfinite") for x in recs[:-1])
    assert all(math.isfinite(x["loss"]) for x in recs[:-1])
    msg = error_line(r)
    assert f"non-finite loss or gradient norm at step {bad} " in msg
    assert f"last good checkpoint: {out / 'checkpoints' / f'step_{bad - 1}'}" in msg
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert steps == [f"step_{bad - 2}", f"step_{bad - 1}"]  # nothing saved from the bad step on
    for name in steps:
        assert all(bool(t.isfinite().all()) for t in hf_weights(out / "checkpoints" / name).values())


@pytest.mark.parametrize("stage", [0, 1])
def test_nonfinite_skip_drops_the_step_then_stops_after_n_in_a_row(data, tmp_path, stage):
    out = tmp_path / "run"
    r = run_script(overrides(data, out, "train.lr=1e6", "train.max_steps=12", "train.checkpoint_every=1",
                             "train.keep_last=10", "train.on_nonfinite=skip", "train.max_nonfinite_skips=3",
                             f"deepspeed.zero_stage={stage}"))
    assert r.returncode == 3, r.stderr[-3000:]
    recs = strict_json_lines(out / "metrics.jsonl")
    bad = [x["step"] for x in recs if x.get("nonfinite")]
    first = bad[0]
    assert bad == [first, first + 1, first + 2] and recs[-1]["step"] == first + 2
    assert "3 steps in a row" in error_line(r) and f"at step {first + 2} " in error_line(r)
    # the bad steps were dropped: their checkpoints hold exactly the weights of the step before
    w = hf_weights(out / "checkpoints" / f"step_{first - 1}")
    for s in (first, first + 1):
        ws = hf_weights(out / "checkpoints" / f"step_{s}")
        assert all(bool((ws[k] == w[k]).all()) for k in w), f"step {s} changed the weights"
    assert not (out / "checkpoints" / f"step_{first + 2}").exists()


def test_float_keys_reject_nan_inf_and_optimizer_values_torch_rejects():
    from zhbert.config import load_config
    from zhbert.errors import ConfigError

    for ov, key in [("train.lr=.inf", "train.lr"), ("train.lr=.nan", "train.lr"), ("train.lr=1e999", "train.lr"),
                    ("train.weight_decay=.nan", "train.weight_decay"), ("masking.mask_prob=.nan", "masking.mask_prob"),
                    ("train.adam_beta1=2", "train.adam_beta1"), ("train.adam_beta2=-0.1", "train.adam_beta2"),
                    ("train.adam_eps=-1", "train.adam_eps"), ("train.weight_decay=-0.1", "train.weight_decay"),
                    ("train.on_nonfinite=ignore", "train.on_nonfinite"), ("deepspeed.loss_scale=-1", "deepspeed.loss_scale")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(None, [ov])
    r = run_script(["train.adam_beta1=2"], timeout=120)
    assert r.returncode == 2 and "train.adam_beta1 must be in [0, 1)" in error_line(r)


# ------------------------------------------------------------------------------ resume checks


def test_resume_refuses_data_from_another_vocabulary_of_the_same_size(data, trained, tmp_path):
    out = copy_run(trained, tmp_path / "run")
    vocab = (data / "vocab.txt").read_text(encoding="utf-8").splitlines()
    i, j = vocab.index("的"), vocab.index("是")
    vocab[i], vocab[j] = vocab[j], vocab[i]  # same size, two ids swapped
    swapped = tmp_path / "swapped_vocab.txt"
    swapped.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    other = prepare(tmp_path / "other_data", swapped)
    before = (out / "checkpoints" / "step_4" / "hf" / "vocab.txt").read_bytes()
    r = run_script(overrides(other, out, "train.max_steps=6"))
    assert r.returncode == 2, r.stderr[-3000:]
    msg = error_line(r)
    assert "cannot resume" in msg and "step_4" in msg and "same size" in msg and str(other) in msg
    assert (out / "checkpoints" / "step_4" / "hf" / "vocab.txt").read_bytes() == before
    assert not (out / "checkpoints" / "step_6").exists()


def test_resume_refuses_another_text_normalisation(data, trained, tmp_path):
    out = copy_run(trained, tmp_path / "run")
    other = prepare(tmp_path / "raw_data", REPO / "tests" / "golden" / "sample_vocab.txt", "data.fullwidth=false")
    r = run_script(overrides(other, out, "train.max_steps=6"))
    assert r.returncode == 2, r.stderr[-3000:]
    assert "normalised with fullwidth=True" in error_line(r) and "train.allow_normalization_change" in error_line(r)


def test_resume_refuses_a_model_shape_change_and_another_vocab_size(data, trained, tmp_path):
    out = copy_run(trained, tmp_path / "run")
    r = run_script(overrides(data, out, "train.max_steps=6", "model.hidden_size=32"))
    assert r.returncode == 2, r.stderr[-3000:]
    assert "checkpoint has hidden_size 64, config 32" in error_line(r)

    tokens = (data / "vocab.txt").read_text(encoding="utf-8").splitlines()
    small = tmp_path / "small_vocab.txt"  # the first n - 100 tokens: another vocab size
    small.write_text("".join(t + "\n" for t in tokens[:-100]), encoding="utf-8")
    other = prepare(tmp_path / "small_data", small)
    r = run_script(overrides(other, out, "train.max_steps=6"))
    assert r.returncode == 2, r.stderr[-3000:]
    msg = error_line(r)
    assert f"{len(tokens)}-token vocabulary" in msg and f"has {len(tokens) - 100} tokens" in msg
    assert str(other) in msg and "step_4" in msg


# ------------------------------------------------------------------------------ corrupt checkpoints


def _pt_payload(path: Path, marker: Path, template: Path) -> None:
    """Rewrite ``path`` as ``template``'s object plus an object whose unpickling runs a shell
    command that creates ``marker``."""
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    obj = torch.load(template, weights_only=False)  # our own, trusted file
    obj["payload"] = Payload()
    torch.save(obj, path)


def test_crafted_rng_file_is_refused_and_resume_falls_back(data, trained, tmp_path):
    out = copy_run(trained, tmp_path / "run")
    marker = tmp_path / "pwned"
    rng = out / "checkpoints" / "step_4" / "rng" / "rank_0.pt"
    _pt_payload(rng, marker, rng)
    # whoever can write the file can write meta.json too: record the payload's sha256 there, so
    # that the unpickler, not the checksum, has to stop it
    from zhbert.train.checkpoint import sha256_file

    meta_file = out / "checkpoints" / "step_4" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta["sha256"]["rng/rank_0.pt"] = sha256_file(rng)
    meta_file.write_text(json.dumps(meta))
    r = run_script(overrides(data, out, "train.max_steps=5"), PYTHONWARNINGS="default")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not marker.exists()
    assert "refused" in r.stderr and ("posix.system" in r.stderr or "os.system" in r.stderr)
    assert "resumed from" in r.stdout and "step_2 at step 2" in r.stdout


def test_crafted_deepspeed_file_is_refused_by_export(data, trained, tmp_path):
    out = copy_run(trained, tmp_path / "run")
    marker = tmp_path / "pwned"
    step = out / "checkpoints" / "step_4"
    states = step / "ds" / "global_step4" / "mp_rank_00_model_states.pt"
    _pt_payload(states, marker, states)
    shutil.rmtree(step / "hf")  # export must consolidate the DeepSpeed state
    for src in (step, step / "ds"):  # a step dir and a bare DeepSpeed folder
        r = subprocess.run([sys.executable, "-m", "zhbert.cli", "export", str(src), str(tmp_path / f"hf_{src.name}")],
                           env=cpu_env(), capture_output=True, text=True)
        assert r.returncode == 2, r.stderr[-3000:]
        assert "refused" in error_line(r) and str(states) in error_line(r)
        assert not marker.exists()


def test_bit_flipped_deepspeed_file_falls_back_to_the_previous_checkpoint(data, trained, tmp_path):
    out = copy_run(trained, tmp_path / "run")
    f = out / "checkpoints" / "step_4" / "ds" / "global_step4" / "mp_rank_00_model_states.pt"
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    f.write_bytes(bytes(raw))
    r = run_script(overrides(data, out, "train.max_steps=5"), PYTHONWARNINGS="default")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipping incomplete or corrupt checkpoint" in r.stderr and "sha256" in r.stderr
    assert "step_2 at step 2" in r.stdout


def test_missing_rng_file_warns_that_the_resume_is_not_exact(data, trained, tmp_path):
    out = copy_run(trained, tmp_path / "run")
    (out / "checkpoints" / "step_4" / "rng" / "rank_0.pt").unlink()
    r = run_script(overrides(data, out, "train.max_steps=5"), PYTHONWARNINGS="default")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rank_0.pt is missing" in r.stderr and "no longer identical" in r.stderr


def test_truncated_safetensors_is_incomplete_and_not_exported(trained, tmp_path):
    from zhbert.train.checkpoint import check_complete

    out = copy_run(trained, tmp_path / "run")
    st = out / "checkpoints" / "step_4" / "hf" / "model.safetensors"
    with open(st, "r+b") as fh:
        fh.truncate(st.stat().st_size - 1000)
    assert "truncated" in check_complete(st.parents[1])
    r = subprocess.run([sys.executable, "-m", "zhbert.cli", "export", str(st.parents[1]), str(tmp_path / "hf")],
                       env=cpu_env(), capture_output=True, text=True)
    assert r.returncode == 2 and "truncated" in error_line(r)
    assert not (tmp_path / "hf").exists()


# ------------------------------------------------------------------------------ disks and DeepSpeed


def test_disk_full_during_a_checkpoint_save(data, tmp_path):
    with tmpfs(tmp_path / "small", "size=5m") as disk:  # one 3.5 MB checkpoint fits, a second does not
        out = disk / "run"
        r = run_script(overrides(data, out, *CHECKPOINT_EVERY_STEP))
        assert r.returncode == 2, r.stderr[-3000:]
        msg = error_line(r)
        assert "no space left on device" in msg and "step_2.tmp" in msg
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_1"]
        from zhbert.train.checkpoint import check_complete

        assert check_complete(out / "checkpoints" / "step_1", verify=True) is None


def test_read_only_output_dir(data, tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=1m") as disk:
        r = run_script(overrides(data, disk / "run"))
        assert r.returncode == 2, r.stderr[-3000:]
        assert "read-only file system" in error_line(r)


def test_deepspeed_extra_that_deepspeed_rejects(data, tmp_path):
    # a key zhbert does not derive, with a value DeepSpeed's config validation rejects
    r = run_script(overrides(data, tmp_path / "run", 'deepspeed.extra={"zero_optimization": {"reduce_bucket_size": "lots"}}'))
    assert r.returncode == 2, r.stderr[-3000:]
    msg = error_line(r)
    assert msg.startswith("pretrain: error: deepspeed.extra: DeepSpeed rejected") and "reduce_bucket_size" in msg


# ------------------------------------------------------------------------------ world size


def test_stage0_checkpoint_resumes_on_another_world_size_without_conversion(data, trained, tmp_path):
    from _pretrain_fixtures import metrics, spawn_train

    out = copy_run(trained, tmp_path / "run")
    r = subprocess.run([sys.executable, "-m", "zhbert.cli", "universal", str(out / "checkpoints" / "step_4")],
                       env=cpu_env(), capture_output=True, text=True)
    assert r.returncode == 0 and "not sharded" in r.stdout and "no conversion needed" in r.stdout, r.stderr
    assert not (out / "checkpoints" / "step_4" / "ds" / "global_step4_universal").exists()
    # saved by 1 rank (ZeRO 0), resumed by 2: before the fix "saved by 1 ranks, this run has 2"
    spawn_train(2, [overrides(data, out, "train.max_steps=6", "train.checkpoint_every=2")])
    recs = metrics(out)
    assert [x["step"] for x in recs] == [1, 2, 3, 4, 5, 6]
    meta = json.loads((out / "checkpoints" / "step_6" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["samples_seen"] == 4 * 2 + 2 * 2 * 2
    # train.resume_universal=true on an unsharded checkpoint is accepted too
    spawn_train(1, [overrides(data, out, "train.max_steps=7", "train.resume_universal=true")])
    assert metrics(out)[-1]["step"] == 7


def test_warmup_below_two_steps_is_refused_in_one_line():
    r = run_script(["train.warmup_steps=0"], timeout=120)
    assert r.returncode == 2 and "train.warmup_steps must be >= 2, got 0" in error_line(r)
