"""Softmax attention layers, whole-sequence and incremental: ``attention`` (full, causal) and
``sliding_attention`` (the last ``w`` positions), plus the ring buffer and window attention that the
B'MOJO layers (:mod:`.bmojo`) reuse.

State (batch-first): ``attention`` keeps every key/value, ``kv`` (B, L, 2, K, D) and ``key_pos`` (B, L)
(-1 = padding), growing with every call; ``sliding_attention`` keeps a ring buffer ``window`` (B, w, 2, K, D)
whose slot ``p % w`` holds position ``p``. Keys are stored with their rotary embedding applied.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from ..configuration_bmojo import BMojoConfig
from ..ops.attention.incremental import KeyBlock, softmax_attention, visibility_bias
from .common import Tokens, apply_rotary

# ----------------------------------------------------------------------------------------------- ring buffers


def ring_positions(end: torch.Tensor, size: int) -> torch.Tensor:
    """Position held by each slot of a ring buffer after positions ``< end`` were written.

    end: (B,) -> (B, size); slot ``s`` holds the largest ``p < end`` with ``p % size == s`` (negative: empty).
    """
    last = end[:, None] - 1
    slots = torch.arange(size, device=end.device)
    return last - torch.remainder(last - slots, size)


def ring_bias(query: torch.Tensor, written: torch.Tensor, w: int, size: int) -> torch.Tensor:
    """Logit bias of every ring slot for one query at position ``query`` (B,), after the positions
    ``< written`` (B,) were written to a ring of ``size`` slots: (B, size, 2), the raw entries visible if the
    slot is among the query's last ``w`` positions, the fading entries (``size == 2w``) if it is in the ``w``
    before them."""
    held = ring_positions(written, size)
    dist = query[:, None] - held  # >= 0
    filled = held >= 0
    raw = filled & (dist < w)
    return torch.stack([visibility_bias(raw), visibility_bias(filled & ~raw)], -1)


def ring_extend(ring: torch.Tensor, new: torch.Tensor, tokens: Tokens) -> torch.Tensor:
    """Write the real new entries into a ring buffer. ring: (B, R, ...); new: (B, T, ...) -> (B, R, ...)."""
    size, seq = ring.shape[1], new.shape[1]
    if seq == 1:  # decode: one slot per row, in place
        slot = torch.remainder(tokens.start, size).view(-1, 1, *([1] * (ring.dim() - 2)))
        slot = slot.expand(-1, 1, *ring.shape[2:])
        keep_old = ~tokens.mask.view(-1, 1, *([1] * (ring.dim() - 2)))
        return ring.scatter_(1, slot, torch.where(keep_old, ring.gather(1, slot), new))
    held = ring_positions(tokens.start + tokens.n, size)
    from_new = held >= tokens.start[:, None]
    src = torch.where(from_new, size + held - tokens.start[:, None], torch.arange(size, device=ring.device))
    src = src.view(*src.shape, *([1] * (ring.dim() - 2))).expand(-1, -1, *ring.shape[2:])
    return torch.cat([ring, new], dim=1).gather(1, src)


def window_attention(
    q: torch.Tensor, entries: torch.Tensor, w: int, tokens: Tokens, state, memory: KeyBlock | None = None
) -> torch.Tensor:
    """New queries over the ring buffer ``state["window"]``, the new entries and the eidetic ``memory``; then
    the ring update. q: (B, T, heads, D) -> (B, T, heads, D).

    entries: (B, T, S, K, D) with streams S = [raw k, raw v] (a ring of ``w`` slots) or [raw k, raw v,
    fading k, fading v] (a ring of ``2w`` slots: raw visible at distance ``< w``, fading in ``[w, 2w)``).
    """
    ring = state["window"]
    if q.shape[1] == 1:
        # One query: write its entry first; then the ring holds exactly the query's windows.
        ring = state["window"] = ring_extend(ring, entries, tokens)
        bias = ring_bias(tokens.start, tokens.start + tokens.n, w, ring.shape[1])  # (B, R, 2)
        parts = [] if memory is None else [(memory.kv, memory.bias)]
        parts.append((ring[:, :, 0:2], bias[:, None, :, 0]))
        if ring.shape[2] == 4:
            parts.append((ring[:, :, 2:4], bias[:, None, :, 1]))
        return softmax_attention(q, parts)
    ring_pos = ring_positions(tokens.start, ring.shape[1])
    blocks = [KeyBlock(ring[:, :, 0:2], ring_pos, 0, w), KeyBlock(entries[:, :, 0:2], tokens.positions, 0, w, new=True)]
    if entries.shape[2] == 4:
        blocks += [
            KeyBlock(ring[:, :, 2:4], ring_pos, w, 2 * w),
            KeyBlock(entries[:, :, 2:4], tokens.positions, w, 2 * w, new=True),
        ]
    if memory is not None:
        blocks.insert(0, memory)
    out = ops.cached_attention(q, blocks, tokens.positions)
    state["window"] = ring_extend(ring, entries, tokens)
    return out


# ----------------------------------------------------------------------------------------------- layers


class BMojoAttention(nn.Module):
    """Queries, keys, values and output projections (GQA, rotary), shared by every attention-family mixer.

    ``window``: how far back a query sees raw tokens (None: everything).
    """

    window: int | None = None
    state_grows = False  # True for a state that grows with every token (a key/value cache)

    def __init__(self, config: BMojoConfig, layer_idx: int = 0):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.chunk_size = config.chunk_size
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=False)

    def heads(self, proj: nn.Linear, x: torch.Tensor, n: int) -> torch.Tensor:
        return proj(x).view(*x.shape[:2], n, self.head_dim)

    def qkv(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Rotary queries and keys, and values: each (B, T, heads or kv_heads, D)."""
        q = apply_rotary(self.heads(self.q_proj, hidden, self.num_heads), cos, sin)
        k = apply_rotary(self.heads(self.k_proj, hidden, self.num_kv_heads), cos, sin)
        return q, k, self.heads(self.v_proj, hidden, self.num_kv_heads)

    def forward(self, hidden: torch.Tensor, tokens: Tokens, state=None):
        """hidden: (B, T, hidden) normalised layer input -> (out (B, T, hidden), None)."""
        q, k, v = self.qkv(hidden, tokens.cos, tokens.sin)
        if state is None:
            out = ops.bmojo_attention(q, k, v, self.window, key_padding_mask=tokens.mask, chunk_size=self.chunk_size)
        else:
            out = self.extend(q, torch.stack([k, v], dim=2), tokens, state)
        return self.o_proj(out.reshape(*hidden.shape[:2], -1)), None


