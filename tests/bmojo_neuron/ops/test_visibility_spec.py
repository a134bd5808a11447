"""What a query of ``bmojo_attention`` sees, stated from docs/positions.md and checked with float64 gradients.

For query ``i`` with window ``w`` and chunk ``C``: ``d out_i / d k_j != 0`` iff ``j`` is in the raw window
``[i - w + 1, i]``; ``d out_i / d fade_k_j != 0`` iff ``j`` is in the fading window ``[i - 2w + 1, i - w]``;
``d out_i / d mem_k[c]`` is non-zero only for the query's own chunk ``c = i // C``.
"""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron.ops import bmojo_attention, use_kernels

W, C, SEQ, SLOTS = 4, 4, 19, 3


def inputs(gen):
    shape = (1, SEQ, 2, 8)  # batch, seq, heads (= kv heads), dim
    q, k, v, fk, fv = (torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(5))
    n_chunks = -(-SEQ // C)
    mk, mv = (
        torch.randn(1, n_chunks, SLOTS, 2, 8, generator=gen, dtype=torch.float64, requires_grad=True) for _ in "kv"
    )
    bias = torch.zeros(1, n_chunks, SLOTS, dtype=torch.float64)
    return q, k, v, fk, fv, mk, mv, bias


@pytest.mark.parametrize("kernels", ["reference", "torch"])
@pytest.mark.parametrize("i", [0, 3, 5, 9, 18])
def test_gradients_follow_the_windows(kernels, i):
    q, k, v, fk, fv, mk, mv, bias = inputs(torch.Generator().manual_seed(i))
    with use_kernels(kernels):
        out = bmojo_attention(q, k, v, W, fk, fv, mk, mv, bias, None, C, None)
    gk, gfk, gmk = torch.autograd.grad(out[0, i].sum(), (k, fk, mk))
    seen_raw = gk[0].abs().sum((-1, -2)) > 0
    seen_fading = gfk[0].abs().sum((-1, -2)) > 0
    seen_chunks = gmk[0].abs().sum((-1, -2, -3)) > 0
    j = torch.arange(SEQ)
    assert torch.equal(seen_raw, (j <= i) & (j >= i - W + 1))
    assert torch.equal(seen_fading, (j <= i - W) & (j >= i - 2 * W + 1))
    assert torch.equal(seen_chunks, torch.arange(seen_chunks.shape[0]) == i // C)
