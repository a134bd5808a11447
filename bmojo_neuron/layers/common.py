"""What every layer type shares: norms, the MLP, the rotary embedding, the description of a forward's new
tokens (:class:`Tokens`) and row gathers.

Nothing here knows about layer types; :mod:`bmojo_neuron.layers` maps each type to its mixer class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..configuration_bmojo import BMojoConfig
from ..ops import fused


class BMojoRMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fused: saves x and the per-row rstd only (ops/fused.py has the plain reference)
        return fused.rms_norm(x, self.weight, self.eps)


class BMojoGatedRMSNorm(BMojoRMSNorm):
    """``norm(y * silu(z))``, the output gate of Mamba-2."""

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # fused: saves y, z and the per-row rstd only
        return fused.gated_rms_norm(y, z, self.weight, self.eps)


class BMojoMLP(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: BMojoConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)
        if plain_linear(self.down_proj):
            # fused with the down projection: saves gate and up only, their product is recomputed in the backward
            return fused.swiglu_down(gate, up, self.down_proj.weight)
        return self.down_proj(fused.swiglu(gate, up))  # a hooked or sharded down projection runs as a module


def plain_linear(m: nn.Module) -> bool:
    """An ``nn.Linear`` whose weight a fused function may read directly: no hooks, and a plain parameter (a
    tensor-parallel shard is a ``DTensor``, whose forward goes through its own collectives). A subclass that keeps
    ``nn.Linear.forward`` counts (it computes the same thing)."""
    plain_weight = type(m.weight) is nn.Parameter
    plain_forward = isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward
    return plain_forward and plain_weight and not (m._forward_hooks or m._forward_pre_hooks)


# ----------------------------------------------------------------------------------------------- rotary


def rotary_inv_freq(head_dim: int, theta: float, device=None) -> torch.Tensor:
    """(head_dim,) ``cat([inv_freq, inv_freq])`` of the Llama rotary embedding."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    return torch.cat([inv, inv])


def rotary_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype, inv_freq: torch.Tensor | None = None
):
    """cos/sin of the Llama rotary embedding at ``positions`` (any shape), each ``positions.shape + (head_dim,)``.
    ``inv_freq``: :func:`rotary_inv_freq`'s result, when the caller keeps it."""
    if inv_freq is None:
        inv_freq = rotary_inv_freq(head_dim, theta, positions.device)
    freqs = positions.float()[..., None] * inv_freq
    return freqs.cos().to(dtype), freqs.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (batch, seq, heads, dim); cos/sin: (seq, dim) or (batch, seq, dim)."""
    if cos.dim() == 2:
        cos, sin = cos[None], sin[None]
    return rotate(x, cos[:, :, None], signed_sin(sin)[:, :, None])


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """``sin`` with its first half negated, so that ``rotate_half(x) * sin == swap_halves(x) * signed_sin``."""
    half = sin.shape[-1] // 2
    return torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """The rotary embedding ``x cos + rotate_half(x) sin``, with cos and :func:`signed_sin` broadcastable to x."""
    swapped = x.unflatten(-1, (2, -1)).flip(-2).flatten(-2)
    return torch.addcmul(x * cos, swapped, sin_signed)


# ----------------------------------------------------------------------------------------------- new tokens


@dataclass
class Tokens:
    """What every layer of one forward shares about its new tokens ``(B, T)``.

    Whole-sequence forward (no state): ``mask`` (or None: every token real) and ``cos``/``sin`` (T, head_dim)
    at positions ``0 .. T - 1`` (rows with left padding were rotated so their real tokens start at 0).

    Incremental forward (after a state): a row's padding was moved behind its real tokens, so row ``b`` has
    ``n[b]`` real tokens at indices ``0 .. n[b] - 1``, at positions ``start[b] + i``; ``cos``/``sin`` are
    (B, T, head_dim) at ``positions``. ``fresh``: every row's state is empty (a prompt's prefill), which lets
    layers run their whole-sequence ops and fill the state from the results. ``fused``: the model chose the
    fused one-token step (:mod:`bmojo_neuron.fast_decode`), whose per-step constants this holds.
    Nothing reads a tensor's value on the host: state updates use ``n`` as a tensor.
    """

    mask: torch.Tensor | None
    cos: torch.Tensor
    sin: torch.Tensor
    start: torch.Tensor | None = None
    n: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    fresh: bool = False
    fused: Any = None

    @classmethod
    def whole_sequence(cls, config: BMojoConfig, seq: int, dtype: torch.dtype, mask=None, device=None) -> Tokens:
        """The tokens of a forward from scratch over ``seq`` positions (``mask``: (B, seq) bool or None)."""
        cos, sin = rotary_cos_sin(torch.arange(seq, device=device), config.head_dim, config.rope_theta, dtype)
        return cls(mask, cos, sin)


def gather_rows(src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[b, i] = src[b, idx[b, i]]`` for src (B, S, ...) and idx (B, N) -> (B, N, ...)."""
    return src.gather(1, idx.view(*idx.shape, *([1] * (src.dim() - 2))).expand(-1, -1, *src.shape[2:]))


def scatter_rows_(dst: torch.Tensor, idx: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """In place: ``dst[b, idx[b, i]] = src[b, i]`` for dst (B, S, ...), idx (B, N), src (B, N, ...)."""
    return dst.scatter_(1, idx.view(*idx.shape, *([1] * (dst.dim() - 2))).expand(-1, -1, *dst.shape[2:]), src)


def permute_rows(t: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``out[b, i] = t[b, order[b, i]]`` for t (B, T, ...) and order (B, T): the rotation of left padding and
    the compaction of padding, and their inverses."""
    return gather_rows(t, order)
