"""bf16 autocast vs fp32 for the tiny model's training step on this CPU (issue 14).

    OMP_NUM_THREADS=2 python benchmarks/cpu_bf16.py [--steps 5]

Times forward + backward + AdamW step of zhbert's BertForPreTraining (tiny shape, vocab 8,000,
batch 64 x 128, 15% of positions predicted) in fp32 and under ``torch.autocast("cpu",
torch.bfloat16)``, alternating, and prints tokens/s and the ratio; also one bf16 GEMM's GFLOP/s.
bf16 only pays on CPUs with native bf16 dot products (AVX-512 BF16 / AMX); ``lscpu`` flags tell.
"""

from __future__ import annotations

import argparse
import time

import torch

from zhbert.model.modeling import BertConfig, BertForPreTraining


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=8000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=1024, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForPreTraining(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b, t = 64, 128
    ids = torch.randint(5, 8000, (b, t))
    labels = torch.full((b, t), -100)
    mask = torch.rand(b, t) < 0.15
    labels[mask] = ids[mask]

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    tok_s = {}
    for bf16 in (False, True):
        step(bf16)
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step(bf16)
        tok_s[bf16] = b * t * a.steps / (time.perf_counter() - t0)
    x, y = torch.randn(8192, 256), torch.randn(256, 1024)
    gf = {}
    for dt in (torch.float32, torch.bfloat16):
        xx, yy = x.to(dt), y.to(dt)
        xx @ yy
        t0 = time.perf_counter()
        for _ in range(5):
            xx @ yy
        gf[dt] = 2 * 8192 * 256 * 1024 * 5 / (time.perf_counter() - t0) / 1e9
    print(f"train step: fp32 {tok_s[False]:.0f} tok/s, bf16 autocast {tok_s[True]:.0f} tok/s, "
          f"ratio bf16/fp32 {tok_s[True] / tok_s[False]:.3f}")
    print(f"GEMM 8192x256x1024: fp32 {gf[torch.float32]:.1f} GFLOP/s, bf16 {gf[torch.bfloat16]:.1f} GFLOP/s")
    print("torch CPU capability:", torch.backends.cpu.get_cpu_capability())


if __name__ == "__main__":
    main()
