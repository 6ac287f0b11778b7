"""MLM + NSP pretraining under DeepSpeed: ``train(cfg)``.

The loop, one optimizer step at a time::

    for each of A = gradient_accumulation_steps micro-batches:     # A x W rank micro-batches
        batch = collator(rank's slice of the next global micro-batch, batch_rng(seed, epoch, rank, b))
        out = engine(**batch)                                       # loss = mlm_loss + nsp_loss
        engine.backward(out.loss)                                   # DeepSpeed scales by 1/A
        engine.step()                                               # optimizer + LR at the boundary
    all-reduce (sum over ranks) the step's loss sums and accuracy counts -> log, eval, checkpoint

DeepSpeed owns the parallelism (ZeRO 0-3, offload, bf16/fp16); the model file knows nothing
about it. The DeepSpeed JSON is derived from the config by :mod:`zhbert.train.ds_config` and written
to ``<output_dir>/ds_config.json``.

Logged loss: the mean over the A x W micro-batches of one optimizer step (each micro-batch's
loss is its own mean over masked tokens, as in the gradient DeepSpeed averages), so it does
not depend on how a global batch is split over ranks and accumulation steps.

MFU estimate: model FLOPs per token = 6 x (non-embedding parameters) + 12 x L x H x T (the
attention score and value products, forward + backward, PaLM appendix B), where T is the mean
padded sequence length of the step; MFU = FLOPs/s / (world_size x train.peak_tflops x 1e12).
With ``peak_tflops: 0`` a dense bf16/fp32 peak is guessed for known GPUs; on CPU MFU is not
reported.
"""

from __future__ import annotations

import json
import uuid
import math
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from zhbert.config import PretrainConfig, save_config, to_dict
from zhbert.train.checkpoint import check_normalization, normalization_key
from zhbert.errors import CheckpointError, ConfigError, DataError, TrainingDiverged, ZhbertError, disk_error

# Dense peak TFLOP/s per device (bf16/fp16, fp32 incl. TF32 where it applies), for the MFU guess.
_PEAK_TFLOPS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0),
                "A800": (312.0, 156.0), "H800": (989.0, 494.0), "L40S": (362.0, 183.0),
                "A10": (125.0, 62.5), "V100": (125.0, 15.7), "4090": (165.0, 82.6), "3090": (71.0, 35.6)}


# ------------------------------------------------------------------------------ environment


