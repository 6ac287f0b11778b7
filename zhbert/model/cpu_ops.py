"""Dropout and training-mode attention that are cheap on CPU.

On CPU, ``torch.bernoulli_`` (behind ``F.dropout`` and the dropout inside
``F.scaled_dot_product_attention``) draws one Mersenne-Twister number per element: 12% of
a tiny-BERT training step and 6% of a base one. ``dropout`` draws 64 random bits per four
elements instead (``torch.randint`` over int64, viewed as four uniform 16-bit lanes) and
drops an element when its lane falls below ``round(p * 65536)``: P(drop) is ``p`` rounded
to a multiple of 1/65536 (within 8e-6), and the kept values are scaled by the inverse of the
exact keep probability, so the expectation is unchanged. ~4x faster masks; same
``torch`` generator, so ``torch.manual_seed``, checkpointed RNG state and activation
checkpointing replay them exactly.

With dropout on, SDPA on CPU runs its math path (matmul, softmax, bernoulli, matmul) anyway;
``attention`` is that path with the fast mask. Elsewhere -- CUDA (fused kernels), eval, p = 0
-- both functions hand over to PyTorch's own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_LANES = 65536  # values of one 16-bit lane


def keep_mask(shape: tuple[int, ...], drop: int, device: torch.device) -> Tensor:
    """Bool mask of `shape`, each element False with probability ``drop / 65536``."""
    n = math.prod(shape)
    words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    return words.view(torch.int16)[:n].view(shape) >= drop - _LANES // 2


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout(x, p, training)``; on CPU with the fast mask (module docstring)."""
    if not training or p == 0.0:
        return x
    drop = round(p * _LANES)
    if x.device.type != "cpu" or drop >= _LANES:
        return F.dropout(x, p, True)
    # where(), not x * mask: no float copy of the mask; autograd keeps the bool mask (1 byte
    # per element) for the backward pass, as F.dropout does.
    return torch.where(keep_mask(x.shape, drop, x.device), x, 0.0).mul_(_LANES / (_LANES - drop))


def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, p: float, training: bool) -> Tensor:
    """``F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p=p if training else 0)``
    for (B, A, T, d) inputs and a bool mask broadcastable to (B, A, T, T) (True = attend)
    that leaves every query row at least one key; on CPU in training with the fast mask."""
    drop = round(p * _LANES)
    if not training or p == 0.0 or drop >= _LANES or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p if training else 0.0)
    # The scales go on the (B, A, T, d) operands, not the (B, A, T, T) scores: scaling q also
    # makes it contiguous (the copy bmm would make anyway), and the dropout scale is applied
    # to the output.
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))  # (B, A, T, T)
    if attn_mask is not None:
        scores = scores.masked_fill_(attn_mask.logical_not(), float("-inf"))
    probs = torch.where(keep_mask(scores.shape, drop, q.device), scores.softmax(-1), 0.0)
    return torch.matmul(probs, v).mul_(_LANES / (_LANES - drop))
