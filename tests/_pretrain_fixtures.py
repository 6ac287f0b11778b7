"""Shared helpers of the trainer/checkpoint/launcher tests (real DeepSpeed on gloo, CPU).

Data: a vocab and a ``zhbert prepare`` output built from corpora/sample once per session.
Multi-rank runs: ``spawn_train(world, jobs)`` starts ``world`` processes with
``torch.multiprocessing.spawn``; each initialises gloo once and runs ``train(cfg)`` for every
job (a list of overrides) in turn, so DeepSpeed's start-up cost is paid once per spawn.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "corpora" / "sample"

# L2 H64 A2 I128: fast on CPU, big enough to exercise every code path.
TINY_MODEL = ["model.hidden_size=64", "model.num_hidden_layers=2", "model.num_attention_heads=2",
              "model.intermediate_size=128", "model.max_position_embeddings=128"]


def cpu_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", WANDB_SILENT="true", PYTHONWARNINGS="ignore",
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        env.pop(k, None)
    env.update(extra)
    return env


def build_data(root: Path) -> Path:
    """vocab.txt from corpora/sample and its prepared instances (train + validation)."""
    # A stored vocab (built once from corpora/sample with `zhbert vocab build --size 3000`):
    # the vocab builder's ordering of non-CJK pieces is not reproducible run to run, and the
    # golden losses need identical data.
    vocab = REPO / "tests" / "golden" / "sample_vocab.txt"
    data = root / "data"
    if not (data / "zhbert_prepare.json").exists():
        env = cpu_env()
        subprocess.run([sys.executable, "-m", "zhbert.cli", "prepare", "--input", str(SAMPLE), "--output", str(data),
                        "--vocab", str(vocab), "--max-seq-length", "64", "data.validation_fraction=0.2",
                        "data.fullwidth=true"],  # folded, as when the golden losses were recorded
                       check=True, env=env, capture_output=True)
    return data


def overrides(data: Path, out: Path, *extra: str, dropout: float = 0.0) -> list[str]:
    # data.input=[]: train on data.dir as prepared (its recorded settings become the run's data
    # section); with tiny.yaml's data.input the run would be refused for another vocab
    return [f"data.dir={data}", "data.input=[]", "data.max_seq_length=64", f"train.output_dir={out}", "train.max_steps=4",
            "train.micro_batch_size=2", "train.lr=2e-3", "train.warmup_steps=2", "train.log_every=1",
            "train.eval_every=1000", "train.eval_batches=2", "train.checkpoint_every=1000",
            "train.prepare_if_missing=false", "wandb.mode=disabled", "masking.strategy=wwm",
            f"model.hidden_dropout_prob={dropout}", f"model.attention_probs_dropout_prob={dropout}",
            *TINY_MODEL, *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_cpu_rank(rank: int, world: int, port: int) -> None:
    """Inside a spawned process: the launcher's environment for ``rank``, one thread, gloo."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1",
                      WANDB_SILENT="true")
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")


def _worker(rank: int, world: int, port: int, jobs: list[list[str]]) -> None:
    init_cpu_rank(rank, world, port)
    from zhbert.config import load_config
    from zhbert.train.trainer import train

    for job in jobs:
        train(load_config(None, job))
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


def spawn_train(world: int, jobs: list[list[str]]) -> None:
    """Run ``train`` for each job (override list) on ``world`` CPU ranks."""
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(world, free_port(), jobs), nprocs=world, join=True)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def run_script(args: list[str], timeout: int = 300, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "pretrain.py"), *args], cwd=REPO,
                          env=cpu_env(**env), capture_output=True, text=True, timeout=timeout)
