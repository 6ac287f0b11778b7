"""Pretraining throughput benchmarks (training-step tokens/s on this machine).

Section 1 -- model vs transformers: zhbert ``BertForPreTraining`` against
``transformers.BertForPreTraining`` with identical shapes, initial weights, batches and
optimizer (AdamW), timing forward + backward + optimizer step. Steps of the two models are
interleaved so that load from other processes on a shared machine hits both alike; medians
are reported.

Section 2 -- DeepSpeed engine step vs plain torch loop: benchmarks/ds_overhead.py (``--deepspeed``).

Section 3 -- MFU (``--mfu``, implied by ``--device cuda``): zhbert's training step alone, in
the DeepSpeed engine with the JSON the trainer derives (``build_ds_config``: precision, fused
or torch AdamW, clipping), on realistic batches; tokens/s and model FLOPs utilisation counted
as the trainer counts them (``zhbert.train.metrics``: 6 x non-embedding parameters + 12 x L x
H x T per real token, over the device's dense peak). ``--json FILE`` writes the results.

Usage:
    python benchmarks/pretrain_throughput.py --shapes tiny,base --steps 10 --base-steps 3
    python benchmarks/pretrain_throughput.py --device cuda --precision bf16 --shapes base,tiny \
        --batch 256,1024 --steps 50 --json runs/mfu.json          # GPU: tokens/s and MFU
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from zhbert.model.modeling import BertConfig, BertForPreTraining

SHAPES = {
    # name: (layers, hidden, heads, intermediate, batch size)
    "tiny": (4, 256, 4, 1024, 32),
    "base": (12, 768, 12, 3072, 8),
}
VOCAB, SEQ_LEN, MASK_PROB = 21128, 128, 0.15


# ------------------------------------------------------------------------ realistic batches
def make_batch(rng: np.random.Generator, batch_size: int, seq_len: int = SEQ_LEN,
               vocab_size: int = VOCAB) -> dict[str, torch.Tensor]:
    """A pretraining batch shaped like real data (collator layout, HF conventions).

    Lengths follow Google's create_pretraining_data: 10% of instances are short (target
    length uniform in [2, T]); the rest fill the sequence up to a few tokens (sentence
    boundaries), i.e. length uniform in [T - 16, T]. 15% of real non-special tokens get an
    MLM label; next_sentence_label is 0/1.
    """
    short = rng.random(batch_size) < 0.1
    lengths = np.where(short, rng.integers(8, seq_len + 1, batch_size),
                       rng.integers(seq_len - 16, seq_len + 1, batch_size))
    ids = np.zeros((batch_size, seq_len), dtype=np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    labels = np.full_like(ids, -100)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(106, vocab_size, n)
        ids[b, 0], ids[b, n - 1] = 101, 102  # [CLS] ... [SEP]
        split = int(rng.integers(1, n - 1))
        ids[b, split] = 102
        types[b, split + 1:n] = 1
        mask[b, :n] = 1
        cand = np.array([i for i in range(1, n - 1) if i != split])
        picked = rng.choice(cand, max(1, round(len(cand) * MASK_PROB)), replace=False)
        labels[b, picked] = ids[b, picked]
        ids[b, picked] = 103  # [MASK] (80/10/10 does not matter for speed)
    return {
        "input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
        "token_type_ids": torch.from_numpy(types), "labels": torch.from_numpy(labels),
        "next_sentence_label": torch.from_numpy(rng.integers(0, 2, batch_size)),
    }


# ------------------------------------------------------------- section 1: zhbert vs HF model
@dataclass
class Result:
    shape: str
    batch: int
    zhbert_tok_s: float
    hf_tok_s: float
    zhbert_step_s: float
    hf_step_s: float
    zhbert_cpu_s: float  # median process CPU time per step (all threads)
    hf_cpu_s: float

    @property
    def ratio(self) -> float:
        return self.zhbert_tok_s / self.hf_tok_s

    @property
    def cpu_ratio(self) -> float:
        return self.hf_cpu_s / self.zhbert_cpu_s


def _train_step(model, opt, batch) -> tuple[float, float]:
    """One forward + backward + AdamW step; returns (wall seconds, process CPU seconds)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = model(**batch)
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, time.process_time() - c0


