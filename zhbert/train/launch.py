"""Process and launcher set-up, the one place for it (pretraining and CLUE fine-tuning).

``setup_env()`` runs before DeepSpeed is imported: a plain ``python script.py`` becomes a
1-rank job (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and a free MASTER_PORT), and without
CUDA DeepSpeed gets the CPU accelerator with cores / local ranks threads per rank.
``start_distributed()`` then picks the device and joins (or creates) the process group.

Multi-node launches go through DeepSpeed's pdsh/ssh runner, which forwards only a few
environment variables; :func:`multinode_env_warning` says when a launch lacks the
``.deepspeed_env`` file that would carry the others.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from zhbert.errors import ZhbertError


def setup_env() -> None:
    """Defaults for running without a launcher, set before DeepSpeed is imported.

    Single process (``python scripts/pretrain.py``): RANK=0, WORLD_SIZE=1, LOCAL_RANK=0,
    MASTER_ADDR=127.0.0.1 and a free MASTER_PORT, so DeepSpeed does not go looking for MPI.
    No CUDA: DS_ACCELERATOR=cpu and OMP_NUM_THREADS = cores / local ranks. Values already in
    the environment win.
    """
    env = os.environ
    if "RANK" not in env and "WORLD_SIZE" not in env:
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    env.setdefault("LOCAL_RANK", env.get("RANK", "0"))
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in env:
        env["MASTER_PORT"] = str(free_port())
    import torch

    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
        local = int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", "1")))
        threads = max(1, (os.cpu_count() or 1) // max(1, local))
        env.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Distributed:
    """This process's place in the job (``start_distributed``)."""

    rank: int
    world: int
    device: Any  # torch.device
    device_type: str  # the accelerator's device name: "cuda", "cpu", ...
    owns_pg: bool  # the process group was created here (and is destroyed by close())

    def close(self) -> None:
        import torch.distributed as dist

        if self.owns_pg and dist.is_initialized():
            dist.destroy_process_group()


def start_distributed() -> Distributed:
    """Device + process group (DeepSpeed's, on the accelerator's backend: nccl, gloo, ...).

    An already initialised process group is used and left open (tests spawn ranks that run
    several jobs). On CUDA the device is set before the group is created, so NCCL binds the
    local rank's GPU.
    """
    import deepspeed
    import torch
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    owns_pg = not dist.is_initialized()
    accel = get_accelerator()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device_type = accel.device_name()
    if device_type == "cuda":
        accel.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device(device_type)
    deepspeed.init_distributed(dist_backend=accel.communication_backend_name())
    return Distributed(dist.get_rank(), dist.get_world_size(), device, device_type, owns_pg)


def rank0_decides(fn: Callable[[], Any], rank: int, world: int) -> Any:
    """``fn()`` run on rank 0 only, its result (or its ZhbertError) broadcast to every rank, so
    all ranks act on the same decision and fail together rather than wait forever."""
    import torch.distributed as dist

    box: list[Any] = [None]
    if rank == 0:
        try:
            box = [("ok", fn())]
        except ZhbertError as e:
            box = [("error", e)]
    if world > 1:
        dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


# Variables a multi-node run needs on every node, which DeepSpeed's pdsh/ssh runner does not
# forward (it exports only PYTHON*, MLFLOW*, NCCL*/CUDA*-style accelerator prefixes and what
# .deepspeed_env lists).
FORWARD_PREFIXES = ("WANDB_", "HF_", "DS_ACCELERATOR", "ZHBERT_", "TOKENIZERS_PARALLELISM")


def multinode_env_warning(env: Optional[dict] = None, home: Optional[str] = None) -> Optional[str]:
    """The warning for a multi-node launch without a ``.deepspeed_env`` file, else None.

    Multi-node: DeepSpeed's launcher sets CROSS_SIZE (nodes) > 1, or WORLD_SIZE exceeds the
    local rank count. The runner reads KEY=VALUE lines from ``$DS_ENV_FILE`` (default
    ``.deepspeed_env``) in the home directory and in the launch directory and exports them on
    every node.
    """
    env = os.environ if env is None else env
    local = int(env.get("LOCAL_SIZE", env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", "1"))))
    multinode = int(env.get("CROSS_SIZE", "1")) > 1 or int(env.get("WORLD_SIZE", "1")) > local
    if not multinode:
        return None
    name = env.get("DS_ENV_FILE", ".deepspeed_env")
    if any((Path(d) / name).is_file() for d in (home or os.path.expanduser("~"), ".")):
        return None
    wanted = sorted(k for k in env if k.startswith(FORWARD_PREFIXES))
    return (f"multi-node launch without a {name} file: DeepSpeed's runner does not forward "
            f"{', '.join(wanted) if wanted else 'WANDB_*, HF_*, DS_ACCELERATOR'} to the other nodes. Put KEY=VALUE "
            f"lines in ./{name} or ~/{name} before launching (see docs/pretraining.md, multi-node)")
