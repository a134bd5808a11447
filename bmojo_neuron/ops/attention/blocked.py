"""Blocked B'MOJO attention: each query block (one chunk of ``C`` queries) attends only to the keys it can see.

For the block of queries ``[nC, nC + C)`` and raw window ``w``:

- raw band: keys ``[nC - w + 1, nC + C)``, ``C + w - 1`` of them;
- fading band: the fading keys ``w`` positions earlier, ``[nC - 2w + 1, nC + C - w)``; with the same local
  indexing both bands use one (C, C + w - 1) visibility pattern: query ``r`` sees local keys ``[r, r + w)``;
- eidetic slots: the ``slots`` keys of that chunk, with their logit bias.

The bands are cut from whole blocks of the padded keys, concatenated once per block: memory is
``O(seq * (slots + 2 (C + w)))``, never (seq x seq). One softmax runs over [slots | fading | raw] per block.
Without a window (``attention`` layers), it is ``scaled_dot_product_attention`` with ``is_causal`` (O(seq^2)
by nature).

Queries that see no key at all (padded queries whose window holds only padding) get an unspecified
finite output, as in the reference: callers ignore padded positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Logit of an invisible key. Finite (not -inf) so that a row with nothing visible stays finite in the
# forward and the backward; exp(MASKED - max) underflows to exactly 0 next to any visible logit.
_MASKED = torch.finfo(torch.float32).min


def _full_causal(q, k, v, key_padding_mask, scale, compute):
    """``window=None`` without slots or fading keys: causal SDPA. q: (batch, seq, heads, dim)."""
    qt, kt, vt = (t.to(compute).transpose(1, 2) for t in (q, k, v))
    gqa = q.shape[2] != k.shape[2]
    if key_padding_mask is None:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=scale, enable_gqa=gqa)
    else:
        seq = q.shape[1]
        causal = torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()
        visible = causal & key_padding_mask.bool()[:, None, None, :]
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=visible, scale=scale, enable_gqa=gqa)
    return out.transpose(1, 2).to(q.dtype)


def _bands(t: torch.Tensor, shift: int, window: int, block: int, n_blocks: int) -> torch.Tensor:
    """Key band of every query block.

    t: (batch, seq, ...) keys (or a key mask); ``shift`` = 0 for the raw band, ``window`` for the fading one.
    Returns (batch, n_blocks, span, ...) with ``span = block + window - 1``; entry ``m`` of block ``n`` is
    position ``n * block - shift - window + 1 + m`` (zero/False outside the sequence).

    Built as a concatenation of whole blocks (this block and the ``ceil((span - block) / block)`` before it),
    cut to ``span``: views and one copy, whose backward is a few slices and adds (``unfold``'s backward is a
    slow scatter on CPU).
    """
    seq = t.shape[1]
    span = block + window - 1
    before = -(-(span - block) // block)  # whole blocks needed before the query block
    # Padded so that block n + before ends where the band of query block n ends.
    left = before * block + shift
    total = (n_blocks + before) * block
    padded = F.pad(t, [0, 0] * (t.dim() - 2) + [left, max(0, total - left - seq)])[:, :total]
    blocks = padded.reshape(t.shape[0], n_blocks + before, block, *t.shape[2:])
    band = torch.cat([blocks[:, j : j + n_blocks] for j in range(before + 1)], dim=2)
    return band[:, :, (before + 1) * block - span :]


def bmojo_attention_blocked(
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
    """Same contract as :func:`.reference.bmojo_attention_reference`.

    Args:
        q: (batch, seq, heads, dim); k, v: (batch, seq, kv_heads, dim) (``heads`` a multiple of ``kv_heads``).
        window: raw window ``w`` or None (full causal); fade_k, fade_v: (batch, seq, kv_heads, dim) or None.
        mem_k, mem_v: (batch, n_chunks, slots, kv_heads, dim); mem_bias: (batch, n_chunks, slots), -inf = empty.
        key_padding_mask: (batch, seq) bool, True for real tokens. chunk_size: query block length.

    Returns:
        (batch, seq, heads, dim) in ``q.dtype`` (computed in float32 at least).
    """
    batch, seq, heads, dim = q.shape
    kv_heads = k.shape[2]
    groups = heads // kv_heads
    scale = dim**-0.5 if scale is None else scale
    compute = torch.promote_types(q.dtype, torch.float32)
    if fade_k is not None and window is None:
        raise ValueError("fading keys need a window")
    if window is None and mem_k is None:
        return _full_causal(q, k, v, key_padding_mask, scale, compute)
    if seq == 0:
        return q.new_zeros(q.shape)

    # A window that covers the whole sequence is full causal attention, and its fading band is empty.
    w = seq if window is None else min(window, seq)
    use_fade = fade_k is not None and window < seq
    block = min(chunk_size, seq)
    n_blocks = -(-seq // block)
    padded_seq = n_blocks * block

    # Keys and values of every block: [slots | fading band | raw band], (batch, blocks, kv_heads, keys, dim).
    def band(t, shift):
        return _bands(t.to(compute), shift, w, block, n_blocks).transpose(2, 3)

    keys, values = [band(k, 0)], [band(v, 0)]
    if use_fade:
        keys.insert(0, band(fade_k, w))
        values.insert(0, band(fade_v, w))
    if mem_k is not None:
        keys.insert(0, mem_k[:, :n_blocks].to(compute).transpose(2, 3))
        values.insert(0, mem_v[:, :n_blocks].to(compute).transpose(2, 3))
    keys, values = torch.cat(keys, dim=3), torch.cat(values, dim=3)

    # Additive logit mask (batch, blocks, 1, 1, block, keys): 0 visible, _MASKED hidden, the bias for slots.
    real = torch.ones(batch, seq, dtype=torch.bool, device=q.device)
    if key_padding_mask is not None:
        real = key_padding_mask.bool()
    r = torch.arange(block, device=q.device)[:, None]
    m = torch.arange(block + w - 1, device=q.device)[None, :]
    in_band = (m >= r) & (m < r + w)  # (block, span)

    def band_mask(shift):
        visible = in_band & _bands(real, shift, w, block, n_blocks)[:, :, None, :]
        return torch.zeros(visible.shape, dtype=compute, device=q.device).masked_fill(~visible, _MASKED)

    masks = [band_mask(0)]
    if use_fade:
        masks.insert(0, band_mask(w))
    if mem_k is not None:
        bias = mem_bias[:, :n_blocks].to(compute)
        bias = torch.where(torch.isfinite(bias), bias, torch.full_like(bias, _MASKED))
        masks.insert(0, bias[:, :, None, :].expand(-1, -1, block, -1))
    mask = torch.cat(masks, dim=-1)[:, :, None, None]

    # Queries grouped by key/value head: (batch, blocks, kv_heads, groups * block, dim).
    qb = F.pad(q.to(compute) * scale, (0, 0, 0, 0, 0, padded_seq - seq))
    qb = qb.view(batch, n_blocks, block, kv_heads, groups, dim).permute(0, 1, 3, 4, 2, 5)
    qb = qb.reshape(batch, n_blocks, kv_heads, groups * block, dim)
    logits = (qb @ keys.transpose(-1, -2)).view(batch, n_blocks, kv_heads, groups, block, -1) + mask
    probs = torch.softmax(logits, dim=-1).view(batch, n_blocks, kv_heads, groups * block, -1)
    out = (probs @ values).view(batch, n_blocks, kv_heads, groups, block, dim)
    out = out.permute(0, 1, 4, 2, 3, 5).reshape(batch, padded_seq, heads, dim)[:, :seq]
    return out.to(q.dtype)
