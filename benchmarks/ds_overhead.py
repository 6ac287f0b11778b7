"""DeepSpeed engine step vs a plain torch loop (same model, batches, AdamW, clipping).

Section 2 of the pretraining benchmarks (section 1, model vs transformers, is
benchmarks/pretrain_throughput.py, whose ``make_batch`` and ``SHAPES`` are reused). One
process, fp32, ZeRO stage 0 (or ``--zero-stage``): what the engine wrapper costs per step
(gradient bookkeeping, its optimizer/scheduler/clipping path) on this machine. Steps of the
two loops are interleaved so background load hits both alike; medians are reported.

    python benchmarks/ds_overhead.py --shape tiny --steps 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


@dataclass
class DsResult:
    shape: str
    zero_stage: int
    torch_step_s: float
    ds_step_s: float

    @property
    def overhead(self) -> float:
        return self.ds_step_s / self.torch_step_s - 1.0


def bench_deepspeed_vs_torch(shape: str, steps: int, zero_stage: int = 0, warmup: int = 2, seed: int = 0) -> DsResult:
    from zhbert.train.launch import setup_env

    setup_env()
    import deepspeed
    import numpy as np
    import torch

    from pretrain_throughput import SHAPES, VOCAB, make_batch
    from zhbert.model.modeling import BertConfig, BertForPreTraining

    layers, hidden, heads, inter, batch_size = SHAPES[shape]
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=inter, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    plain = BertForPreTraining(cfg).train()
    wrapped = BertForPreTraining(cfg).train()
    wrapped.load_state_dict(plain.state_dict())
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-4, weight_decay=0.01)
    deepspeed.init_distributed(dist_backend="gloo" if not torch.cuda.is_available() else "nccl")
    ds_cfg = {"train_micro_batch_size_per_gpu": batch_size, "gradient_accumulation_steps": 1,
              "train_batch_size": batch_size, "gradient_clipping": 1.0, "steps_per_print": 10**9,
              "zero_optimization": {"stage": zero_stage},
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "weight_decay": 0.01, "torch_adam": True}}}
    engine, *_ = deepspeed.initialize(model=wrapped, model_parameters=wrapped.parameters(), config=ds_cfg)
    rng = np.random.default_rng(seed)
    batches = [make_batch(rng, batch_size) for _ in range(warmup + steps)]
    times: dict[str, list[float]] = {"torch": [], "deepspeed": []}

    def torch_step(b):
        out = plain(**b)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def ds_step(b):
        out = engine(**b)
        engine.backward(out.loss)
        engine.step()

    for i, b in enumerate(batches):
        order = (("torch", torch_step), ("deepspeed", ds_step))
        for name, fn in order if i % 2 == 0 else reversed(order):
            t0 = time.perf_counter()
            fn(b)
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    return DsResult(shape, zero_stage, statistics.median(times["torch"]), statistics.median(times["deepspeed"]))


def main(argv=None) -> DsResult:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="tiny")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--zero-stage", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    r = bench_deepspeed_vs_torch(args.shape, args.steps, args.zero_stage)
    print(f"shape {r.shape}, ZeRO {r.zero_stage}: plain torch {r.torch_step_s:.3f} s/step, "
          f"DeepSpeed engine {r.ds_step_s:.3f} s/step, overhead {100 * r.overhead:+.1f}%")
    return r


if __name__ == "__main__":
    main()
