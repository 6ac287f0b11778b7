"""The real ``deepspeed`` launcher: 2 CPU ranks (gloo) through scripts/pretrain.py."""

from __future__ import annotations

import shutil
import sys
import subprocess
from pathlib import Path

import pytest

from _pretrain_fixtures import REPO, build_data, cpu_env, free_port, metrics, overrides


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("deepspeed") is None, reason="deepspeed launcher not on PATH")
def test_deepspeed_launcher_two_cpu_ranks(tmp_path):
    data = build_data(tmp_path / "d")
    out = tmp_path / "run"
    cmd = ["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), "scripts/pretrain.py",
           "--config", "configs/pretrain/tiny.yaml",
           *overrides(data, out, "train.max_steps=3", "deepspeed.zero_stage=1", "wandb.mode=offline")]
    r = subprocess.run(cmd, cwd=REPO, env=cpu_env(), capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    recs = metrics(out)
    assert [x["step"] for x in recs] == [1, 2, 3]
    assert recs[-1]["samples"] == 3 * 2 * 2  # 2 ranks x micro 2 per step
    meta = (out / "checkpoints" / "step_3" / "meta.json").read_text()
    assert '"world_size": 2' in meta and '"complete": true' in meta
    assert list((out / "wandb").glob("offline-run-*"))  # rank 0 only: exactly one run
    assert len(list((out / "wandb").glob("offline-run-*"))) == 1


@pytest.mark.slow
def test_plain_python_default_config_prepares_data_and_trains(tmp_path):
    """`python scripts/pretrain.py` (no launcher, default tiny config): env defaults are set,
    the missing data dir is prepared first, training runs and checkpoints."""
    vocab = REPO / "configs" / "vocab" / "sample_vocab.txt"
    if not vocab.exists():
        vocab = REPO / "tests" / "golden" / "sample_vocab.txt"
    out, data = tmp_path / "run", tmp_path / "data"
    r = subprocess.run([sys.executable, "scripts/pretrain.py", f"data.vocab={vocab}", f"data.dir={data}",
                        f"train.output_dir={out}", "train.max_steps=2", "train.micro_batch_size=4",
                        "wandb.mode=disabled"], cwd=REPO, env=cpu_env(), capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-4000:]
    assert (data / "zhbert_prepare.json").exists()
    assert [x["step"] for x in metrics(out)] == [1, 2]
    assert (out / "checkpoints" / "step_2" / "hf" / "model.safetensors").exists()
    assert "done at step 2" in r.stdout
