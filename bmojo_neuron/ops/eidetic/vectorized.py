"""The eidetic memory in vectorised torch: the selection, and the row gather with its scatter-add backward.

This is the math under the ``bmojo::`` custom ops of :mod:`.custom_op` (the dispatcher's ``torch`` mode).

Selection. Both policies keep "the ``slots`` highest priorities among all candidates seen so far" (priority
= score for ``topk``; chunk index + sigmoid(score) for ``fifo``, so newer chunks win). Merging two memories
by a top-k of their union is associative, so the memory after every chunk is an inclusive prefix scan of
that merge: ``ceil(log2(n_chunks))`` steps of one batched top-k each (Hillis-Steele), instead of one step
per chunk. Shapes are static, nothing leaves the device (no ``.item()``, no boolean indexing).
Exact ties between finite priorities may be broken differently from the reference (any tied token is a
correct choice); the selected priorities are identical.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..constants import NEG_INF
from .priority import POLICIES, priority
from .reference import num_chunks


def _candidates(scores: torch.Tensor, chunk_size: int, topk: int, policy: str):
    """Per-chunk top-k. scores: (batch, seq) -> priority, token index: (batch, n_chunks, topk)."""
    batch, seq = scores.shape
    n_chunks = num_chunks(seq, chunk_size)
    padded = F.pad(scores.detach().float(), (0, n_chunks * chunk_size - seq), value=NEG_INF)
    cand_score, cand_local = padded.view(batch, n_chunks, chunk_size).topk(topk, dim=-1)
    chunk = torch.arange(n_chunks, device=scores.device)[:, None]
    return priority(cand_score, chunk, policy), cand_local + chunk * chunk_size


def _fit(prio: torch.Tensor, idx: torch.Tensor, slots: int):
    """Bring the last dim of (priority, index) to ``slots``: keep the best, or pad with empty entries."""
    width = prio.shape[-1]
    if width > slots:
        prio, keep = prio.topk(slots, dim=-1)
        return prio, idx.gather(-1, keep)
    if width < slots:
        return F.pad(prio, (0, slots - width), value=NEG_INF), F.pad(idx, (0, slots - width))
    return prio, idx


def _shift_chunks(t: torch.Tensor, shift: int, fill: float) -> torch.Tensor:
    """t: (batch, n_chunks, slots) -> the same with chunk ``c`` holding ``t[:, c - shift]`` (``fill`` before 0)."""
    n_chunks = t.shape[1]
    if shift >= n_chunks:
        return torch.full_like(t, fill)
    return F.pad(t[:, : n_chunks - shift], (0, 0, shift, 0), value=fill)


def eidetic_select_vectorized(
    scores: torch.Tensor,
    chunk_size: int,
    topk: int,
    slots: int,
    policy: str = "topk",
    lag: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`.reference.eidetic_select_reference`.

    Args:
        scores: (batch, seq); ``-inf`` marks tokens that may never be stored.

    Returns:
        idx: (batch, n_chunks, slots) int64 (0 for empty slots); valid: (batch, n_chunks, slots) bool.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown eidetic policy {policy!r}; expected one of {POLICIES}")
    if lag < 0:
        raise ValueError(f"lag must be >= 0, got {lag}")
    prio, idx = _fit(*_candidates(scores, chunk_size, topk, policy), slots)

    # Inclusive scan: after the step with offset d, chunk c holds the best of chunks (c - 2d, c].
    offset = 1
    while offset < prio.shape[1]:
        older_prio = _shift_chunks(prio, offset, NEG_INF)
        older_idx = _shift_chunks(idx, offset, 0)
        prio, keep = torch.cat([older_prio, prio], dim=-1).topk(slots, dim=-1)
        idx = torch.cat([older_idx, idx], dim=-1).gather(-1, keep)
        offset *= 2

    # Query chunk q sees the memory as it was after chunk q - lag.
    prio = _shift_chunks(prio, lag, NEG_INF)
    idx = _shift_chunks(idx, lag, 0)
    valid = torch.isfinite(prio)
    return torch.where(valid, idx, torch.zeros_like(idx)), valid


def gather_rows_vectorized(src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Same contract as :func:`.reference.gather_rows_reference`: ``out[b, i] = src[b, idx[b, i]]``, one
    ``torch.gather``. src: (batch, seq, feat); idx: (batch, n) int64 -> (batch, n, feat)."""
    return src.gather(1, idx[..., None].expand(-1, -1, src.shape[-1]))


def gather_rows_backward_vectorized(grad: torch.Tensor, idx: torch.Tensor, seq: int) -> torch.Tensor:
    """Gradient of :func:`gather_rows_vectorized` w.r.t. ``src``: the output rows scatter-added back.

    grad: (batch, n, feat); idx: (batch, n) -> (batch, seq, feat). Rows gathered twice get both gradients.
    """
    out = grad.new_zeros(grad.shape[0], seq, grad.shape[-1])
    return out.scatter_add_(1, idx[..., None].expand_as(grad), grad)
