"""Shared tolerances and comparisons for the fast-op equivalence tests."""

from __future__ import annotations

import torch

# fp32: the fast paths reorder sums (chunked matmuls instead of a sequential loop), nothing more.
FP32_RTOL = 1e-4
# bf16 inputs: both paths compute in fp32 from the same bf16 inputs, then round their outputs (and the input
# gradients) to bf16, whose spacing is 2^-8 ~ 4e-3 relative; two roundings apart -> 2e-2.
BF16_RTOL = 2e-2


SCALE_FLOOR = 0.01


def rtol_for(dtype: torch.dtype) -> float:
    return BF16_RTOL if dtype == torch.bfloat16 else FP32_RTOL


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str = "") -> None:
    """Elementwise ``|a - e| <= rtol * |e| + rtol * max(max|e|, 0.01)``: relative, with an absolute floor at the
    tensor's scale (entries near zero are sums of terms of that scale, so their error is too); the 0.01
    covers tensors that are zero up to rounding (e.g. the query gradient when a query sees one key)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    expected = expected.double()
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(
        actual.double(), expected, rtol=rtol, atol=rtol * max(scale, SCALE_FLOOR), msg=lambda m: f"{what}: {m}"
    )


def grads(outputs, inputs, weights):
    """Gradients of ``sum_i (outputs_i * weights_i).sum()`` w.r.t. ``inputs`` (None for unused ones)."""
    loss = sum((o.float() * w).sum() for o, w in zip(outputs, weights))
    return torch.autograd.grad(loss, inputs, allow_unused=True)
