"""Pretraining throughput benchmarks (training-step tokens/s on this machine).

Section 1 -- model vs transformers: zhbert ``BertForPreTraining`` against
``transformers.BertForPreTraining`` with identical shapes, initial weights, batches and
optimizer (AdamW), timing forward + backward + optimizer step. Steps of the two models are
interleaved so that load from other processes on a shared machine hits both alike; medians
are reported.

Section 2 -- DeepSpeed engine step vs plain torch loop: placeholder for the trainer helper
(see ``bench_deepspeed_vs_torch``).

Usage:
    python benchmarks/pretrain_throughput.py --shapes tiny,base --steps 10 --base-steps 3
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


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> list[Result]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="tiny,base", help="comma list of: " + ",".join(SHAPES))
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model (tiny)")
    ap.add_argument("--base-steps", type=int, default=3, help="timed steps per model (base)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--deepspeed", action="store_true",
                    help="also time the DeepSpeed engine step vs a plain torch loop (tiny shape)")
    args = ap.parse_args(argv)
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


if __name__ == "__main__":
    main()
