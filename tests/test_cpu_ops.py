"""zhbert.model.cpu_ops: the fast CPU dropout mask and the training-mode attention."""

import math

import pytest
import torch
import torch.nn.functional as F

from zhbert.model.cpu_ops import attention, dropout, keep_mask

DROP_10 = 6554  # round(0.1 * 65536)


def test_keep_mask_rate_in_every_lane():
    # Every 16-bit lane of the 64-bit words must be uniform: a generator that leaves the top
    # bit at 0 (e.g. int64 random_()) would never drop in lane 3.
    torch.manual_seed(0)
    n = 4_000_000
    keep = keep_mask((n,), DROP_10, torch.device("cpu"))
    assert keep.dtype == torch.bool and keep.shape == (n,)
    p = DROP_10 / 65536
    for lane in range(4):
        rate = (~keep[lane::4]).float().mean().item()
        assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / (n / 4)), (lane, rate)
    # odd sizes are cut from the last word
    assert keep_mask((3, 5, 7), DROP_10, torch.device("cpu")).shape == (3, 5, 7)


def test_dropout_values_and_gradient():
    x = torch.randn(300, 70, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(1)
    y = dropout(x, 0.1, True)
    torch.manual_seed(1)
    keep = keep_mask(x.shape, DROP_10, x.device)  # the same draw
    scale = 65536 / (65536 - DROP_10)
    assert torch.equal(y, x.detach() * keep * scale)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, keep.double() * scale)
    # expectation preserved; identity when off
    big = torch.ones(1000, 1000)
    assert abs(dropout(big, 0.3, True).mean().item() - 1.0) < 5e-3
    assert dropout(x, 0.1, False) is x and dropout(x, 0.0, True) is x
    assert torch.equal(dropout(x, 1.0, True), torch.zeros_like(x))


def reference_attention(q, k, v, mask, keep=None, scale=1.0):
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, -1)
    if keep is not None:
        probs = probs * keep * scale
    return torch.einsum("bhqk,bhkd->bhqd", probs, v)


@pytest.fixture
def qkv_mask():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(3, 4, 9, 8, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(3, 1, 1, 9, dtype=torch.bool)
    mask[1, ..., 6:] = False  # padded keys
    mask[2, ..., 2:] = False
    return q, k, v, mask


def test_attention_math_equals_sdpa(qkv_mask):
    q, k, v, mask = qkv_mask
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    ref_leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = attention(*leaves, mask, 1e-9, True)  # the CPU training path, nothing dropped
    ref = F.scaled_dot_product_attention(*ref_leaves, attn_mask=mask)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    for a, b in zip(leaves, ref_leaves):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_attention_dropout_against_reference(qkv_mask):
    q, k, v, mask = qkv_mask
    torch.manual_seed(3)
    out = attention(q, k, v, mask, 0.1, True)
    torch.manual_seed(3)
    keep = keep_mask((3, 4, 9, 9), DROP_10, q.device)
    want = reference_attention(q, k, v, mask, keep, 65536 / (65536 - DROP_10))
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    # eval mode: plain SDPA, no dropout
    torch.testing.assert_close(attention(q, k, v, mask, 0.1, False), reference_attention(q, k, v, mask),
                               rtol=1e-12, atol=1e-12)
