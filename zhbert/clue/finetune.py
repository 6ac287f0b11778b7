"""Fine-tune one (task, seed): AdamW + linear warmup/decay, dev evaluation, best checkpoint.

The loop is the same for every kind of task; what differs (model head, features, decoding,
metric) comes from the task's :class:`zhbert.clue.kinds.Kind`. Per seed::

    seed python/numpy/torch from the seed; data order from torch.Generator(seed)
    model = kind.model(model_dir)        # BertFor{SequenceClassification,QuestionAnswering,MultipleChoice}
    features = kind.features(train)      # one per example; CMRC2018: one per context window
    for step in 1..ceil(epochs * ceil(len(features) / batch)):
        loss = model(**kind.collate(batch)).loss; backward; clip; AdamW step; lr schedule step
        evaluate on dev every `eval_every` steps and at each epoch end:
            kind.predict -> kind.score -> the kind's selection metric (accuracy; CMRC2018: EM)
        keep a CPU copy of the weights with the best dev score (first best wins ties)
    restore the best weights -> dev predictions + test predictions

Precision: fp32 on CPU, bf16 autocast on CUDA (weights and optimizer states stay fp32).
``use_deepspeed`` routes the same model/optimizer/schedule through a single-process
``deepspeed.initialize`` engine (ZeRO stage 0); the numbers are the same loop.
"""

from __future__ import annotations

import logging
import math
import random
import time
from typing import Callable, Optional

from zhbert.clue.data import Example
from zhbert.clue.tasks import ClueTaskConfig


def encode(tokenizer, examples: list[Example], max_length: int) -> list[dict]:
    """Tokenize once: [CLS] a [SEP] (b [SEP]), longest-first truncation to ``max_length``."""
    # tokenizer.normalize: the corpus normalisation recorded at pretraining (identity for
    # checkpoints that recorded none, e.g. released HF models), so text looks as in pretraining.
    norm = tokenizer.normalize
    return [tokenizer.encode_pair(norm(e.text_a), None if e.text_b is None else norm(e.text_b),
                                  max_length=max_length) for e in examples]


def _autocast(device):
    import contextlib

    import torch

    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _only_new_classifier(record) -> bool:
    """Logging filter: drop the "randomly initialised: classifier.*" notice, which is the
    expected state of every fine-tuning start; keep it when encoder/pooler weights are missing."""
    msg = record.getMessage()
    return not ("randomly initialised" in msg and "bert." not in msg.split("checkpoint)", 1)[-1])


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(model, cfg: ClueTaskConfig, total_steps: int):
    import torch

    no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if not any(k in n for k in no_decay)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in params if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    warmup = int(cfg.warmup_ratio * total_steps)

    def lr_lambda(step: int) -> float:  # linear warmup to lr, then linear decay to 0
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)


def _deepspeed_engine(model, opt, sched, cfg: ClueTaskConfig, device):
    """A single-process DeepSpeed engine around the fine-tuning model (launch and DeepSpeed
    JSON from the same places pretraining uses: zhbert.train.launch, zhbert.train.ds_config)."""
    import deepspeed

    from zhbert.train.ds_config import finetune_ds_config
    from zhbert.train.launch import setup_env, start_distributed

    setup_env()
    start_distributed()
    ds_config = finetune_ds_config(cfg.batch_size, cfg.clip_grad_norm, bf16=device.type == "cuda")
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched, config=ds_config)
    return engine