class FullAttention(BMojoAttention):
    """The ``attention`` layer: causal softmax attention over every past token (its state grows)."""

    state_grows = True

    @staticmethod
    def empty_state(config: BMojoConfig, batch: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
        kv = torch.zeros(batch, 0, 2, config.num_key_value_heads, config.head_dim, dtype=dtype, device=device)
        return {"kv": kv, "key_pos": torch.zeros(batch, 0, dtype=torch.long, device=device)}

    def extend(self, q: torch.Tensor, kv: torch.Tensor, tokens: Tokens, state) -> torch.Tensor:
        """q: (B, T, heads, D); kv: (B, T, 2, K, D) of the new tokens -> (B, T, heads, D)."""
        saved = KeyBlock(state["kv"], state["key_pos"])
        state["kv"] = torch.cat([state["kv"], kv], dim=1)
        state["key_pos"] = torch.cat([state["key_pos"], torch.where(tokens.mask, tokens.positions, -1)], dim=1)
        if q.shape[1] == 1:  # one block over the updated cache
            blocks = [KeyBlock(state["kv"], state["key_pos"])]
        else:
            blocks = [saved, KeyBlock(kv, tokens.positions, new=True)]
        return ops.cached_attention(q, blocks, tokens.positions)


class SlidingAttention(BMojoAttention):
    """The ``sliding_attention`` layer: causal softmax attention over the last ``sliding_window`` positions."""

    def __init__(self, config: BMojoConfig, layer_idx: int = 0):
        super().__init__(config, layer_idx)
        self.window = config.sliding_window

    @staticmethod
    def empty_state(config: BMojoConfig, batch: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
        shape = (batch, config.sliding_window, 2, config.num_key_value_heads, config.head_dim)
        return {"window": torch.zeros(shape, dtype=dtype, device=device)}

    def extend(self, q: torch.Tensor, kv: torch.Tensor, tokens: Tokens, state) -> torch.Tensor:
        return window_attention(q, kv, self.window, tokens, state)