def bench_model_vs_hf(shape: str, steps: int, warmup: int = 1, seed: int = 0) -> Result:
    """Median training-step time of zhbert vs transformers BertForPreTraining on one shape."""
    import transformers

    layers, hidden, heads, inter, batch_size = SHAPES[shape]
    kw = dict(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
              num_attention_heads=heads, intermediate_size=inter, max_position_embeddings=512)
    torch.manual_seed(seed)
    hf = transformers.BertForPreTraining(transformers.BertConfig(**kw)).train()
    ours = BertForPreTraining(BertConfig(**kw)).train()
    ours.load_state_dict(hf.state_dict())  # same starting point
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
            for name, m in (("zhbert", ours), ("hf", hf))}
    rng = np.random.default_rng(seed)
    batches = [make_batch(rng, batch_size) for _ in range(warmup + steps)]
    real_tokens = [int(b["attention_mask"].sum()) for b in batches[warmup:]]
    padded_tokens = batch_size * SEQ_LEN
    times: dict[str, list[float]] = {"zhbert": [], "hf": []}
    cpu: dict[str, list[float]] = {"zhbert": [], "hf": []}
    for i, batch in enumerate(batches):
        order = (("zhbert", ours), ("hf", hf)) if i % 2 == 0 else (("hf", hf), ("zhbert", ours))
        dt = {}
        for name, model in order:  # interleave: background load hits both alike
            torch.manual_seed(seed + i)
            dt[name], dc = _train_step(model, opts[name], batch)
            if i >= warmup:
                times[name].append(dt[name])
                cpu[name].append(dc)
        tag = "warmup" if i < warmup else "step"
        print(f"  {shape} {tag} {i}: zhbert {dt['zhbert']:.3f}s  hf {dt['hf']:.3f}s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    # tokens/s counts the padded grid B*T for both models (the work requested of them).
    print(f"  {shape}: mean real tokens/batch {statistics.mean(real_tokens):.0f} of {padded_tokens}")
    return Result(shape, batch_size, padded_tokens / med["zhbert"], padded_tokens / med["hf"],
                  med["zhbert"], med["hf"], med_cpu["zhbert"], med_cpu["hf"])


# --------------------------------------------- section 2: DeepSpeed engine vs plain torch loop
# Lives in benchmarks/ds_overhead.py (it reuses SHAPES and make_batch from this file); run
# here with --deepspeed so one command prints every ratio. Target: overhead <= 10%.


# ------------------------------------------------------------------- section 3: MFU (GPU)
def bench_mfu(dist_, shape: str, steps: int, batch_size: int, *, precision: str = "bf16", optimizer: str = "fused",
              warmup: int = 5, peak: float = 0.0, dropout: float = 0.1, seed: int = 0) -> dict:
    """Tokens/s and MFU of zhbert's training step (forward, backward, DeepSpeed optimizer step)
    on ``dist_`` (``zhbert.train.launch.start_distributed()``: CUDA on a GPU machine, else CPU,
    where MFU needs ``peak``). ZeRO 0, constant lr; ``batch_size`` sequences of SEQ_LEN per step."""
    import deepspeed

    from zhbert.config import load_config
    from zhbert.train.ds_config import build_ds_config
    from zhbert.train.metrics import model_flops_per_token, peak_tflops
    from zhbert.train.trainer import _param_groups

    device, on_cuda = dist_.device, dist_.device_type == "cuda"
    layers, hidden, heads, inter, _ = SHAPES[shape]
    config = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=inter, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    cfg = load_config(None, [f"deepspeed.precision={precision}", f"train.micro_batch_size={batch_size}",
                             "train.gradient_accumulation_steps=1", "train.lr=1e-4",
                             f"deepspeed.torch_adam={'true' if optimizer == 'torch' else 'false'}",
                             f"train.peak_tflops={peak}"])
    ds = build_ds_config(cfg, dist_.world, dist_.device_type, hidden_size=hidden)
    ds.pop("scheduler", None)
    torch.manual_seed(seed)
    model = BertForPreTraining(config)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=_param_groups(model, cfg.train.weight_decay),
                                      config=ds)
    rng = np.random.default_rng(seed)
    batches = [{k: v.to(device) for k, v in make_batch(rng, batch_size).items()} for _ in range(8)]
    real = [int(b["attention_mask"].sum()) for b in batches]
    sync = torch.cuda.synchronize if on_cuda else (lambda: None)

    def step(b):
        out = engine(**b)
        engine.backward(out.loss)
        engine.step()
        return out.loss

    for i in range(warmup):
        step(batches[i % len(batches)])
    sync()
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    losses, tokens = [], 0
    t0 = time.perf_counter()
    for i in range(steps):
        losses.append(step(batches[i % len(batches)]).detach())
        tokens += real[i % len(batches)]
    sync()
    dt = time.perf_counter() - t0
    flops = model_flops_per_token(config, SEQ_LEN) * tokens  # T = the padded length, as the trainer
    peak_tf = peak_tflops(cfg, dist_.device_type)
    loss_values = [float(x.float()) for x in losses]
    result = {
        "shape": shape, "layers": layers, "hidden": hidden, "heads": heads, "intermediate": inter, "vocab": VOCAB,
        "seq_len": SEQ_LEN, "batch": batch_size, "precision": precision, "optimizer": optimizer,
        "optimizer_class": type(getattr(engine.optimizer, "optimizer", engine.optimizer)).__name__,
        "dropout": dropout, "device": torch.cuda.get_device_name() if on_cuda else dist_.device_type,
        "steps": steps, "warmup_steps": warmup, "step_s": dt / steps,
        "tokens_per_s": tokens / dt,  # real (non-padding) tokens
        "padded_tokens_per_s": steps * batch_size * SEQ_LEN / dt,
        "real_token_share": sum(real) / (len(real) * batch_size * SEQ_LEN),
        "model_tflops_per_s": flops / dt / 1e12, "peak_tflops": peak_tf,
        "mfu": flops / dt / (peak_tf * 1e12) if peak_tf else None,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if on_cuda else None,
        "loss_first": loss_values[0], "loss_last": loss_values[-1],
        "losses_finite": all(np.isfinite(loss_values)),
    }
    del engine, model, batches, losses
    if on_cuda:
        torch.cuda.empty_cache()
    return result


