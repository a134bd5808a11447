"""``bmojo::eidetic_select`` and ``bmojo::gather_rows`` as torch custom ops (static shapes for tracing; the NKI
top-k / indirect-DMA kernels plug in behind the same ops on Neuron), over the math of :mod:`.vectorized`.

:func:`eidetic_select_torch` and :func:`gather_rows_torch` are what the dispatcher's ``torch`` mode calls."""

from __future__ import annotations

import torch

from .reference import num_chunks
from .vectorized import eidetic_select_vectorized, gather_rows_backward_vectorized, gather_rows_vectorized


@torch.library.custom_op("bmojo::eidetic_select", mutates_args=())
def eidetic_select_op(
    scores: torch.Tensor, chunk_size: int, topk: int, slots: int, policy: str, lag: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """scores: (batch, seq) -> idx (batch, n_chunks, slots) int64, valid (same) bool. Not differentiable."""
    idx, valid = eidetic_select_vectorized(scores, chunk_size, topk, slots, policy, lag)
    return idx.contiguous(), valid.contiguous()


@eidetic_select_op.register_fake
def _(scores, chunk_size, topk, slots, policy, lag):
    shape = (scores.shape[0], num_chunks(scores.shape[1], chunk_size), slots)
    return scores.new_empty(shape, dtype=torch.long), scores.new_empty(shape, dtype=torch.bool)


@torch.library.custom_op("bmojo::gather_rows", mutates_args=())
def gather_rows_op(src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """src: (batch, seq, feat), idx: (batch, n) int64 -> (batch, n, feat)."""
    return gather_rows_vectorized(src, idx)


@gather_rows_op.register_fake
def _(src, idx):
    return src.new_empty(src.shape[0], idx.shape[1], src.shape[2])


@torch.library.custom_op("bmojo::gather_rows_backward", mutates_args=())
def gather_rows_backward_op(grad: torch.Tensor, idx: torch.Tensor, seq: int) -> torch.Tensor:
    """grad: (batch, n, feat) -> (batch, seq, feat), scatter-added at ``idx``."""
    return gather_rows_backward_vectorized(grad, idx, seq)


@gather_rows_backward_op.register_fake
def _(grad, idx, seq):
    return grad.new_empty(grad.shape[0], seq, grad.shape[2])


def _setup_context(ctx, inputs, output):
    src, idx = inputs
    ctx.seq = src.shape[1]
    ctx.save_for_backward(idx)


def _backward(ctx, grad):
    (idx,) = ctx.saved_tensors
    return gather_rows_backward_op(grad.contiguous(), idx, ctx.seq), None


gather_rows_op.register_autograd(_backward, setup_context=_setup_context)


def eidetic_select_torch(
    scores: torch.Tensor, chunk_size: int, topk: int, slots: int, policy: str = "topk", lag: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``torch`` implementation of ``eidetic_select`` (see :func:`.reference.eidetic_select_reference`)."""
    return eidetic_select_op(scores.detach(), int(chunk_size), int(topk), int(slots), str(policy), int(lag))


def gather_rows_torch(src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """The ``torch`` implementation of ``gather_rows`` (see :func:`.reference.gather_rows_reference`)."""
    return gather_rows_op(src, idx)
