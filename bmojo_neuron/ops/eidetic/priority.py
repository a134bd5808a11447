"""The retention priority of an eidetic memory entry: one formula for the selection ops and the cached paths."""

from __future__ import annotations

import torch

POLICIES = ("topk", "fifo")


def fifo_priority(score: torch.Tensor, chunk: int | torch.Tensor) -> torch.Tensor:
    """Priority of a candidate under the ``fifo`` policy: newer chunks first, the higher score first inside a chunk.

    ``chunk + sigmoid(score)`` stays inside ``(chunk, chunk + 1)``, so a later chunk always outranks an earlier
    one whatever the scores. An infinite score keeps its value: ``-inf`` (padding, empty slot) must stay below
    every real priority.

    Args:
        score: selection scores, any shape, ``-inf`` for entries that may never be stored.
        chunk: index of the chunk each score belongs to: an int, or a tensor broadcastable against ``score``.

    Returns:
        priorities, ``score``'s shape (broadcast with ``chunk``) and dtype.
    """
    return torch.where(torch.isinf(score), score, chunk + torch.sigmoid(score))


def priority(score: torch.Tensor, chunk: int | torch.Tensor, policy: str) -> torch.Tensor:
    """Priority under ``policy``: the score itself for ``topk``, :func:`fifo_priority` for ``fifo``."""
    if policy == "topk":
        return score
    if policy == "fifo":
        return fifo_priority(score, chunk)
    raise ValueError(f"unknown eidetic policy {policy!r}; expected one of {POLICIES}")
