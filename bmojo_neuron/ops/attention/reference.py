"""Dense reference of the B'MOJO attention: one softmax over [eidetic slots | fading window | raw window].

Builds full (seq x seq) masks: O(T^2) memory, for tests and small inputs only.
"""

from __future__ import annotations

import torch

from ..constants import MASKED_LOGIT


def _repeat_kv(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(batch, seq, kv_heads, dim) -> (batch, seq, kv_heads * groups, dim), as grouped-query attention does."""
    return t if groups == 1 else t.repeat_interleave(groups, dim=-2)


def bmojo_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int | None = None,
    fade_k: torch.Tensor | None = None,
    fade_v: torch.Tensor | None = None,
    mem_k: torch.Tensor | None = None,
    mem_v: torch.Tensor | None = None,
    mem_bias: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    chunk_size: int = 64,
    scale: float | None = None,
) -> torch.Tensor:
    """Causal attention of query ``i`` over three key sets, in one softmax.

    - raw window: keys ``k_j`` for ``j`` in ``[i - window + 1, i]`` (all ``j <= i`` when ``window`` is None);
    - fading window: keys ``fade_k_j`` for ``j`` in ``[i - 2 window + 1, i - window]``;
    - eidetic slots: the ``slots`` keys visible to the query's chunk (``i // chunk_size``), with an additive
      logit bias (``-inf`` for an empty slot).

    Args:
        q: (batch, seq, heads, dim), rotary embedding already applied.
        k, v: (batch, seq, kv_heads, dim).
        window: raw window ``w``, or None for full causal attention.
        fade_k, fade_v: (batch, seq, kv_heads, dim) keys/values of the SSM outputs, or None.
        mem_k, mem_v: (batch, n_chunks, slots, kv_heads, dim) per query chunk, or None.
        mem_bias: (batch, n_chunks, slots) additive logit bias of each slot (``-inf`` = empty).
        key_padding_mask: (batch, seq) bool, True for real tokens; padded keys are never attended.
        chunk_size: query chunk length of ``mem_*``.
        scale: logit scale, default ``dim ** -0.5``.

    Returns:
        (batch, seq, heads, dim) in ``q.dtype``.
    """
    batch, seq, heads, dim = q.shape
    groups = heads // k.shape[2]
    scale = dim**-0.5 if scale is None else scale
    compute = torch.promote_types(q.dtype, torch.float32)
    qf = q.to(compute) * scale

    i = torch.arange(seq, device=q.device)[:, None]
    j = torch.arange(seq, device=q.device)[None, :]
    key_ok = torch.ones(batch, 1, seq, dtype=torch.bool, device=q.device)
    if key_padding_mask is not None:
        key_ok = key_padding_mask[:, None, :].bool()

    def dense_block(keys, values, visible):
        logits = torch.einsum("bihd,bjhd->bhij", qf, _repeat_kv(keys, groups).to(compute))
        mask = (visible[None] & key_ok)[:, None]  # (batch, 1, seq, seq)
        return logits.masked_fill(~mask, MASKED_LOGIT), _repeat_kv(values, groups).to(compute)

    raw_visible = j <= i
    if window is not None:
        raw_visible = raw_visible & (j > i - window)
    blocks = [dense_block(k, v, raw_visible)]
    if fade_k is not None:
        fade_visible = (j <= i - window) & (j > i - 2 * window)
        blocks.append(dense_block(fade_k, fade_v, fade_visible))

    logits = [b[0] for b in blocks]
    values = [b[1] for b in blocks]
    if mem_k is not None:
        chunk_of_query = torch.arange(seq, device=q.device) // chunk_size
        mk = _repeat_kv(mem_k[:, chunk_of_query], groups).to(compute)  # (batch, seq, slots, heads, dim)
        mv = _repeat_kv(mem_v[:, chunk_of_query], groups).to(compute)
        bias = mem_bias[:, chunk_of_query].to(compute)  # (batch, seq, slots)
        mem_logits = torch.einsum("bihd,bishd->bhis", qf, mk) + bias[:, None]
        mem_logits = torch.where(torch.isfinite(mem_logits), mem_logits, torch.full_like(mem_logits, MASKED_LOGIT))
        probs = torch.softmax(torch.cat([mem_logits, *logits], dim=-1), dim=-1)
        n_slots = mem_logits.shape[-1]
        out = torch.einsum("bhis,bishd->bihd", probs[..., :n_slots], mv)
        probs = probs[..., n_slots:]
    else:
        probs = torch.softmax(torch.cat(logits, dim=-1), dim=-1)
        out = torch.zeros_like(qf)
    for n, vals in enumerate(values):
        out = out + torch.einsum("bhij,bjhd->bihd", probs[..., n * seq : (n + 1) * seq], vals)
    return out.to(q.dtype)