def setup_env() -> None:
    """Defaults for running without a launcher, set before DeepSpeed is imported.

    Single process (``python scripts/pretrain.py``): RANK=0, WORLD_SIZE=1, LOCAL_RANK=0,
    MASTER_ADDR=127.0.0.1 and a free MASTER_PORT, so DeepSpeed does not go looking for MPI.
    No CUDA: DS_ACCELERATOR=cpu and OMP_NUM_THREADS = cores / local ranks.
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
            f"lines in ./{name} or ~/{name} before launching (see README, multi-node)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ model config


def _read_model_file(path: str) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"model.config: {p} not found")
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}  # YAML reads JSON too
    except yaml.YAMLError as e:
        raise ConfigError(f"model.config: {p} is not valid YAML/JSON: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"model.config: {p} must be a mapping of BertConfig fields")
    return d


def resolve_init_from(name_or_path: str) -> Path:
    """``model.init_from`` -> a local HF-format directory.

    Accepts a HF directory, a zhbert ``step_<N>/`` (its ``hf/``), a run or checkpoints directory
    (newest complete checkpoint's ``hf/``), or a registry name / hub id (zhbert.hub.registry downloads it).
    """
    p = Path(name_or_path).expanduser()
    if not p.exists():
        try:
            from zhbert.hub.registry import resolve_model
        except ModuleNotFoundError:
            raise ConfigError(f"model.init_from: {p} does not exist") from None
        p = Path(resolve_model(str(name_or_path)))
    if (p / "config.json").is_file():
        return p
    if (p / "hf" / "config.json").is_file():
        return p / "hf"
    from zhbert.train.checkpoint import checkpoints_dir, find_latest

    latest = find_latest(p) or find_latest(checkpoints_dir(p))
    if latest is not None:
        return latest / "hf"
    raise ConfigError(f"model.init_from: {p} is not a HF-format checkpoint directory (no config.json)")


def resolve_model_config(cfg: PretrainConfig, tokenizer, data_dir: str):
    """The BertConfig to train, checked against the data's vocabulary and sequence length.

    Fresh model: ``model.config`` file + inline fields; ``vocab_size`` comes from the data's
    vocab unless set inline (then it must match). ``model.init_from``: the checkpoint's
    config.json (+ inline fields); its vocab must be the data's (size and, when the checkpoint
    has a vocab.txt, sha256).
    """
    from zhbert.model.modeling import BertConfig

    m = cfg.model
    inline = m.overrides()
    data_vocab = f"data vocab {Path(data_dir) / 'vocab.txt'} ({tokenizer.vocab_size} tokens)"
    if m.init_from:
        src = resolve_init_from(m.init_from)
        d = BertConfig.from_pretrained(src).to_dict()
        d.update(inline)
        config = BertConfig.from_dict(d, source=f"model.init_from {src}")
        if config.vocab_size != tokenizer.vocab_size:
            raise ConfigError(f"incompatible vocabularies: model.init_from {src} has vocab_size "
                              f"{config.vocab_size} but the {data_vocab}")
        if (src / "vocab.txt").is_file():
            from zhbert.prep.tokenizer import ChineseTokenizer

            theirs_tok = ChineseTokenizer.from_dir(src)
            theirs = theirs_tok.vocab_sha256()
            if theirs != tokenizer.vocab_sha256():
                raise ConfigError(f"incompatible vocabularies: {src / 'vocab.txt'} (sha256 {theirs[:12]}…) differs "
                                  f"from the {data_vocab}, sha256 {tokenizer.vocab_sha256()[:12]}…")
            check_normalization(theirs_tok.normalization, tokenizer.normalization, f"model.init_from {src}",
                                data_dir, cfg.train.allow_normalization_change)
    else:
        d = _read_model_file(m.config) if m.config else {}
        where = f"model.config {m.config}" if m.config else "model"
        if "vocab_size" in inline and inline["vocab_size"] != tokenizer.vocab_size:
            raise ConfigError(f"incompatible vocabularies: model.vocab_size={inline['vocab_size']} but the "
                              f"{data_vocab}; drop model.vocab_size to take it from the data")
        d.update(inline)
        d["vocab_size"] = tokenizer.vocab_size
        config = BertConfig.from_dict(d, strict=True, source=where)
    if cfg.data.max_seq_length > config.max_position_embeddings:
        raise ConfigError(f"data.max_seq_length {cfg.data.max_seq_length} > model max_position_embeddings "
                          f"{config.max_position_embeddings}")
    return config


def init_normalization(init_from: str) -> Optional[dict]:
    """The text normalisation recorded with a ``model.init_from`` checkpoint (None: raw text,
    e.g. bert-base-chinese, whose tokenizer files record nothing)."""
    from zhbert.prep.tokenizer import ChineseTokenizer

    src = resolve_init_from(init_from)
    return ChineseTokenizer.from_dir(src).normalization if (src / "vocab.txt").is_file() else None


def check_data_vocab(data_dir: str, tokenizer) -> None:
    """The data's recorded vocab sha256 must be the sha256 of the vocab.txt stored with it."""
    from zhbert.prep.prepare import read_prepare_meta

    meta = read_prepare_meta(data_dir)
    recorded = meta.get("vocab_sha256")
    if recorded and recorded != tokenizer.vocab_sha256():
        raise DataError(f"{data_dir}: prepare_config.json records vocab sha256 {recorded[:12]}… but "
                        f"{Path(data_dir) / 'vocab.txt'} has {tokenizer.vocab_sha256()[:12]}…")


def model_flops_per_token(config, seq_len: float) -> float:
    """6 x non-embedding params + 12 x L x H x T (see module docstring)."""
    h, L, i = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_layer = 4 * h * h + 2 * h * i + 4 * h + i + h + 4 * h  # QKVO, FFN, biases, 2 LayerNorms
    non_embedding = L * per_layer + h * h + h  # + pooler
    return 6.0 * non_embedding + 12.0 * L * h * seq_len


def _peak_tflops(cfg: PretrainConfig, device_type: str) -> Optional[float]:
    if cfg.train.peak_tflops > 0:
        return cfg.train.peak_tflops
    if device_type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name()
    for key, (low, fp32) in _PEAK_TFLOPS.items():
        if key in name:
            return low if cfg.deepspeed.precision != "fp32" else fp32
    return None


# ------------------------------------------------------------------------------ metrics file


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only records with ``step <= step`` (a resumed run re-logs what came after)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if rec.get("step", 0) <= step:
            keep.append(line)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
    os.replace(tmp, path)


