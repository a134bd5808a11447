"""The B'MOJO layers, whole-sequence and incremental: ``bmojo_f`` (one softmax over the raw window and the
fading window of SSM outputs that slid out of it, plus the gated current SSM output) and ``bmojo``
(``bmojo_f`` plus the eidetic memory, :mod:`.eidetic`). ``docs/layer.md`` states what they compute.

State (batch-first): the SSM's ``conv`` and ``ssm`` (:mod:`.ssm`) and ``window`` (B, 2w, 4, K, D), a ring of
the raw and fading keys/values of the last ``2w`` positions; ``bmojo`` adds the eidetic memory's tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from ..configuration_bmojo import BMojoConfig
from ..ops.fused import at_least_fp32
from .attention import BMojoAttention, ring_positions, window_attention
from .common import Tokens, apply_rotary, gather_rows
from .eidetic import BMojoEideticMemory
from .ssm import BMojoSSM


class TokenGate(nn.Linear):
    """The data-dependent part of the ``token`` SSM output gate: one logit per token from the layer input,
    ``w . x_i + b``. ``start`` is ``sigmoid(b)`` at initialisation (``w`` starts at 0)."""

    def __init__(self, hidden_size: int, start: float):
        super().__init__(hidden_size, 1)
        self.start = start

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (..., hidden) -> (..., 1), in at least fp32: under autocast a bf16 product would round the
        logit's many-term sums (and its weight's gradient)."""
        return torch.linalg.vecdot(at_least_fp32(hidden), at_least_fp32(self.weight[0]))[..., None] + self.bias


class FadingAttention(BMojoAttention):
    """The ``bmojo_f`` mixer: attention over [fading window | raw window] plus ``g * s_i``."""

    def __init__(self, config: BMojoConfig, layer_idx: int = 0):
        super().__init__(config)
        self.window = config.sliding_window
        self.ssm = BMojoSSM(config)
        self.eidetic: BMojoEideticMemory | None = None  # the `bmojo` subclass sets it
        # The gated current SSM output (docs/layer.md): `o_proj(attn_i) + g_i * s_i`. Without it s_i first
        # reaches the output w positions later (fading window) and Mamba is not a special case.
        gate = config.ssm_output_gate
        start = config.ssm_output_gate_start(layer_idx)
        self.ssm_gate_start = start if gate == "vector" else 1.0
        self.ssm_gate = nn.Parameter(torch.full((config.hidden_size,), self.ssm_gate_start)) if gate != "none" else None
        self.ssm_gate_proj = TokenGate(config.hidden_size, start) if gate == "token" else None

    @staticmethod
    def empty_state(config: BMojoConfig, batch: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
        state = BMojoSSM.empty_state(config, batch, dtype, device)
        shape = (batch, 2 * config.sliding_window, 4, config.num_key_value_heads, config.head_dim)
        state["window"] = torch.zeros(shape, dtype=dtype, device=device)
        return state

    def ssm_gate_values(self, hidden: torch.Tensor) -> torch.Tensor:
        """The gate ``g`` for the layer input hidden (batch, seq, hidden): (hidden,) for ``vector``, (batch,
        seq, hidden) for ``token``."""
        if self.ssm_gate_proj is None:
            return self.ssm_gate
        return self.ssm_gate * torch.sigmoid(self.ssm_gate_proj.logits(hidden))

    def readout(self, attended: torch.Tensor, s: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The mixer's output from the attention's (batch, seq, heads * head_dim) and the SSM's (batch, seq,
        hidden) outputs and the layer input hidden: ``o_proj(attended) + g * s`` (``o_proj(attended)``
        without the gate)."""
        out = self.o_proj(attended)
        return out if self.ssm_gate is None else out + self.ssm_gate_values(hidden) * s

    def fading_kv(self, s: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Keys (rotary at the SSM output's own position) and values of the SSM outputs s (B, T, hidden)."""
        fade_k = apply_rotary(self.heads(self.k_proj, s, self.num_kv_heads), cos, sin)
        return fade_k, self.heads(self.v_proj, s, self.num_kv_heads)

    def forward(self, hidden: torch.Tensor, tokens: Tokens, state=None):
        """hidden: (B, T, hidden) normalised layer input -> (out (B, T, hidden), auxiliary loss or None)."""
        if state is not None and not tokens.fresh:
            return self.extend(hidden, tokens, state), None
        q, k, v = self.qkv(hidden, tokens.cos, tokens.sin)
        if state is None:
            s = self.ssm(hidden, tokens.mask)
        else:  # a prompt after an empty state: the whole-sequence ops, then the state filled from them
            s = self.ssm.extend(hidden, tokens, state)
        fade_k, fade_v = self.fading_kv(s, tokens.cos, tokens.sin)
        mem_k = mem_v = mem_bias = aux = None
        if self.eidetic is not None:
            if state is None:
                mem_k, mem_v, mem_bias, aux = self.eidetic(hidden, s, k, v, self.k_proj, tokens.mask)
            else:
                mem_k, mem_v, mem_bias = self.eidetic.prefill(hidden, s, k, v, self.k_proj, tokens, state)
        out = ops.bmojo_attention(
            q, k, v, self.window, fade_k, fade_v, mem_k, mem_v, mem_bias, tokens.mask, self.chunk_size, None
        )
        if state is not None:
            fill_ring(state, tokens.n, (k, v, fade_k, fade_v))
        return self.readout(out.reshape(*hidden.shape[:2], -1), s, hidden), aux

    def extend(self, hidden: torch.Tensor, tokens: Tokens, state) -> torch.Tensor:
        """New tokens after a non-empty state. hidden: (B, T, hidden) -> (B, T, hidden)."""
        batch, seq, _ = hidden.shape
        q, k, v = self.qkv(hidden, tokens.cos, tokens.sin)
        s = self.ssm.extend(hidden, tokens, state)
        fade_k, fade_v = self.fading_kv(s, tokens.cos, tokens.sin)
        kv = torch.stack([k, v], dim=2)  # (B, T, 2, K, D)
        entries = torch.cat([kv, torch.stack([fade_k, fade_v], dim=2)], dim=2)
        memory = None if self.eidetic is None else self.eidetic.extend(hidden, s, kv, self.k_proj, tokens, state)
        out = window_attention(q, entries, self.window, tokens, state, memory)
        return self.readout(out.reshape(batch, seq, -1), s, hidden)


class BMojoMixer(FadingAttention):
    """The ``bmojo`` mixer: ``bmojo_f`` plus the eidetic memory's slots in the same softmax."""

    def __init__(self, config: BMojoConfig, layer_idx: int = 0):
        super().__init__(config, layer_idx)
        self.eidetic = BMojoEideticMemory(config)

    @staticmethod
    def empty_state(config: BMojoConfig, batch: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
        state = FadingAttention.empty_state(config, batch, dtype, device)
        state.update(BMojoEideticMemory.empty_state(config, batch, dtype, device))
        return state


def fill_ring(state, n: torch.Tensor, streams: tuple[torch.Tensor, ...]) -> None:
    """The ring after a prompt of ``n`` (B,) real tokens from an empty state: slot ``r`` holds the largest
    position ``p < n`` with ``p % R == r``. streams: (k, v, fade_k, fade_v), each (B, T, K, D)."""
    ring = state["window"]
    held = ring_positions(n, ring.shape[1])
    src = held.clamp(min=0)
    new = torch.stack([gather_rows(t, src) for t in streams], dim=2)
    state["window"] = torch.where((held >= 0)[..., None, None, None], new, ring)
