"""The real ``deepspeed`` launcher: 2 CPU ranks (gloo) through scripts/pretrain.py."""

from __future__ import annotations

import shutil
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