def read_metrics(run_dir: str | Path) -> list[dict]:
    p = Path(run_dir) / "metrics.jsonl"
    if not p.exists():
        raise DataError(f"{p}: not found (is {run_dir} a training output_dir?)")
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


# ------------------------------------------------------------------------------ data


def ensure_data(cfg: PretrainConfig, rank: int, poll_s: float = 2.0) -> None:
    """Prepare ``data.dir`` on rank 0 when it is missing or unfinished (``train.prepare_if_missing``).

    The other ranks wait by polling the completion marker rather than in a collective, so a
    long ``prepare`` cannot hit the process group's timeout; a barrier follows.
    """
    from zhbert.train.checkpoint import _barrier
    from zhbert.prep.prepare import is_complete

    d = Path(cfg.data.dir)
    if not is_complete(d) and cfg.train.prepare_if_missing:
        if rank == 0:
            if not cfg.data.input:
                raise DataError(f"data.dir {d} is not a finished `zhbert prepare` output and data.input is empty: "
                                "nothing to prepare from")
            from zhbert.prep.prepare import prepare

            print(f"[zhbert] preparing {d} from {', '.join(cfg.data.input)}", flush=True)
            prepare(cfg.data)
        else:
            while not is_complete(d):
                time.sleep(poll_s)
    _barrier()


# ------------------------------------------------------------------------------ training


