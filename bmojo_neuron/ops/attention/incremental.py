"""The incremental form of B'MOJO attention: new queries against blocks of saved and new keys.

The whole-sequence op (:mod:`.reference`, :mod:`.blocked`) sees every key of a sequence at once; after a
state, the keys come in blocks (a ring buffer of the window, the new tokens, the eidetic memory), each with
its own visibility rule, and one softmax runs over all of them. Registered as the ``cached_attention`` op
(one implementation: plain torch, also what the ``sim`` and ``nki`` modes run).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..constants import MASKED_LOGIT

# Largest number of queries attended at once: bounds the (queries x keys) logits of a long prefill.
QUERY_BLOCK = 256


@dataclass
class KeyBlock:
    """Keys/values a query may attend to, and the rule that says which.

    With ``bias`` None a key at distance ``d = query position - key position`` is visible iff
    ``lo <= d < hi`` (``hi`` None: unbounded) and its position is ``>= 0``. ``new`` marks the keys of the
    new tokens themselves (key ``j`` at position ``start + j``), which lets long prefills skip key ranges
    a query block cannot see. With ``bias`` (B, T, S) given, that additive bias is the rule.
    """

    kv: torch.Tensor  # (B, S, 2, kv_heads, head_dim): keys then values
    pos: torch.Tensor | None = None  # (B, S) int64 key positions, -1 for none
    lo: int = 0
    hi: int | None = None
    new: bool = False
    bias: torch.Tensor | None = None


def visibility_bias(visible: torch.Tensor) -> torch.Tensor:
    """0 where ``visible``, :data:`MASKED_LOGIT` elsewhere (float32)."""
    return torch.where(visible, 0.0, MASKED_LOGIT)


def cached_attention_torch(
    q: torch.Tensor, blocks: list[KeyBlock], positions: torch.Tensor, query_block: int = QUERY_BLOCK
) -> torch.Tensor:
    """One softmax over every block's visible keys.

    q: (B, T, heads, D), rotary applied; positions: (B, T) int64 query positions -> (B, T, heads, D).
    """
    seq = q.shape[1]
    outs = []
    for i0 in range(0, seq, query_block):
        i1 = min(seq, i0 + query_block)
        qpos = positions[:, i0:i1, None]
        parts = []
        for blk in blocks:
            if blk.bias is not None:
                parts.append((blk.kv, blk.bias[:, i0:i1]))
                continue
            kv, kpos = blk.kv, blk.pos
            if blk.new:  # keys of the new tokens: key j is visible from query i only if lo <= i - j < hi
                j0 = 0 if blk.hi is None else max(0, i0 - blk.hi + 1)
                j1 = min(seq, i1 - blk.lo)
                if j1 <= j0:
                    continue
                kv, kpos = kv[:, j0:j1], kpos[:, j0:j1]
            elif blk.hi is not None and i0 + 1 >= blk.hi:
                continue  # saved keys are at distance >= i + 1 from query i
            dist = qpos - kpos[:, None]
            visible = (kpos[:, None] >= 0) & (dist >= blk.lo)
            if blk.hi is not None:
                visible = visible & (dist < blk.hi)
            parts.append((kv, visibility_bias(visible)))
        outs.append(softmax_attention(q[:, i0:i1], parts))
    return outs[0] if len(outs) == 1 else torch.cat(outs, 1)


def softmax_attention(
    q: torch.Tensor, parts: list[tuple[torch.Tensor, torch.Tensor]], scale: float | None = None
) -> torch.Tensor:
    """q: (B, T, H, D); parts: [(kv (B, S, 2, K, D), bias (B, T, S))] -> (B, T, H, D), one softmax over all S.

    ``scale`` defaults to ``D ** -0.5`` (1.0 when the caller folded it into the queries). ``matmul`` on
    permuted views reads strided keys/values in place (no copies of a ring buffer).
    """
    batch, seq, heads, dim = q.shape
    kv_heads = parts[0][0].shape[3]
    groups = heads // kv_heads
    qf = _f32(q)
    if scale != 1.0:
        qf = qf * (dim**-0.5 if scale is None else scale)
    if seq == 1:  # decoding: (B, 1, H, D) is already (B, K, G, D) in memory
        qg = qf.view(batch, kv_heads, groups, dim)
    else:
        qg = qf.view(batch, seq, kv_heads, groups, dim).permute(0, 2, 3, 1, 4).reshape(batch, kv_heads, -1, dim)
    logits = [qg @ _f32(kv[:, :, 0]).permute(0, 2, 3, 1) for kv, _ in parts]  # each (B, K, G * T, S_i)
    logits = torch.cat(logits, -1) if len(logits) > 1 else logits[0]
    bias = torch.cat([b for _, b in parts], -1) if len(parts) > 1 else parts[0][1]  # (B, T, S)
    probs = torch.softmax(logits.view(batch, kv_heads, groups, seq, -1) + bias[:, None, None], dim=-1)
    probs = probs.view(batch, kv_heads, groups * seq, -1)
    out = None
    at = 0
    for kv, _ in parts:
        size = kv.shape[1]
        part = probs[..., at : at + size] @ _f32(kv[:, :, 1]).permute(0, 2, 1, 3)  # (B, K, G * T, D)
        out = part if out is None else out + part
        at += size
    if seq == 1:
        out = out.view(batch, 1, heads, dim)
    else:
        out = out.view(batch, kv_heads, groups, seq, dim).permute(0, 3, 1, 2, 4).reshape(batch, seq, heads, dim)
    return out if out.dtype == q.dtype else out.to(q.dtype)


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float32 else t.float()


__all__ = ["QUERY_BLOCK", "KeyBlock", "cached_attention_torch", "softmax_attention", "visibility_bias"]