def print_mfu(results: list[dict]) -> None:
    print("shape  batch  precision  optimizer   s/step     tokens/s  model TFLOP/s  peak   MFU    max GiB")
    for r in results:
        mfu = f"{100 * r['mfu']:5.1f}%" if r["mfu"] is not None else "  n/a "
        mem = f"{r['max_memory_gib']:.1f}" if r["max_memory_gib"] is not None else "n/a"
        print(f"{r['shape']:6s} {r['batch']:5d}  {r['precision']:9s}  {r['optimizer_class']:10s} {r['step_s']:7.4f} "
              f"{r['tokens_per_s']:12,.0f}  {r['model_tflops_per_s']:13.1f}  {r['peak_tflops'] or 0:5.0f}  {mfu}  {mem}")


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> list[Result]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="tiny,base", help="comma list of: " + ",".join(SHAPES))
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model (tiny; every shape with --mfu)")
    ap.add_argument("--base-steps", type=int, default=3, help="timed steps per model (base)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--deepspeed", action="store_true",
                    help="also time the DeepSpeed engine step vs a plain torch loop (tiny shape)")
    mfu = ap.add_argument_group("section 3: MFU (zhbert alone, DeepSpeed engine; default on --device cuda)")
    mfu.add_argument("--mfu", action="store_true", help="measure tokens/s and MFU instead of comparing with HF")
    mfu.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                     help="cuda: DeepSpeed's CUDA accelerator (implies --mfu)")
    mfu.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default=None,
                     help="deepspeed.precision (default: bf16 on cuda, fp32 on cpu)")
    mfu.add_argument("--optimizer", choices=["fused", "torch"], default=None,
                     help="AdamW implementation: DeepSpeed FusedAdam (default on cuda, as in training) or torch's "
                     "(default on cpu)")
    mfu.add_argument("--batch", default=None,
                     help="sequences per step, one value or one per shape (default: base 256, tiny 1024 on cuda)")
    mfu.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    mfu.add_argument("--peak-tflops", type=float, default=0.0,
                     help="device peak for MFU (0: zhbert's table of known GPUs)")
    mfu.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout (BERT: 0.1)")
    mfu.add_argument("--json", metavar="FILE", help="write the MFU results as JSON")
    args = ap.parse_args(argv)
    if args.device == "cuda" or args.mfu:
        return main_mfu(args)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    results = []
    for shape in args.shapes.split(","):
        steps = args.base_steps if shape == "base" else args.steps
        results.append(bench_model_vs_hf(shape, steps))
    print("\nmedians; speedup = zhbert tok/s / hf tok/s (wall), cpu = hf / zhbert CPU s/step")
    print("shape  batch  zhbert tok/s  hf tok/s  zhbert s/step  hf s/step  speedup  cpu speedup")
    for r in results:
        print(f"{r.shape:6s} {r.batch:5d} {r.zhbert_tok_s:12.0f} {r.hf_tok_s:9.0f} "
              f"{r.zhbert_step_s:13.3f} {r.hf_step_s:10.3f}  {r.ratio:6.2f}x  {r.cpu_ratio:9.2f}x")
    if args.deepspeed:
        from ds_overhead import bench_deepspeed_vs_torch

        d = bench_deepspeed_vs_torch("tiny", args.steps)
        print(f"\nDeepSpeed engine vs plain torch loop (tiny, ZeRO {d.zero_stage}): "
              f"{d.ds_step_s:.3f} vs {d.torch_step_s:.3f} s/step, overhead {100 * d.overhead:+.1f}% (target <= 10%)")
    return results