def _param_groups(model, weight_decay: float) -> list[dict]:
    """BERT convention: no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _grad_norm_fp32(model) -> float:
    import torch

    sq = [p.grad.detach().float().pow(2).sum() for p in model.parameters() if p.grad is not None]
    return float(torch.stack(sq).sum().sqrt()) if sq else 0.0


# metrics.jsonl key -> wandb key: training curves under train/, throughput under perf/,
# validation (already "eval/...") as it is.
_WANDB_KEYS = {"tokens_per_s": "perf/tokens_per_s", "samples_per_s": "perf/samples_per_s", "mfu": "perf/mfu"}


def wandb_key(key: str) -> str:
    return _WANDB_KEYS.get(key, key if "/" in key else f"train/{key}")


class _Logger:
    """metrics.jsonl + wandb + progress, rank 0 only.

    Progress is a tqdm bar on a terminal; otherwise (nohup, SLURM, a pipe) one plain line per
    logged step: step, loss, MLM/NSP accuracy, lr, tokens/s and ETA.
    """

    def __init__(self, cfg: PretrainConfig, out: Path, start_step: int, rank: int,
                 run_info: Optional[dict[str, Any]] = None):
        self.rank = rank
        self.path = out / "metrics.jsonl"
        self.wandb = None
        self.bar = None
        self.max_steps = cfg.train.max_steps
        self.t0, self.step0 = time.perf_counter(), start_step
        if rank != 0:
            return
        truncate_metrics(self.path, start_step)
        if cfg.wandb.mode != "disabled":
            import wandb

            wdir = Path(cfg.wandb.dir or out)
            wdir.mkdir(parents=True, exist_ok=True)
            # A resumed run continues the same wandb run (same id, resume="allow"), so its
            # curves stay one line; a fresh run (step 0) gets a new id.
            id_file = out / "wandb_run_id"
            run_id = id_file.read_text().strip() if start_step > 0 and id_file.is_file() else None
            if not run_id:
                run_id = uuid.uuid4().hex[:12]
                id_file.write_text(run_id + "\n")
            self.wandb = wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity, name=cfg.wandb.name,
                                    group=cfg.wandb.group, tags=cfg.wandb.tags or None, mode=cfg.wandb.mode,
                                    dir=str(wdir), config={**to_dict(cfg), **(run_info or {})},
                                    reinit="finish_previous", id=run_id, resume="allow")
            where = self.wandb.url or f"{self.wandb.dir} (offline; upload with: wandb sync {Path(self.wandb.dir).parent})"
            print(f"[zhbert] wandb run {run_id}: {where}", flush=True)
        from tqdm.auto import tqdm

        self.bar = tqdm(total=cfg.train.max_steps, initial=start_step, desc="pretrain", dynamic_ncols=True,
                        disable=None)

    def log(self, rec: dict) -> None:
        if self.rank != 0:
            return
        rec = {k: _finite_or_none(v) for k, v in rec.items()}  # NaN/inf -> null: strict JSON
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, allow_nan=False) + "\n")
        if self.wandb is not None:
            self.wandb.log({wandb_key(k): v for k, v in rec.items() if k != "step" and v is not None},
                           step=rec["step"])
        if self.bar is None or self.bar.disable:
            print(self.line(rec), flush=True)

    def line(self, rec: dict) -> str:
        """``step 20/300 | loss 7.412 | mlm_acc 0.061 | nsp_acc 0.52 | lr 3.3e-04 | 5,210 tok/s | ETA 4m10s``"""
        parts = [f"step {rec['step']}/{self.max_steps}", f"loss {_fmt(rec.get('loss'))}"]
        for k in ("mlm_acc", "nsp_acc"):
            if rec.get(k) is not None:
                parts.append(f"{k} {rec[k]:.3f}")
        parts.append(f"lr {rec['lr']:.2e}")
        if rec.get("tokens_per_s") is not None:
            parts.append(f"{rec['tokens_per_s']:,.0f} tok/s")
        if rec.get("eval/mlm_acc") is not None:
            parts.append(f"eval mlm_acc {rec['eval/mlm_acc']:.3f}")
        done = rec["step"] - self.step0
        if done > 0 and rec["step"] < self.max_steps:
            eta = (time.perf_counter() - self.t0) / done * (self.max_steps - rec["step"])
            parts.append(f"ETA {_duration(eta)}")
        if rec.get("nonfinite"):
            parts.append("NON-FINITE")
        return "[zhbert] " + " | ".join(parts)

    def advance(self, n: int, postfix: dict) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()


def _duration(seconds: float) -> str:
    m, sec = divmod(int(seconds + 0.5), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _rank0_decides(fn, rank: int, world: int):
    """``fn()`` run on rank 0 only, its result (or its ZhbertError) broadcast to every rank, so
    all ranks resume from the same checkpoint and fail together rather than wait forever."""
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


class _SkipOptimizerStep:
    """Make the ``engine.step()`` inside it apply nothing, the way DeepSpeed's own optimizers
    skip a step with overflowing gradients: the wrapped torch optimizer's ``step`` is a no-op
    and it reports ``overflow``, so the engine counts a skipped step, leaves the LR schedule
    where it is and clears the gradients."""

    def __init__(self, engine):
        self.opt = engine.optimizer

    def __enter__(self):
        self.opt.step = lambda *args, **kwargs: None  # instance attribute shadows the method
        self.opt.overflow = True

    def __exit__(self, *exc):
        del self.opt.step
        del self.opt.overflow
        return False


def train(cfg: PretrainConfig) -> dict[str, Any]:
    """Pretrain (or continue) according to ``cfg``; returns a summary dict.

    Works in one process (no launcher) or under ``deepspeed``/``torchrun`` (one process per
    rank; env RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). If torch.distributed is
    already initialised, that process group is used and left open.
    """
    setup_env()
    import deepspeed
    import torch
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    from zhbert.train import checkpoint as ckpt_mod
    from zhbert.train.collator import PretrainingCollator
    from zhbert.train.order import DataPosition, ShardedBatches, iterate, rescale_position
    from zhbert.train.ds_config import build_ds_config
    from zhbert.train.masking import VocabInfo
    from zhbert.model.modeling import BertForPreTraining
    from zhbert.prep.prepare import load_prepared
    from zhbert.prep.tokenizer import ChineseTokenizer

    owns_pg = not dist.is_initialized()
    accel = get_accelerator()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device_type = accel.device_name()
    if device_type == "cuda":
        accel.set_device(local_rank)  # before the process group, so NCCL binds the right GPU
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device(device_type)
    deepspeed.init_distributed(dist_backend=accel.communication_backend_name())
    rank, world = dist.get_rank(), dist.get_world_size()
    t, out = cfg.train, Path(cfg.train.output_dir)
    try:
        # ---- data, tokenizer, model config (all checked before anything heavy)
        if cfg.model.init_from:  # rank 0 first: a registry name may need a download
            if rank == 0:
                resolve_init_from(cfg.model.init_from)
            ckpt_mod._barrier()
        if cfg.data.fullwidth is None:  # what the model's vocabulary saw (see DataConfig.fullwidth)
            cfg.data.fullwidth = normalization_key(init_normalization(cfg.model.init_from))[0] \
                if cfg.model.init_from else False
        ensure_data(cfg, rank)
        from zhbert.prep.prepare import check_prepared_matches

        cfg.data = check_prepared_matches(cfg.data)  # refuses a dir prepared from other data.*
        data_dir = cfg.data.dir
        tokenizer = ChineseTokenizer.from_dir(data_dir)
        check_data_vocab(data_dir, tokenizer)
        model_config = resolve_model_config(cfg, tokenizer, data_dir)
        ds_cfg = build_ds_config(cfg, world, device_type, hidden_size=model_config.hidden_size)
        dsets = load_prepared(data_dir)
        collator = PretrainingCollator(VocabInfo.from_tokenizer(tokenizer), cfg.masking, cfg.data.max_seq_length)
        train_batches = ShardedBatches(dsets["train"], collator, seed=t.seed, rank=rank, world_size=world,
                                       micro_batch_size=t.micro_batch_size)
        eval_batches = None
        eval_micro = min(t.micro_batch_size, len(dsets["validation"]) // world) if "validation" in dsets else 0
        if eval_micro >= 1:  # a small validation split gets smaller eval batches
            eval_batches = ShardedBatches(dsets["validation"], collator, seed=t.eval_seed, rank=rank,
                                          world_size=world, micro_batch_size=eval_micro, shuffle=False,
                                          name="validation")
        elif rank == 0:
            warnings.warn(f"{data_dir}: validation split has fewer instances than ranks: eval is skipped",
                          stacklevel=2)

        # rank 0 verifies the candidates (sha256, weights-only unpickling) and tells the others
        resume_dir = _rank0_decides(lambda: ckpt_mod.resolve_resume(t.resume, out), rank, world)
        meta = ckpt_mod.read_meta(resume_dir) if resume_dir is not None else {}
        sharded = False
        if resume_dir is not None:
            ckpt_mod.check_resume_compatible(resume_dir, meta, model_config, tokenizer, data_dir,
                                             allow_normalization_change=t.allow_normalization_change)
            # ZeRO 0 state is one replicated file: it resumes on any number of ranks as it is
            sharded = ckpt_mod.is_sharded(resume_dir)
            if not sharded:
                ds_cfg.pop("checkpoint", None)  # no universal loading for it

        def write_run_files() -> None:
            try:
                out.mkdir(parents=True, exist_ok=True)
                if t.resume == "never":
                    _move_previous_run_aside(out)
                (out / "ds_config.json").write_text(json.dumps(ds_cfg, indent=2) + "\n", encoding="utf-8")
                save_config(cfg, out / "config.yaml")
            except OSError as e:
                raise disk_error(e, e.filename or out) or ConfigError(
                    f"train.output_dir {out}: cannot write: {e.strerror or e}") from None

        _rank0_decides(write_run_files, rank, world)

        # ---- model + engine
        torch.manual_seed(t.seed)  # same initial weights on every rank (and in every rerun)
        if cfg.model.init_from:
            model = BertForPreTraining.from_pretrained(resolve_init_from(cfg.model.init_from), config=model_config)
        else:
            model = BertForPreTraining(model_config)
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        try:
            engine, _, _, scheduler = deepspeed.initialize(
                model=model, model_parameters=_param_groups(model, t.weight_decay), config=ds_cfg)
        except (ValueError, TypeError, KeyError, AssertionError) as e:
            if not (cfg.deepspeed.extra or cfg.deepspeed.config_file):
                raise
            first = "; ".join(line.strip() for line in str(e).strip().splitlines()[:3] if line.strip())
            given = ", ".join(filter(None, [f"deepspeed.config_file {cfg.deepspeed.config_file}"
                                            if cfg.deepspeed.config_file else "",
                                            f"deepspeed.extra keys {', '.join(sorted(cfg.deepspeed.extra))}"
                                            if cfg.deepspeed.extra else ""]))
            raise ConfigError(f"deepspeed.extra: DeepSpeed rejected the config made with {given} "
                              f"(see {out / 'ds_config.json'}): {type(e).__name__}: {first}") from None

        if scheduler is not None:
            # DeepSpeed's Warmup* schedulers start at iteration -1 (= min lr) and count from there;
            # stepping to 0 makes optimizer step s (1-based) use the schedule's value at s-1.
            scheduler.step(0)

        # ---- resume (overwrites the scheduler state)
        step, samples_seen, tokens_seen = 0, 0, 0
        position = DataPosition()
        if resume_dir is not None:
            tag = meta["ds_tag"]
            if sharded and meta.get("world_size") != world and not t.resume_universal:
                raise CheckpointError(
                    f"{resume_dir} was saved by {meta.get('world_size')} ranks, this run has {world}, and its "
                    f"ZeRO stage {meta.get('zero_stage')} state is sharded per rank. Convert it with "
                    f"`zhbert universal {resume_dir}` and resume with train.resume={resume_dir} "
                    "train.resume_universal=true")
            if sharded and t.resume_universal:
                tag = meta.get("ds_universal_tag") or ckpt_mod.universal_tag(resume_dir)
                if not (Path(resume_dir) / ckpt_mod.DS_DIR / tag).is_dir():
                    raise CheckpointError(f"{resume_dir}: no universal checkpoint {tag}; run "
                                          f"`zhbert universal {resume_dir}` first")
            load_path, _ = engine.load_checkpoint(str(Path(resume_dir) / ckpt_mod.DS_DIR), tag=tag,
                                                  load_optimizer_states=True, load_lr_scheduler_states=True)
            if load_path is None:
                raise CheckpointError(f"{resume_dir}: DeepSpeed could not load tag {tag}")
            step, samples_seen, tokens_seen = int(meta["step"]), int(meta["samples_seen"]), int(meta["tokens_seen"])
            position = rescale_position(DataPosition.from_dict(meta["data_position"]),
                                        int(meta.get("global_micro_batch", train_batches.global_micro)),
                                        train_batches.global_micro)
            if not ckpt_mod.load_rng(resume_dir, rank):
                warnings.warn(f"{resume_dir}: rng/rank_{rank}.pt is missing: the resumed run is no longer "
                              "identical to an uninterrupted one (its dropout draws differ)", stacklevel=2)
            changed = _changed_keys(meta.get("config", {}), to_dict(cfg))
            if changed and rank == 0:
                warnings.warn(f"resuming {resume_dir} with a different {', '.join(changed)}: the data order, masks "
                              "or batch size differ from the original run", stacklevel=2)
            if rank == 0:
                print(f"[zhbert] resumed from {resume_dir} at step {step}, data position "
                      f"epoch {position.epoch} batch {position.batch_index}", flush=True)

        logger = _Logger(cfg, out, step, rank, run_info={
            "model_config": model_config.to_dict(), "world_size": world,
            "global_batch_size": t.micro_batch_size * t.gradient_accumulation_steps * world,
            "resumed_from": str(resume_dir) if resume_dir is not None else None})
        peak = _peak_tflops(cfg, device_type)
        last_saved = step if resume_dir is not None else None
        last_rec: dict[str, Any] = {}
        # fp32 without ZeRO: DeepSpeed hands the step to a plain torch optimizer, which would apply
        # NaN/inf gradients, so zhbert measures the norm before the step and drops such a step.
        # Every other mode (bf16, fp16, ZeRO 1-3) has DeepSpeed check the gradients and skip the
        # step itself (``was_step_applied``); fp16's scaler-overflow skips are routine, not faults.
        own_norm = cfg.deepspeed.zero_stage == 0 and cfg.deepspeed.precision == "fp32"
        nonfinite_run, nonfinite_total = 0, 0
        try:
            it = iterate(train_batches, position, workers=t.dataloader_workers)
            engine.train()
            window_t0, window_tokens, window_samples, window_flops = time.perf_counter(), 0, 0, 0.0
            while step < t.max_steps:
                # sums over this rank's micro-batches: loss, mlm, nsp, mlm_correct, mlm_count,
                # nsp_correct, nsp_count, real tokens, samples, padded tokens
                # this rank's sums over its micro-batches, kept on the device (one sync per step):
                # loss, mlm, nsp, mlm_correct, mlm_count, nsp_correct, nsp_count, real tokens,
                # samples, padded tokens
                acc = torch.zeros(10, dtype=torch.float64, device=device)
                grad_norm, applied = None, True
                lr = float(engine.get_lr()[0])  # the lr this optimizer step applies
                for _ in range(t.gradient_accumulation_steps):
                    pos, batch = next(it)
                    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                    res = engine(**batch)
                    engine.backward(res.loss)
                    boundary = engine.is_gradient_accumulation_boundary()
                    if boundary and own_norm:
                        grad_norm = _grad_norm_fp32(engine.module)  # DeepSpeed does not report it here
                        applied = math.isfinite(grad_norm)
                    if applied:
                        engine.step()
                    else:
                        with _SkipOptimizerStep(engine):
                            engine.step()
                    if boundary and not own_norm:
                        applied = engine.was_step_applied()
                    ids = batch["input_ids"]
                    acc += torch.stack([res.loss.detach().double(), res.mlm_loss.detach().double(),
                                        res.nsp_loss.detach().double(), res.mlm_correct.double(),
                                        res.mlm_count.double(), res.nsp_correct.double(), res.nsp_count.double(),
                                        batch["attention_mask"].sum().double(),
                                        torch.tensor(float(ids.shape[0]), dtype=torch.float64, device=device),
                                        torch.tensor(float(ids.numel()), dtype=torch.float64, device=device)])
                position = train_batches.position(train_batches.linear(pos) + 1)
                step += 1
                if world > 1:
                    dist.all_reduce(acc)
                acc = acc.cpu()
                if grad_norm is None:
                    g = engine.get_global_grad_norm()
                    grad_norm = float(g) if g is not None else None
                loss_sum = float(acc[0])
                if cfg.deepspeed.precision == "fp16":
                    nonfinite = not math.isfinite(loss_sum)
                else:
                    nonfinite = not (math.isfinite(loss_sum) and applied
                                     and (grad_norm is None or math.isfinite(grad_norm)))
                n_micro = t.gradient_accumulation_steps * world
                samples_seen += int(acc[8])
                tokens_seen += int(acc[7])
                window_tokens += int(acc[7])
                window_samples += int(acc[8])
                window_flops += model_flops_per_token(model_config, float(acc[9] / max(1.0, acc[8]))) * float(acc[7])
                rec = {"step": step, "loss": float(acc[0]) / n_micro, "mlm_loss": float(acc[1]) / n_micro,
                       "nsp_loss": float(acc[2]) / n_micro,
                       "mlm_acc": float(acc[3] / acc[4]) if acc[4] > 0 else None,
                       "nsp_acc": float(acc[5] / acc[6]) if acc[6] > 0 else None,
                       "lr": lr, "grad_norm": grad_norm}
                if cfg.deepspeed.precision == "fp16":
                    rec["loss_scale"] = float(getattr(engine.optimizer, "cur_scale", float("nan")))
                do_eval = eval_batches is not None and (step % t.eval_every == 0 or step == t.max_steps)
                if nonfinite:
                    rec["nonfinite"] = True
                if step % t.log_every == 0 or step == 1 or step == t.max_steps or do_eval or nonfinite:
                    dt = max(time.perf_counter() - window_t0, 1e-9)
                    rec.update(tokens_per_s=window_tokens / dt, samples_per_s=window_samples / dt,
                               epoch=position.epoch, samples=samples_seen, tokens=tokens_seen)
                    if peak:
                        rec["mfu"] = window_flops / dt / (peak * 1e12 * world)
                    if do_eval:
                        rec.update(evaluate(engine, eval_batches, t.eval_batches, device, world))
                    logger.log(rec)
                    last_rec = rec
                    window_t0, window_tokens, window_samples, window_flops = time.perf_counter(), 0, 0, 0.0
                logger.advance(1, {"loss": f"{rec['loss']:.3f}", "lr": f"{lr:.2e}"})
                if nonfinite:
                    nonfinite_run, nonfinite_total = nonfinite_run + 1, nonfinite_total + 1
                    what = (f"loss {_fmt(rec['loss'])}, grad norm {_fmt(grad_norm)}; the update was not applied "
                            f"and no checkpoint is written from it; last good checkpoint: "
                            f"{ckpt_mod.find_latest(ckpt_mod.checkpoints_dir(out)) or 'none'}")
                    if t.on_nonfinite == "stop":
                        raise TrainingDiverged(f"non-finite loss or gradient norm at step {step} ({what}). Lower "
                                               f"train.lr (now {t.lr:g}) or warm up longer; train.on_nonfinite=skip "
                                               "drops such steps instead")
                    if nonfinite_run >= t.max_nonfinite_skips:
                        raise TrainingDiverged(f"{nonfinite_run} steps in a row with a non-finite loss or gradient "
                                               f"norm (train.max_nonfinite_skips), the last at step {step} ({what}). "
                                               f"Lower train.lr (now {t.lr:g})")
                    if rank == 0:
                        warnings.warn(f"step {step}: non-finite loss or gradient norm; step dropped "
                                      f"({nonfinite_run} in a row, train.on_nonfinite=skip)", stacklevel=2)
                else:
                    nonfinite_run = 0

                if step % t.checkpoint_every == 0 or step == t.max_steps:
                    meta = {"samples_seen": samples_seen, "tokens_seen": tokens_seen,
                            "data_position": position.to_dict(), "global_micro_batch": train_batches.global_micro,
                            "batches_per_epoch": train_batches.batches_per_epoch,
                            "seed": t.seed, "zero_stage": cfg.deepspeed.zero_stage,
                            "precision": cfg.deepspeed.precision, "data_dir": str(Path(data_dir).resolve()),
                            "vocab_sha256": tokenizer.vocab_sha256(), "text_normalization": tokenizer.normalization,
                            "nonfinite_steps": nonfinite_total,
                            "model_config": model_config.to_dict(), "config": to_dict(cfg),
                            "rng_note": "per-rank torch RNG states in rng/rank_<r>.pt"}
                    ckpt_mod.save_checkpoint(engine, output_dir=out, step=step, meta=meta, model_config=model_config,
                                             tokenizer=tokenizer, zero_stage=cfg.deepspeed.zero_stage,
                                             keep_last=t.keep_last)
                    last_saved = step
        finally:
            logger.close()
        latest = ckpt_mod.checkpoints_dir(out) / f"step_{last_saved}" if last_saved is not None else None
        return {"step": step, "output_dir": str(out), "checkpoint": str(latest) if latest else None,
                "samples_seen": samples_seen, "tokens_seen": tokens_seen, "last": last_rec,
                "nonfinite_steps": nonfinite_total}
    finally:
        if owns_pg and dist.is_initialized():
            dist.destroy_process_group()


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _move_previous_run_aside(out: Path) -> None:
    """``train.resume=never`` in a used output_dir: keep the old checkpoints and metrics under
    ``*.prev-<time>`` so they are neither resumed from nor pruned by the new run."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    ck, met = out / "checkpoints", out / "metrics.jsonl"
    if ck.is_dir() and any(ck.iterdir()):
        os.replace(ck, out / f"checkpoints.prev-{stamp}")
        print(f"[zhbert] train.resume=never: earlier checkpoints moved to {out / f'checkpoints.prev-{stamp}'}",
              flush=True)
    if met.exists():
        os.replace(met, out / f"metrics.prev-{stamp}.jsonl")


