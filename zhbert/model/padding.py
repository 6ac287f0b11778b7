"""Unpadding helpers: run token-wise layers on real tokens only (MosaicML BERT style).

A pretraining batch is a (B, T) grid in which roughly 10% of the cells are padding (short
sequences). Everything in BERT except attention is *token-wise* (embeddings, LayerNorm, the
Q/K/V and output projections, the feed-forward block, the MLM head), so those layers can run
on a flat (N, H) matrix of the N real tokens and never spend FLOPs on padding. Only attention
needs the grid: we scatter Q/K/V back to (B, T', ...) with zeros at the padding cells, run SDPA
with the padding mask, and gather the real rows again.

Notation used in the shape comments:

    B  batch size          T   padded length of the input
    T' trimmed length      (last column holding a real token, + 1; T' <= T)
    N  number of real tokens (attention_mask == 1) in the trimmed grid
    D  any trailing feature size

The representation is only used when every row starts with a real token (right padding, the
collator's layout), so the [CLS] hidden state of row b is a known row of the (N, H) matrix.
Otherwise :func:`unpad_mask` keeps every cell (plain padded computation with an SDPA mask),
which is always correct.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Unpadded:
    """How a (B, T') grid maps to the flat (N, ...) token matrix.

    indices: (N,) long, positions of the kept cells in the flattened (B*T') grid, ascending;
        ``None`` means every cell is kept (N = B*T') and pad/unpad are plain reshapes.
    batch_size, seqlen: B and T' (the grid after trimming all-padding trailing columns).
    attn_mask: (B, 1, 1, T') bool for SDPA (True = may attend), ``None`` when nothing is masked.
    first_token: (B,) long, row of each sequence's position 0 in the (N, ...) matrix.
    """

    indices: Tensor | None
    batch_size: int
    seqlen: int
    attn_mask: Tensor | None
    first_token: Tensor


def unpad_mask(attention_mask: Tensor | None, batch_size: int, seqlen: int,
               *, enabled: bool = True, device: torch.device | None = None) -> Unpadded:
    """Build the :class:`Unpadded` layout for a (B, T) ``attention_mask`` (1 = real token).

    With ``enabled=False`` every cell is kept (the padded reference path), but trailing
    all-padding columns are still not trimmed, so results can be compared cell by cell.
    """
    if attention_mask is None or bool(attention_mask.all()):
        first = torch.arange(batch_size, device=device) * seqlen
        return Unpadded(None, batch_size, seqlen, None, first)
    mask = attention_mask.bool()  # (B, T)
    if enabled:
        # Trim trailing columns that are padding in every row: attention then runs on (B, T').
        seqlen = int(mask.any(0).nonzero().max()) + 1 if bool(mask.any()) else 1
        mask = mask[:, :seqlen]
    attn_mask = mask[:, None, None, :]  # (B, 1, 1, T')
    flat = mask.reshape(-1)  # (B*T',)
    if not enabled or not bool(mask[:, 0].all()):
        first = torch.arange(batch_size, device=mask.device) * seqlen
        return Unpadded(None, batch_size, seqlen, attn_mask, first)
    indices = flat.nonzero().squeeze(1)  # (N,)
    # Row in the (N, ...) matrix of cell (b, 0): number of real tokens before it.
    rank = torch.cumsum(flat.long(), 0) - 1  # (B*T',)
    first = rank[torch.arange(batch_size, device=mask.device) * seqlen]
    return Unpadded(indices, batch_size, seqlen, attn_mask, first)


def unpad(x: Tensor, layout: Unpadded) -> Tensor:
    """(B, T', *D) -> (N, *D): keep the real-token rows (differentiable, index_select)."""
    flat = x.reshape(layout.batch_size * layout.seqlen, *x.shape[2:])  # (B*T', *D)
    return flat if layout.indices is None else flat.index_select(0, layout.indices)


def pad(x: Tensor, layout: Unpadded, seqlen: int | None = None) -> Tensor:
    """(N, *D) -> (B, T, *D) with zeros at padding cells (differentiable, index_copy).

    ``seqlen`` (default T') lets the caller restore the untrimmed input length T >= T'.
    """
    b, t = layout.batch_size, layout.seqlen
    if layout.indices is None:
        grid = x.reshape(b, t, *x.shape[1:])
    else:
        grid = x.new_zeros(b * t, *x.shape[1:]).index_copy(0, layout.indices, x)
        grid = grid.reshape(b, t, *x.shape[1:])  # (B, T', *D)
    if seqlen is not None and seqlen > t:
        grid = torch.cat([grid, grid.new_zeros(b, seqlen - t, *x.shape[1:])], dim=1)
    return grid