def finetune_seed(kind, model_dir, data, tokenizer, cfg: ClueTaskConfig, seed: int, device: str = "cpu",
                  use_deepspeed: bool = False, log: Optional[Callable[[dict, int], None]] = None, progress=None,
                  label: str = "", save_dir=None) -> dict:
    """Train on ``data.train``, select on ``data.dev``; returns dev/test predictions and stats.

    ``kind`` is the task's :class:`zhbert.clue.kinds.Kind`. ``log(metrics, step)`` receives
    train loss/lr and the dev scores (wandb); ``progress`` is a tqdm bar advanced once per
    optimizer step. Without a terminal (no bar, or a disabled one) a plain line (prefixed
    ``label``) reports every dev evaluation and every tenth of the steps. ``save_dir``: where
    to write the fine-tuned model (best dev weights) in HF format, or None.
    """
    import torch

    t0 = time.time()
    dev_t = torch.device(device)
    seed_everything(seed)
    weights_log = logging.getLogger("zhbert.model.weights")
    weights_log.addFilter(_only_new_classifier)
    try:
        model = kind.model(model_dir).to(dev_t)
    finally:
        weights_log.removeFilter(_only_new_classifier)
    model.train()
    pad = tokenizer.pad_id
    train_feats = kind.features(tokenizer, data.train, cfg, train=True)
    dev_feats = kind.features(tokenizer, data.dev, cfg, train=False)
    steps_per_epoch = math.ceil(len(train_feats) / cfg.batch_size)
    total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    opt, sched = _optimizer(model, cfg, total)
    engine = _deepspeed_engine(model, opt, sched, cfg, dev_t) if use_deepspeed else None
    gen = torch.Generator().manual_seed(seed)  # data order: one permutation per epoch
    metric = kind.metric

    best = {"score": -1.0, "scores": {}, "step": 0, "state": None}
    history: list[dict] = []
    plain = progress is None or getattr(progress, "disable", False)
    every = max(1, total // 10)

    def line(step: int, loss: float, scores: Optional[dict] = None) -> None:
        if plain:
            dev = "".join(f" | dev {_short(k)} {v:.4f}" for k, v in (scores or {}).items())
            print(f"[zhbert] clue {label}step {step}/{total} (epoch {step / steps_per_epoch:.2f}) | loss {loss:.4f}"
                  f"{dev} | {time.time() - t0:.0f}s", flush=True)

    def evaluate(step: int, epoch: float, train_loss: float) -> None:
        preds = kind.predict(model, data.dev, dev_feats, cfg, dev_t, pad)
        scores = kind.score(data.dev, preds)
        history.append({"step": step, "epoch": round(epoch, 4), "train_loss": train_loss,
                        **{f"dev_{k}": v for k, v in scores.items()}})
        if log:
            log({**{f"dev/{k}": v for k, v in scores.items()}, "epoch": epoch}, step)
        line(step, train_loss, scores)
        if scores[metric] > best["score"]:
            best.update(score=scores[metric], scores=scores, step=step, predictions=preds,
                        state={k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})

    step = 0
    while step < total:
        order = torch.randperm(len(train_feats), generator=gen).tolist()
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            batch = {k: v.to(dev_t) for k, v in kind.collate([train_feats[j] for j in idx], pad).items()}
            with _autocast(dev_t):
                loss = (engine or model)(**batch).loss
            if engine is not None:
                engine.backward(loss)
                engine.step()
            else:
                loss.backward()
                if cfg.clip_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            step += 1
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if log:
                log({"train/loss": loss.item(), "train/lr": sched.get_last_lr()[0]}, step)
            epoch_end = i + cfg.batch_size >= len(order) or step == total
            if epoch_end or (cfg.eval_every and step % cfg.eval_every == 0):
                evaluate(step, step / steps_per_epoch, loss.item())
            elif step % every == 0:
                line(step, loss.item())
            if step == total:
                break

    model.load_state_dict(best["state"])
    if save_dir is not None:  # HF layout: config.json + model.safetensors + the tokenizer files
        model.save_pretrained(save_dir)
        tokenizer.save(save_dir)
    # eval mode is deterministic: the best evaluation's predictions are the restored model's
    dev_pred, scores = best["predictions"], best["scores"]
    extra = {}
    for name, split in (data.extra or {}).items():  # labelled extra sets scored after selection (ChID test_public)
        feats = kind.features(tokenizer, split, cfg, train=False)
        extra[name] = kind.score(split, kind.predict(model, split, feats, cfg, dev_t, pad))
    test_pred = []
    if data.test is not None and data.test.examples:
        test_feats = kind.features(tokenizer, data.test, cfg, train=False)
        test_pred = kind.predict(model, data.test, test_feats, cfg, dev_t, pad)
    return {
        "dev": scores,
        "dev_score": scores[metric],
        "extra_eval": extra,
        "best_step": best["step"],
        "total_steps": total,
        "steps_per_epoch": steps_per_epoch,
        "train_features": len(train_feats),
        "history": history,
        "dev_predictions": dev_pred,
        "test_predictions": test_pred,
        "randomly_initialised": list(getattr(getattr(model, "load_report", None), "initialized", [])),
        "wall_time_s": round(time.time() - t0, 2),
    }


def _short(metric: str) -> str:
    return {"accuracy": "acc"}.get(metric, metric)