def _changed_keys(old: dict, new: dict) -> list[str]:
    keys = [("train", "seed"), ("train", "micro_batch_size"), ("train", "gradient_accumulation_steps"),
            ("data", "dir"), ("data", "max_seq_length"), ("masking", "strategy"), ("masking", "mask_prob")]
    return [f"{a}.{b}" for a, b in keys if a in old and old[a].get(b) != new[a].get(b)]


def evaluate(engine, batches, max_batches: int, device, world: int) -> dict[str, float]:
    """MLM/NSP loss and accuracy on the validation split, fixed masks (``train.eval_seed``).

    Every rank runs the same number of batches (collectives under ZeRO-3). Losses are averaged
    over masked tokens / NSP rows across all ranks and batches.
    """
    import torch
    import torch.distributed as dist

    n = min(max_batches, batches.batches_per_epoch)
    acc = torch.zeros(6, dtype=torch.float64)  # mlm_loss*count, mlm_correct, mlm_count, nsp_loss*count, nsp_correct, nsp_count
    engine.eval()
    with torch.no_grad():
        for b in range(n):
            batch = {k: v.to(device) for k, v in batches.batch(0, b).items()}
            r = engine(**batch)
            mc, nc = float(r.mlm_count), float(r.nsp_count)
            acc += torch.tensor([float(r.mlm_loss) * mc, float(r.mlm_correct), mc, float(r.nsp_loss) * nc,
                                 float(r.nsp_correct), nc], dtype=torch.float64)
    engine.train()
    if world > 1:
        acc_dev = acc.to(device)
        dist.all_reduce(acc_dev)
        acc = acc_dev.cpu()
    out = {"eval/mlm_loss": float(acc[0] / acc[2]) if acc[2] else None,
           "eval/mlm_acc": float(acc[1] / acc[2]) if acc[2] else None}
    if acc[5]:
        out.update({"eval/nsp_loss": float(acc[3] / acc[5]), "eval/nsp_acc": float(acc[4] / acc[5])})
    out["eval/loss"] = (out["eval/mlm_loss"] or 0.0) + out.get("eval/nsp_loss", 0.0)
    return out
