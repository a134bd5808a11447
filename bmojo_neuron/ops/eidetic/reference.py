"""Reference eidetic memory: per-chunk top-k candidates, retention over chunks, and the row gather.

Readable loops over chunks; every selection is a top-k with a fixed k (static shapes, no boolean indexing).
"""

from __future__ import annotations

import math

import torch

from ..constants import NEG_INF
from .priority import POLICIES, priority


def num_chunks(seq: int, chunk_size: int) -> int:
    return max(1, math.ceil(seq / chunk_size))


def eidetic_select_reference(
    scores: torch.Tensor,
    chunk_size: int,
    topk: int,
    slots: int,
    policy: str = "topk",
    lag: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which past tokens the eidetic memory holds, for every query chunk.

    Args:
        scores: (batch, seq) selection scores; ``-inf`` marks tokens that may never be stored (padding).
        chunk_size: ``C``; the sequence is cut into ``n_chunks = ceil(seq / C)`` chunks.
        topk: candidates per chunk.
        slots: ``M``, the memory size.
        policy: ``"topk"`` keeps the ``M`` best scores of (memory + candidates); ``"fifo"`` keeps the
            newest chunks' valid candidates (ties inside a chunk broken by score).
        lag: a memory updated after chunk ``c`` is visible to query chunks ``>= c + lag``.

    Returns:
        idx: (batch, n_chunks, slots) int64 token positions of the memory visible to each query chunk
            (0 where the slot is empty); valid: (batch, n_chunks, slots) bool.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown eidetic policy {policy!r}; expected one of {POLICIES}")
    batch, seq = scores.shape
    n_chunks = num_chunks(seq, chunk_size)
    padded = torch.full((batch, n_chunks * chunk_size), NEG_INF, dtype=torch.float32, device=scores.device)
    padded[:, :seq] = scores.detach().float()
    positions = torch.arange(n_chunks * chunk_size, device=scores.device)

    mem_score = torch.full((batch, slots), NEG_INF, device=scores.device)
    mem_prio = torch.full((batch, slots), NEG_INF, device=scores.device)
    mem_idx = torch.zeros((batch, slots), dtype=torch.long, device=scores.device)
    after_chunk = []  # memory state after chunks 0..c, i.e. memory_{c+1}
    for c in range(n_chunks):
        chunk_scores = padded[:, c * chunk_size : (c + 1) * chunk_size]
        cand_score, cand_local = torch.topk(chunk_scores, topk, dim=-1)
        cand_idx = positions[c * chunk_size + cand_local]
        cand_prio = priority(cand_score, c, policy)  # fifo: newer chunks first, then the higher score
        pool_prio = torch.cat([mem_prio, cand_prio], dim=-1)
        pool_score = torch.cat([mem_score, cand_score], dim=-1)
        pool_idx = torch.cat([mem_idx, cand_idx], dim=-1)
        mem_prio, keep = torch.topk(pool_prio, slots, dim=-1)
        mem_score = pool_score.gather(-1, keep)
        mem_idx = pool_idx.gather(-1, keep)
        after_chunk.append((mem_idx, mem_prio))

    idx_out, valid_out = [], []
    for q in range(n_chunks):
        seen = q - lag + 1  # number of chunks whose update this query chunk sees
        if seen <= 0:
            idx_out.append(torch.zeros((batch, slots), dtype=torch.long, device=scores.device))
            valid_out.append(torch.zeros((batch, slots), dtype=torch.bool, device=scores.device))
        else:
            idx, prio = after_chunk[seen - 1]
            valid = torch.isfinite(prio)
            idx_out.append(torch.where(valid, idx, torch.zeros_like(idx)))
            valid_out.append(valid)
    return torch.stack(idx_out, dim=1), torch.stack(valid_out, dim=1)


def gather_rows_reference(src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather rows: ``out[b, i] = src[b, idx[b, i]]``.

    Args:
        src: (batch, seq, feat).
        idx: (batch, n) int64 in ``[0, seq)``.

    Returns:
        (batch, n, feat). The gradient w.r.t. ``src`` is a scatter-add of the output gradient rows.
    """
    rows = [torch.stack([src[b, int(i)] for i in idx[b]]) for b in range(src.shape[0])]
    return torch.stack(rows) if idx.shape[1] else src.new_zeros(src.shape[0], 0, src.shape[2])
