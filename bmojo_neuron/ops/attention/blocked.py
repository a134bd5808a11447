"""Blocked B'MOJO attention: each query block (one chunk of ``C`` queries) attends only to the keys it can see.

For the block of queries ``[nC, nC + C)`` and raw window ``w``:

- raw band: keys ``[nC - w + 1, nC + C)``, ``C + w - 1`` of them;
- fading band: the fading keys ``w`` positions earlier, ``[nC - 2w + 1, nC + C - w)``; with the same local
  indexing both bands use one (C, C + w - 1) visibility pattern: query ``r`` sees local keys ``[r, r + w)``;
- eidetic slots: the ``slots`` keys of that chunk, with their logit bias.

One softmax runs over [slots | fading band | raw band] per block. The bands are cut from whole blocks of the
padded keys, one group of query blocks at a time, never copied for the whole sequence.

Memory: this is a flash-attention style :class:`torch.autograd.Function`. The forward keeps only the inputs
(in a (batch, kv_heads, seq, dim) layout), not even the output; the backward
recomputes the probabilities. Both walk the query blocks in groups of about ``_GROUP_ELEMENTS`` logits, so
the transient memory is bounded whatever the sequence length and the saved memory is ``O(seq * dim)``: never
(seq x seq), and no (seq x keys-per-block) logits or probabilities kept for the backward. Grouped-query
attention reshapes the queries to (batch, kv_heads, groups * C, dim): no key/value copies per query head.

Without a window (``attention`` layers), it is ``scaled_dot_product_attention`` with ``is_causal`` (O(seq^2)
by nature).

Queries that see no key at all (padded queries whose window holds only padding) get an unspecified
finite output, as in the reference: callers ignore padded positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..constants import MASKED_LOGIT
from ..fused import keeps_autocast

# Logits per group of query blocks (forward and backward): bounds the transient memory (a few tensors of
# this many floats) while keeping the matmuls large enough to run at full speed.
_GROUP_ELEMENTS = 1 << 20


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


class _Geometry:
    """Shapes of the blocked problem. Keys of a band are stored padded, (batch, kv_heads, total, dim) with
    ``total = (n_blocks + before) * block``: position ``p`` at index ``p + before * block + shift``, so that
    the band of query block ``n`` is ``[(n + before) * block - w + 1, (n + before + 1) * block)``."""

    def __init__(self, seq, w, block, heads, kv_heads, dim, slots, batch):
        self.seq, self.w, self.block, self.dim, self.slots = seq, w, block, dim, slots
        self.kv_heads, self.groups = kv_heads, heads // kv_heads
        self.n_blocks = -(-seq // block)
        self.padded_seq = self.n_blocks * block
        self.span = block + w - 1
        self.before = -(-(w - 1) // block)  # whole blocks a band reaches back
        self.total = (self.n_blocks + self.before) * block

    def left(self, shift):
        return self.before * self.block + shift

    def pad_seq(self, t, shift, dim):
        """Pad/cut dimension ``dim`` (the sequence) of ``t`` to the band layout of ``shift``."""
        left = self.left(shift)
        pad = [0, 0] * (t.dim() - dim - 1) + [left, max(0, self.total - left - self.seq)]
        return F.pad(t, pad).narrow(dim, 0, self.total)

    def band(self, t, n0, n1, dim):
        """Bands of query blocks [n0, n1), with the band axis appended last (the layout of ``unfold``).

        Built from whole blocks: the band of block ``n`` ends with block ``n + before`` and spans at most
        ``before + 1`` blocks, so it is a slice of ``before + 1`` consecutive blocks laid side by side. This
        copies one group's bands; ``unfold`` would not, but it has no XLA lowering (a CPU fallback per call).
        """
        n, c, k = n1 - n0, self.block, self.before
        seg = t.narrow(dim, n0 * c, (n + k) * c)
        blocks = seg.reshape(*seg.shape[:dim], n + k, c, *seg.shape[dim + 1 :])
        side_by_side = torch.cat([blocks.narrow(dim, j, n) for j in range(k + 1)], dim=dim + 1)
        return side_by_side.narrow(dim + 1, (k + 1) * c - self.span, self.span).movedim(dim + 1, -1)

    def fold(self, d_band):
        """Adjoint of :meth:`band` over all blocks: d_band (batch, kv_heads, n_blocks, span, dim) -> gradient
        of the padded keys (batch, kv_heads, total, dim); overlapping bands add up. Entry ``m`` of band ``n``
        is padded position ``n * block + off + m``, with ``off = before * block - w + 1``."""
        b, h, n, _, d = d_band.shape
        c, off = self.block, self.before * self.block - self.w + 1
        out = d_band.new_zeros(b, h, n + self.before, c, d)
        out[:, :, :n, off:] += d_band[:, :, :, : c - off]
        for j in range(1, self.before + 1):
            out[:, :, j : j + n] += d_band[:, :, :, j * c - off : (j + 1) * c - off]
        return out.view(b, h, self.total, d)


def _groups(geo: _Geometry, batch: int) -> list[tuple[int, int]]:
    keys = geo.slots + 2 * geo.span
    per_block = max(1, batch * geo.kv_heads * geo.groups * geo.block * keys)
    size = max(1, _GROUP_ELEMENTS // per_block)
    return [(n0, min(n0 + size, geo.n_blocks)) for n0 in range(0, geo.n_blocks, size)]


def _group_keys(geo, n0, n1, raw_k, raw_v, fade_k, fade_v, mem_k, mem_v, bias, real_raw, real_fade):
    """Keys, values (batch, kv_heads, blocks, keys, dim) and additive mask (batch, 1, blocks, 1, block, keys)
    of query blocks [n0, n1): [slots | fading band | raw band]."""
    r = torch.arange(geo.block, device=raw_k.device)[:, None]
    m = torch.arange(geo.span, device=raw_k.device)[None, :]
    in_band = (m >= r) & (m < r + geo.w)  # (block, span)
    keys, values, masks = [], [], []
    if mem_k is not None:
        keys.append(mem_k[:, :, n0:n1])
        values.append(mem_v[:, :, n0:n1])
        masks.append(bias[:, n0:n1, None, :].expand(-1, -1, geo.block, -1))
    bands = [(raw_k, raw_v, real_raw)] if fade_k is None else [(fade_k, fade_v, real_fade), (raw_k, raw_v, real_raw)]
    for bk, bv, real in bands:
        keys.append(geo.band(bk, n0, n1, 2).transpose(-1, -2))
        values.append(geo.band(bv, n0, n1, 2).transpose(-1, -2))
        visible = in_band & geo.band(real, n0, n1, 1)[:, :, None, :]  # (batch, blocks, block, span)
        # Finite, not -inf: a row with nothing visible stays finite in the forward and the backward, and
        # exp(MASKED_LOGIT - max) underflows to exactly 0 next to any visible logit.
        masks.append(
            torch.zeros(visible.shape, dtype=raw_k.dtype, device=raw_k.device).masked_fill(~visible, MASKED_LOGIT)
        )
    mask = torch.cat(masks, dim=-1)[:, None, :, None]
    return torch.cat(keys, dim=3), torch.cat(values, dim=3), mask


def _logits(geo, qg, keys, mask):
    """Masked logits (batch, kv_heads, blocks, groups * block, keys) of scaled queries qg."""
    b, h, n = qg.shape[:3]
    logits = (qg @ keys.transpose(-1, -2)).view(b, h, n, geo.groups, geo.block, -1) + mask
    return logits.view(b, h, n, geo.groups * geo.block, -1)


@keeps_autocast
class _BlockedAttention(torch.autograd.Function):
    """Tensors in: scaled queries (batch, kv_heads, n_blocks, groups * block, dim), padded band keys/values
    (batch, kv_heads, total, dim), slot keys/values (batch, kv_heads, n_blocks, slots, dim), slot bias
    (batch, n_blocks, slots) and the band key masks (batch, total) bool. Out: like the queries."""

    @staticmethod
    def forward(ctx, geo, qg, raw_k, raw_v, fade_k, fade_v, mem_k, mem_v, bias, real_raw, real_fade):
        outs = []
        for n0, n1 in _groups(geo, qg.shape[0]):
            keys, values, mask = _group_keys(
                geo, n0, n1, raw_k, raw_v, fade_k, fade_v, mem_k, mem_v, bias, real_raw, real_fade
            )
            probs = torch.softmax(_logits(geo, qg[:, :, n0:n1], keys, mask), dim=-1)
            outs.append(probs @ values)
        out = torch.cat(outs, dim=2)
        ctx.geo = geo
        ctx.save_for_backward(qg, raw_k, raw_v, fade_k, fade_v, mem_k, mem_v, bias, real_raw, real_fade)
        return out

    @staticmethod
    def backward(ctx, d_out):
        geo = ctx.geo
        qg, raw_k, raw_v, fade_k, fade_v, mem_k, mem_v, bias, real_raw, real_fade = ctx.saved_tensors
        d_out = d_out.contiguous()
        n_mem = 0 if mem_k is None else geo.slots
        split = [n_mem, *([geo.span] * (1 if fade_k is None else 2))]
        d_q, d_mem_k, d_mem_v, d_bias, d_bands = [], [], [], [], []
        for n0, n1 in _groups(geo, qg.shape[0]):
            keys, values, mask = _group_keys(
                geo, n0, n1, raw_k, raw_v, fade_k, fade_v, mem_k, mem_v, bias, real_raw, real_fade
            )
            q = qg[:, :, n0:n1]
            probs = torch.softmax(_logits(geo, q, keys, mask), dim=-1)  # recomputed (torch's exp is slower)
            d_o = d_out[:, :, n0:n1]
            d_values = probs.transpose(-1, -2) @ d_o
            d_probs = d_o @ values.transpose(-1, -2)
            # Softmax backward; a group holds whole query rows, so rowsum(P * dP) needs no saved output.
            d_logits = probs.mul_(d_probs.sub_((probs * d_probs).sum(dim=-1, keepdim=True)))
            d_q.append(d_logits @ keys)
            d_keys = d_logits.transpose(-1, -2) @ q
            dk_parts, dv_parts = d_keys.split(split, dim=3), d_values.split(split, dim=3)
            if mem_k is not None:
                d_mem_k.append(dk_parts[0])
                d_mem_v.append(dv_parts[0])
                d_bias.append(d_logits[..., :n_mem].sum(dim=(1, 3)))
            d_bands.append([(dk, dv) for dk, dv in zip(dk_parts[1:], dv_parts[1:])])
        d_qg = torch.cat(d_q, dim=2)
        grads = {}
        names = ["raw"] if fade_k is None else ["fade", "raw"]
        for i, name in enumerate(names):
            grads[name] = tuple(geo.fold(torch.cat([g[i][j] for g in d_bands], dim=2)) for j in range(2))
        d_fade = grads.get("fade", (None, None))
        if mem_k is not None:
            d_mem_k, d_mem_v, d_bias = torch.cat(d_mem_k, dim=2), torch.cat(d_mem_v, dim=2), torch.cat(d_bias, dim=1)
        else:
            d_mem_k = d_mem_v = d_bias = None
        return (None, d_qg, *grads["raw"], *d_fade, d_mem_k, d_mem_v, d_bias, None, None)


def bmojo_attention_torch(
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
    slots = 0 if mem_k is None else mem_k.shape[2]
    geo = _Geometry(seq, w, block, heads, kv_heads, dim, slots, batch)
    n_blocks, groups = geo.n_blocks, geo.groups

    def keys_layout(t, shift):  # (batch, seq, kv_heads, dim) -> padded (batch, kv_heads, total, dim)
        return geo.pad_seq(t.to(compute).transpose(1, 2), shift, 2)

    real = torch.ones(batch, seq, dtype=torch.bool, device=q.device)
    if key_padding_mask is not None:
        real = key_padding_mask.bool()
    raw_k, raw_v, real_raw = keys_layout(k, 0), keys_layout(v, 0), geo.pad_seq(real, 0, 1)
    fk = fv = real_fade = mk = mv = bias = None
    if use_fade:
        fk, fv, real_fade = keys_layout(fade_k, w), keys_layout(fade_v, w), geo.pad_seq(real, w, 1)
    if mem_k is not None:
        mk, mv = (t[:, :n_blocks].to(compute).permute(0, 3, 1, 2, 4) for t in (mem_k, mem_v))
        bias = mem_bias[:, :n_blocks].to(compute)
        bias = torch.where(torch.isfinite(bias), bias, torch.full_like(bias, MASKED_LOGIT))

    # Queries grouped by key/value head: (batch, kv_heads, blocks, groups * block, dim).
    qg = F.pad(q.to(compute) * scale, (0, 0, 0, 0, 0, geo.padded_seq - seq))
    qg = qg.view(batch, n_blocks, block, kv_heads, groups, dim).permute(0, 3, 1, 4, 2, 5)
    qg = qg.reshape(batch, kv_heads, n_blocks, groups * block, dim)
    out = _BlockedAttention.apply(geo, qg, raw_k, raw_v, fk, fv, mk, mv, bias, real_raw, real_fade)
    out = out.view(batch, kv_heads, n_blocks, groups, block, dim).permute(0, 2, 4, 1, 3, 5)
    return out.reshape(batch, geo.padded_seq, heads, dim)[:, :seq].to(q.dtype)
