"""MLM + NSP pretraining under DeepSpeed: ``train(cfg)``.

``train`` reads top to bottom: build the run (data, tokenizer, model config, DeepSpeed config,
batches, the checkpoint to resume), build the engine, resume or start, then a loop of
:func:`train_step` -> log (and eval) -> non-finite check -> checkpoint. One optimizer step::

    for each of A = gradient_accumulation_steps micro-batches:     # A x W rank micro-batches
                                                                    # (A grows under a batch ramp)
        batch = collator(rank's slice of the next global micro-batch, batch_rng(seed, epoch, rank, b))
        out = engine(**batch)                                       # loss = mlm_loss + nsp_loss
        engine.backward(out.loss)                                   # DeepSpeed scales by 1/A
        engine.step()                                               # optimizer + LR at the boundary
    all-reduce (sum over ranks) the step's named sums (metrics.StepTotals) -> one host sync

DeepSpeed owns the parallelism (ZeRO 0-3, offload, bf16/fp16); the model knows nothing about
it. The DeepSpeed JSON is derived from the config by :mod:`zhbert.train.ds_config` and written
to ``<output_dir>/ds_config.json``. What is logged and how (loss averaging, throughput, MFU,
metrics.jsonl, wandb): :mod:`zhbert.train.metrics`. Checkpoint layout, resume and export:
:mod:`zhbert.train.checkpoint`. Process/launcher set-up: :mod:`zhbert.train.launch`. The time
budget (``train.max_minutes``), what counts as training time and the time-based LR schedule
(``train.schedule: time``): :mod:`zhbert.train.schedule`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from zhbert.config import PretrainConfig, save_config, to_dict
from zhbert.errors import ConfigError, DataError, TrainingDiverged, disk_error
from zhbert.train import checkpoint
from zhbert.train.checkpoint import check_normalization, normalization_key
from zhbert.train.launch import barrier, rank0_decides, setup_env, start_distributed
from zhbert.train.metrics import (DeviceSums, EvalTotals, RunLogger, StepTotals, Throughput, fmt, peak_tflops)
from zhbert.train.order import DataPosition, ShardedBatches, iterate, rescale_position
from zhbert.train.schedule import TimeBudgetLR, TrainingClock, ramp_accumulation, synced_elapsed


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
    """``model.init_from`` -> a complete local HF directory, by the rule that ``eval clue
    --model``, ``release`` and ``data.vocab`` share (zhbert.hub.resolve)."""
    from zhbert.hub.resolve import resolve_model_dir

    return resolve_model_dir(name_or_path, what="model.init_from")


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


# ------------------------------------------------------------------------------ data


def ensure_data(cfg: PretrainConfig, rank: int, poll_s: float = 2.0) -> None:
    """Prepare ``data.dir`` on rank 0 when it is missing or unfinished (``train.prepare_if_missing``).

    The other ranks wait by polling the completion marker rather than in a collective, so a
    long ``prepare`` cannot hit the process group's timeout; a barrier follows.
    """
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
    barrier()


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


@dataclass
class Run:
    """Everything a training run is built from, checked before anything heavy starts."""

    cfg: PretrainConfig
    out: Path
    dist: Any  # launch.Distributed
    tokenizer: Any
    model_config: Any
    ds_config: dict
    train_batches: Any  # order.ShardedBatches
    eval_batches: Any  # order.ShardedBatches or None
    resume_dir: Optional[Path]
    resume_meta: dict


@dataclass
class StepResult:
    """One optimizer step: its sums over micro-batches and ranks, and what the optimizer did."""

    totals: StepTotals
    lr: float  # the lr this step applied
    grad_norm: Optional[float]
    applied: bool  # False: the optimizer skipped the step (non-finite gradients)
    next_position: Any  # order.DataPosition after the step's last micro-batch
    accumulation: int = 1  # micro-batches per rank in this step (A; varies under a batch ramp)


def train(cfg: PretrainConfig, clock: Optional[Callable[[], float]] = None) -> dict[str, Any]:
    """Pretrain (or continue) according to ``cfg``; returns a summary dict.

    Works in one process (no launcher) or under ``deepspeed``/``torchrun`` (one process per
    rank; env RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). If torch.distributed is
    already initialised, that process group is used and left open.

    ``clock`` is the time source of the training-time count (``train.max_minutes``,
    ``train.schedule: time``, ``train_s`` in metrics.jsonl): seconds, default
    :func:`time.monotonic`; tests pass a fake one. Nothing else reads it.
    """
    setup_env()
    dist_ = start_distributed()
    try:
        run = build_run(cfg, dist_)
        engine = build_engine(run)
        state = resume_or_start(run, engine)
        t, rank = cfg.train, dist_.rank
        budget_s = t.max_minutes * 60.0 if t.max_minutes is not None else None
        timer = TrainingClock(clock, elapsed=state.train_seconds)
        sched = engine.lr_scheduler if isinstance(engine.lr_scheduler, TimeBudgetLR) else None
        at_budget = budget_s is not None and state.train_seconds >= budget_s
        # snapshot marks still ahead (a resume skips the ones its checkpoint has passed)
        marks = sorted(m * 60.0 for m in t.snapshot_minutes if m * 60.0 > state.train_seconds)
        logger = RunLogger(cfg, run.out, state.step, rank, run_info={
            "model_config": run.model_config.to_dict(), "world_size": dist_.world,
            "global_batch_size": t.micro_batch_size * t.gradient_accumulation_steps * dist_.world,
            "resumed_from": str(run.resume_dir) if run.resume_dir is not None else None})
        window = Throughput(run.model_config, peak_tflops(cfg, dist_.device_type), dist_.world)
        guard = NonFiniteGuard(t, run.out)
        try:
            batches = iterate(run.train_batches, state.position, workers=t.dataloader_workers)
            engine.train()
            timer.start()  # training time counts from here (see zhbert.train.schedule)
            while state.step < t.max_steps and not at_budget:
                result = train_step(engine, batches, run, step_accumulation(t, state, budget_s))
                state.advance(result)
                # rank 0's count on every rank when there is a budget: all stop at the same step
                state.train_seconds = synced_elapsed(timer, dist_.world, dist_.device) if budget_s is not None \
                    else timer.elapsed()
                at_budget = budget_s is not None and state.train_seconds >= budget_s
                last = state.step == t.max_steps or at_budget
                snap = [m for m in marks if state.train_seconds >= m]
                marks = marks[len(snap):]
                if sched is not None:
                    sched.set_elapsed(state.train_seconds)  # the next step's lr
                window.add(result.totals)
                rec = step_record(state, result, run, engine)
                rec["train_s"] = state.train_seconds
                do_eval = run.eval_batches is not None and (state.step % t.eval_every == 0 or last or bool(snap))
                if state.step % t.log_every == 0 or state.step == 1 or last or do_eval or rec.get("nonfinite"):
                    rec.update(window.record(), epoch=state.position.epoch, samples=state.samples_seen,
                               tokens=state.tokens_seen)
                    if do_eval:
                        with timer.paused():
                            rec.update(evaluate(engine, run.eval_batches, t.eval_batches, dist_.device, dist_.world))
                    logger.log(rec)
                    state.last_record = rec
                logger.advance(1, {"loss": f"{rec['loss']:.3f}", "lr": f"{result.lr:.2e}"})
                guard.check(rec, state, rank)  # TrainingDiverged stops the run
                if state.step % t.checkpoint_every == 0 or last or snap:
                    with timer.paused():
                        save(run, engine, state, nonfinite_steps=guard.total)
                        for m in snap:
                            if rank == 0:
                                snapshot(run.out, state, m, rec)
                        if snap:
                            barrier()
        finally:
            logger.close()
        if at_budget and rank == 0:
            print(f"[zhbert] stopped at the time budget: step {state.step}, {state.train_seconds / 60:.2f} "
                  f"training minutes (train.max_minutes={t.max_minutes:g})", flush=True)
        latest = checkpoint.checkpoints_dir(run.out) / f"step_{state.last_saved}" if state.last_saved is not None else None
        return {"step": state.step, "output_dir": str(run.out), "checkpoint": str(latest) if latest else None,
                "samples_seen": state.samples_seen, "tokens_seen": state.tokens_seen, "last": state.last_record,
                "nonfinite_steps": guard.total, "train_seconds": state.train_seconds,
                "stopped_at_budget": at_budget, "max_minutes": t.max_minutes}
    finally:
        dist_.close()


def step_accumulation(t, state: "TrainState", budget_s: Optional[float]) -> int:
    """Micro-batches of the next optimizer step: ``gradient_accumulation_steps``, or under a
    batch ramp (``train.batch_ramp_fraction``) :func:`ramp_accumulation` at the run fraction done
    (training time over the budget with ``schedule: time``, steps over max_steps otherwise; the
    same on every rank: the time is rank 0's, broadcast)."""
    if t.batch_ramp_fraction <= 0:
        return t.gradient_accumulation_steps
    u = state.train_seconds / budget_s if t.schedule == "time" and budget_s else state.step / t.max_steps
    return ramp_accumulation(u, t.batch_ramp_start, t.gradient_accumulation_steps, t.batch_ramp_fraction)


def train_step(engine, batches, run: Run, accumulation: Optional[int] = None) -> StepResult:
    """One optimizer step: A = ``accumulation`` (default gradient_accumulation_steps)
    micro-batches, forward + backward each, the optimizer at the last; then one all-reduce and
    one sync of the step's sums.

    Under a batch ramp A changes between steps: the engine's accumulation count is set to A
    (``set_train_batch_size``: DeepSpeed divides each micro-batch's loss by it) and the boundary
    is marked explicitly on every micro-batch (DeepSpeed's own test, micro-steps modulo A, would
    misplace it after a change of A).

    fp32 without ZeRO: DeepSpeed hands the step to a plain torch optimizer, which would apply
    NaN/inf gradients, so the norm is measured before the step and such a step is skipped
    (:class:`_SkipOptimizerStep`). Every other mode (bf16, fp16, ZeRO 1-3) has DeepSpeed check
    the gradients and skip the step itself (``was_step_applied``).
    """
    cfg, device = run.cfg, run.dist.device
    own_norm = cfg.deepspeed.zero_stage == 0 and cfg.deepspeed.precision == "fp32"
    sums = DeviceSums(StepTotals, device)
    grad_norm, applied = None, True
    lr = float(engine.get_lr()[0])  # the lr this optimizer step applies
    ramp = cfg.train.batch_ramp_fraction > 0
    A = int(accumulation or cfg.train.gradient_accumulation_steps)
    if ramp and engine.gradient_accumulation_steps() != A:
        engine.set_train_batch_size(cfg.train.micro_batch_size * run.dist.world * A)
    for i in range(A):
        if ramp:
            engine.set_gradient_accumulation_boundary(i == A - 1)
        pos, batch = next(batches)
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
        sums.add(loss=res.loss, mlm_loss=res.mlm_loss, nsp_loss=res.nsp_loss, mlm_correct=res.mlm_correct,
                 mlm_count=res.mlm_count, nsp_correct=res.nsp_correct, nsp_count=res.nsp_count,
                 tokens=batch["attention_mask"].sum(), samples=float(ids.shape[0]), padded_tokens=float(ids.numel()))
    totals = sums.totals(run.dist.world)
    if grad_norm is None:
        g = engine.get_global_grad_norm()
        grad_norm = float(g) if g is not None else None
    next_position = run.train_batches.position(run.train_batches.linear(pos) + 1)
    return StepResult(totals, lr, grad_norm, applied, next_position, A)


@dataclass
class TrainState:
    """Where the run is: what a checkpoint records and a resume restores."""

    step: int = 0
    samples_seen: int = 0
    tokens_seen: int = 0
    position: Any = None  # order.DataPosition of the next micro-batch
    train_seconds: float = 0.0  # training time so far (zhbert.train.schedule), resumes included
    last_saved: Optional[int] = None
    last_record: dict = dataclasses.field(default_factory=dict)

    def advance(self, result: StepResult) -> None:
        self.step += 1
        self.position = result.next_position
        self.samples_seen += int(result.totals.samples)
        self.tokens_seen += int(result.totals.tokens)


def step_record(state: TrainState, result: StepResult, run: Run, engine) -> dict[str, Any]:
    """The step's metrics.jsonl record (throughput and eval keys are added when it is logged)."""
    s, n_micro = result.totals, result.accumulation * run.dist.world
    rec = {"step": state.step, "loss": s.loss / n_micro, "mlm_loss": s.mlm_loss / n_micro,
           "nsp_loss": s.nsp_loss / n_micro,
           "mlm_acc": s.mlm_correct / s.mlm_count if s.mlm_count > 0 else None,
           "nsp_acc": s.nsp_correct / s.nsp_count if s.nsp_count > 0 else None,
           "lr": result.lr, "grad_norm": result.grad_norm}
    if run.cfg.train.batch_ramp_fraction > 0:
        rec["global_batch_size"] = run.cfg.train.micro_batch_size * n_micro
    if run.cfg.deepspeed.precision == "fp16":
        # ZeRO 1-3 optimizers expose cur_scale; DeepSpeed 0.19's plain fp16 optimizers (ZeRO 0) only loss_scale
        opt = engine.optimizer
        rec["loss_scale"] = float(getattr(opt, "loss_scale", getattr(opt, "cur_scale", float("nan"))))
        nonfinite = not math.isfinite(s.loss)  # scaler-overflow skips are routine, not faults
    else:
        nonfinite = not (math.isfinite(s.loss) and result.applied
                         and (result.grad_norm is None or math.isfinite(result.grad_norm)))
    if nonfinite:
        rec["nonfinite"] = True
    return rec


class NonFiniteGuard:
    """``train.on_nonfinite``: a step with a NaN/inf loss or gradient norm was not applied (see
    :func:`train_step`); ``stop`` ends the run, ``skip`` goes on until ``max_nonfinite_skips``
    such steps in a row. Every rank sees the same all-reduced sums, so all stop together."""

    def __init__(self, t, out: Path):
        self.t, self.out = t, out
        self.run, self.total = 0, 0

    def check(self, rec: dict, state: TrainState, rank: int) -> None:
        if not rec.get("nonfinite"):
            self.run = 0
            return
        self.run, self.total = self.run + 1, self.total + 1
        what = (f"loss {fmt(rec['loss'])}, grad norm {fmt(rec['grad_norm'])}; the update was not applied "
                f"and no checkpoint is written from it; last good checkpoint: "
                f"{checkpoint.find_latest(checkpoint.checkpoints_dir(self.out)) or 'none'}")
        if self.t.on_nonfinite == "stop":
            raise TrainingDiverged(f"non-finite loss or gradient norm at step {state.step} ({what}). Lower "
                                   f"train.lr (now {self.t.lr:g}) or warm up longer; train.on_nonfinite=skip "
                                   "drops such steps instead")
        if self.run >= self.t.max_nonfinite_skips:
            raise TrainingDiverged(f"{self.run} steps in a row with a non-finite loss or gradient "
                                   f"norm (train.max_nonfinite_skips), the last at step {state.step} ({what}). "
                                   f"Lower train.lr (now {self.t.lr:g})")
        if rank == 0:
            warnings.warn(f"step {state.step}: non-finite loss or gradient norm; step dropped "
                          f"({self.run} in a row, train.on_nonfinite=skip)", stacklevel=2)


def snapshot(out: Path, state: TrainState, mark_s: float, rec: dict[str, Any]) -> Path:
    """Copy the HF export of the checkpoint just written to ``snapshots/min<M>/`` (rank 0)."""
    name = f"min{mark_s / 60:g}".replace(".", "_")
    dst = out / "snapshots" / name
    tmp = dst.with_name(name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(checkpoint.checkpoints_dir(out) / f"step_{state.step}" / checkpoint.HF_DIR, tmp)
    info = {"minutes": mark_s / 60, "step": state.step, "train_s": state.train_seconds,
            "tokens": state.tokens_seen, "samples": state.samples_seen, "record": rec}
    (tmp / "snapshot.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    print(f"[zhbert] snapshot at {mark_s / 60:g} training minutes (step {state.step}): {dst}", flush=True)
    return dst


def save(run: Run, engine, state: TrainState, nonfinite_steps: int) -> None:
    """Checkpoint ``step_<N>`` (collective: every rank calls it)."""
    meta = checkpoint.run_meta(run.cfg, samples_seen=state.samples_seen, tokens_seen=state.tokens_seen,
                               position=state.position, batches=run.train_batches, data_dir=run.cfg.data.dir,
                               tokenizer=run.tokenizer, model_config=run.model_config,
                               nonfinite_steps=nonfinite_steps, train_seconds=state.train_seconds)
    checkpoint.save_checkpoint(engine, output_dir=run.out, step=state.step, meta=meta, model_config=run.model_config,
                               tokenizer=run.tokenizer, zero_stage=run.cfg.deepspeed.zero_stage,
                               keep_last=run.cfg.train.keep_last)
    state.last_saved = state.step


# ------------------------------------------------------------------------------ building a run


def build_run(cfg: PretrainConfig, dist_) -> Run:
    """Data (prepared first if needed, and checked to be what ``data.*`` asks for), tokenizer,
    model config, DeepSpeed config, batches, the checkpoint to resume, the run's files."""
    from zhbert.prep.prepare import check_prepared_matches, load_prepared
    from zhbert.prep.tokenizer import ChineseTokenizer
    from zhbert.train.collator import PretrainingCollator
    from zhbert.train.ds_config import build_ds_config
    from zhbert.train.masking import VocabInfo

    rank, world, t, out = dist_.rank, dist_.world, cfg.train, Path(cfg.train.output_dir)
    if cfg.model.init_from:  # rank 0 first: a registry name may need a download
        if rank == 0:
            resolve_init_from(cfg.model.init_from)
        barrier()
    if cfg.data.fullwidth is None:  # what the model's vocabulary saw (see DataConfig.fullwidth)
        cfg.data.fullwidth = normalization_key(init_normalization(cfg.model.init_from))[0] \
            if cfg.model.init_from else False
    ensure_data(cfg, rank)
    cfg.data = check_prepared_matches(cfg.data)  # refuses a dir prepared from other data.*
    data_dir = cfg.data.dir
    tokenizer = ChineseTokenizer.from_dir(data_dir)
    check_data_vocab(data_dir, tokenizer)
    model_config = resolve_model_config(cfg, tokenizer, data_dir)
    ds_cfg = build_ds_config(cfg, world, dist_.device_type, hidden_size=model_config.hidden_size)
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
    resume_dir = rank0_decides(lambda: checkpoint.resolve_resume(t.resume, out), rank, world)
    meta = checkpoint.read_meta(resume_dir) if resume_dir is not None else {}
    if resume_dir is not None:
        checkpoint.check_resume_compatible(resume_dir, meta, model_config, tokenizer, data_dir,
                                           allow_normalization_change=t.allow_normalization_change)
        if not checkpoint.is_sharded(resume_dir):
            ds_cfg.pop("checkpoint", None)  # ZeRO-0 state loads on any world size, not as universal

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

    rank0_decides(write_run_files, rank, world)
    return Run(cfg, out, dist_, tokenizer, model_config, ds_cfg, train_batches, eval_batches, resume_dir, meta)


def build_engine(run: Run):
    """The model (fresh with ``train.seed``, or ``model.init_from``'s weights) in a DeepSpeed engine.

    LR schedule: ``schedule: steps`` is the DeepSpeed scheduler of the derived JSON;
    ``schedule: time`` is zhbert's :class:`TimeBudgetLR`, handed to ``deepspeed.initialize`` so
    that the engine steps it and saves/loads its state with every checkpoint.
    """
    import deepspeed
    import torch

    from zhbert.model.modeling import BertForPreTraining

    cfg, t = run.cfg, run.cfg.train
    torch.manual_seed(t.seed)  # same initial weights on every rank (and in every rerun)
    if cfg.model.init_from:
        model = BertForPreTraining.from_pretrained(resolve_init_from(cfg.model.init_from), config=run.model_config)
    else:
        model = BertForPreTraining(run.model_config)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    time_lr = TimeBudgetLR(t.lr, t.max_minutes * 60.0, t.warmup_fraction, t.decay, t.min_lr_ratio) \
        if t.schedule == "time" else None
    try:
        engine, _, _, scheduler = deepspeed.initialize(
            model=model, model_parameters=_param_groups(model, t.weight_decay), config=run.ds_config,
            lr_scheduler=time_lr)
    except (ValueError, TypeError, KeyError, AssertionError) as e:
        if not (cfg.deepspeed.extra or cfg.deepspeed.config_file):
            raise
        first = "; ".join(line.strip() for line in str(e).strip().splitlines()[:3] if line.strip())
        given = ", ".join(filter(None, [f"deepspeed.config_file {cfg.deepspeed.config_file}"
                                        if cfg.deepspeed.config_file else "",
                                        f"deepspeed.extra keys {', '.join(sorted(cfg.deepspeed.extra))}"
                                        if cfg.deepspeed.extra else ""]))
        raise ConfigError(f"deepspeed.extra: DeepSpeed rejected the config made with {given} "
                          f"(see {run.out / 'ds_config.json'}): {type(e).__name__}: {first}") from None
    if time_lr is not None:
        from deepspeed.runtime.lr_schedules import get_torch_optimizer

        time_lr.bind(get_torch_optimizer(engine.optimizer))  # the optimizer DeepSpeed's schedulers drive
    elif scheduler is not None:
        # DeepSpeed's Warmup* schedulers start at iteration -1 (= min lr) and count from there;
        # stepping to 0 makes optimizer step s (1-based) use the schedule's value at s-1.
        scheduler.step(0)
    return engine


def resume_or_start(run: Run, engine) -> TrainState:
    """Step 0, or the resumed checkpoint's weights, optimizer, LR schedule, RNG, counters and
    data position (rescaled when the global micro-batch changed)."""
    state = TrainState(position=DataPosition())
    d, meta, rank = run.resume_dir, run.resume_meta, run.dist.rank
    if d is None:
        return state
    checkpoint.load_into(engine, d, meta, world=run.dist.world, resume_universal=run.cfg.train.resume_universal)
    state.step, state.samples_seen, state.tokens_seen = int(meta["step"]), int(meta["samples_seen"]), \
        int(meta["tokens_seen"])
    state.position = rescale_position(DataPosition.from_dict(meta["data_position"]),
                                      int(meta.get("global_micro_batch", run.train_batches.global_micro)),
                                      run.train_batches.global_micro)
    state.last_saved = state.step
    state.train_seconds = float(meta.get("train_seconds", 0.0))
    if isinstance(engine.lr_scheduler, TimeBudgetLR):
        if "train_seconds" not in meta and rank == 0:
            warnings.warn(f"{d}: meta.json records no train_seconds (saved before the time budget existed): "
                          "the time schedule and budget count from 0 training seconds", stacklevel=2)
        engine.lr_scheduler.set_elapsed(state.train_seconds)  # the lr the next step applies
    if not checkpoint.load_rng(d, rank):
        warnings.warn(f"{d}: rng/rank_{rank}.pt is missing: the resumed run is no longer "
                      "identical to an uninterrupted one (its dropout draws differ)", stacklevel=2)
    changed = _changed_keys(meta.get("config", {}), to_dict(run.cfg))
    before, now = meta.get("config", {}).get("train", {}), run.cfg.train
    if now.schedule == "time" and rank == 0 and (before.get("schedule", "steps"), before.get("max_minutes")) != \
            ("time", now.max_minutes):
        warnings.warn(f"resuming {d} (train.schedule={before.get('schedule', 'steps')}, max_minutes="
                      f"{before.get('max_minutes')}) with train.schedule=time, max_minutes={now.max_minutes:g}: "
                      f"the LR schedule continues from {state.train_seconds / 60:.2f} training minutes on the new "
                      "budget's curve", stacklevel=2)
    if changed and rank == 0:
        warnings.warn(f"resuming {d} with a different {', '.join(changed)}: the data order, masks "
                      "or batch size differ from the original run", stacklevel=2)
    if rank == 0:
        spent = (f", {state.train_seconds / 60:.2f} of {run.cfg.train.max_minutes:g} training minutes used"
                 if run.cfg.train.max_minutes is not None else "")
        print(f"[zhbert] resumed from {d} at step {state.step}, data position "
              f"epoch {state.position.epoch} batch {state.position.batch_index}{spent}", flush=True)
    return state


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

    n = min(max_batches, batches.batches_per_epoch)
    sums = DeviceSums(EvalTotals, device)
    engine.eval()
    with torch.no_grad():
        for b in range(n):
            batch = {k: v.to(device) for k, v in batches.batch(0, b).items()}
            r = engine(**batch)
            mc, nc = float(r.mlm_count), float(r.nsp_count)
            sums.add(mlm_loss_sum=float(r.mlm_loss) * mc, mlm_correct=float(r.mlm_correct), mlm_count=mc,
                     nsp_loss_sum=float(r.nsp_loss) * nc, nsp_correct=float(r.nsp_correct), nsp_count=nc)
    engine.train()
    e = sums.totals(world)
    out = {"eval/mlm_loss": e.mlm_loss_sum / e.mlm_count if e.mlm_count else None,
           "eval/mlm_acc": e.mlm_correct / e.mlm_count if e.mlm_count else None}
    if e.nsp_count:
        out.update({"eval/nsp_loss": e.nsp_loss_sum / e.nsp_count, "eval/nsp_acc": e.nsp_correct / e.nsp_count})
    out["eval/loss"] = (out["eval/mlm_loss"] or 0.0) + out.get("eval/nsp_loss", 0.0)
    return out