def main_mfu(args) -> list[dict]:
    import json
    import os
    from pathlib import Path

    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("pretrain_throughput: --device cuda but torch sees no CUDA device")
        os.environ["DS_ACCELERATOR"] = "cuda"
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        torch.set_num_threads(args.threads)
    precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
    optimizer = args.optimizer or ("fused" if args.device == "cuda" else "torch")
    shapes = args.shapes.split(",")
    default_batch = {"base": 256, "tiny": 1024} if args.device == "cuda" else {s: SHAPES[s][4] for s in SHAPES}
    sizes = [int(x) for x in args.batch.split(",")] if args.batch else [default_batch[s] for s in shapes]
    if len(sizes) == 1:
        sizes = sizes * len(shapes)
    if len(sizes) != len(shapes):
        raise SystemExit(f"pretrain_throughput: --batch needs one value or one per shape ({len(shapes)})")
    print(f"torch {torch.__version__}, device {args.device}, precision {precision}, optimizer {optimizer}")
    from zhbert.train.launch import setup_env, start_distributed

    setup_env()
    dist_ = start_distributed()
    try:
        results = [bench_mfu(dist_, shape, args.steps, b, precision=precision, optimizer=optimizer,
                             warmup=args.warmup, peak=args.peak_tflops, dropout=args.dropout)
                   for shape, b in zip(shapes, sizes)]
    finally:
        dist_.close()
    print_mfu(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "results": results}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
