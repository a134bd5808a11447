"""The fading memory: a Mamba-2 style selective SSM, whole-sequence and incremental, and the ``ssm`` layer.

State of one SSM (every tensor batch-first): ``conv`` (B, conv_dim, conv_kernel - 1), the last inputs of the
causal convolution, and ``ssm`` (B, heads, head_dim, state_size) float32, the scan state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..configuration_bmojo import BMojoConfig
from ..ops import fused
from ..ops.fused import at_least_fp32
from .common import BMojoGatedRMSNorm, Tokens


def conv_step(history: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The causal depthwise convolution at the newest position, before the silu.

    history: (B, conv_dim, K) the last K inputs, oldest first; weight: (conv_dim, K); bias: (conv_dim,)
    -> (B, conv_dim).
    """
    return torch.linalg.vecdot(history, weight) + bias


def slide_conv_history(history: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
    """The conv state after one token: history (B, conv_dim, K) -> (B, conv_dim, K - 1); a padded row
    (``real`` False) keeps its old state. ``real``: (B,) bool or None (every row real)."""
    if real is None:
        return history[..., 1:]
    return torch.where(real[:, None, None], history[..., 1:], history[..., :-1])


class BMojoSSM(nn.Module):
    """Mamba-2 style selective SSM: in-projection, causal depthwise conv, scan, gated norm, out-projection.

    Used alone by ``ssm`` layers, and by ``bmojo_f``/``bmojo`` layers to produce the fading-memory
    outputs ``s`` (batch, seq, hidden).
    """

    def __init__(self, config: BMojoConfig):
        super().__init__()
        self.num_heads = config.ssm_num_heads
        self.head_dim = config.ssm_head_dim
        self.state_size = config.ssm_state_size
        self.num_groups = config.ssm_num_groups
        self.chunk_size = config.chunk_size
        self.inner = config.ssm_inner_size
        self.conv_dim = self.inner + 2 * self.num_groups * self.state_size
        self.conv_kernel = config.conv_kernel
        self.in_proj = nn.Linear(config.hidden_size, self.inner + self.conv_dim + self.num_heads, bias=False)
        self.conv1d = nn.Conv1d(
            self.conv_dim, self.conv_dim, config.conv_kernel, groups=self.conv_dim, padding=config.conv_kernel - 1
        )
        self.dt_bias = nn.Parameter(torch.zeros(self.num_heads))
        self.A_log = nn.Parameter(torch.zeros(self.num_heads))
        self.D = nn.Parameter(torch.ones(self.num_heads))
        self.norm = BMojoGatedRMSNorm(self.inner, config.rms_norm_eps)
        self.out_proj = nn.Linear(self.inner, config.hidden_size, bias=False)

    @staticmethod
    def empty_state(config: BMojoConfig, batch: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
        conv_dim = config.ssm_inner_size + 2 * config.ssm_num_groups * config.ssm_state_size
        scan = (batch, config.ssm_num_heads, config.ssm_head_dim, config.ssm_state_size)
        return {
            "conv": torch.zeros(batch, conv_dim, config.conv_kernel - 1, dtype=dtype, device=device),
            "ssm": torch.zeros(scan, dtype=torch.float32, device=device),
        }

    # --- formulas shared by the whole-sequence and the incremental forms
    def project(self, x: torch.Tensor):
        """x: (batch, seq, hidden) -> z (batch, seq, inner), xBC (batch, seq, conv_dim), dt_raw (batch, seq, heads)."""
        return torch.split(self.in_proj(x), [self.inner, self.conv_dim, self.num_heads], dim=-1)

    def convolve(self, xBC: torch.Tensor) -> torch.Tensor:
        """Causal depthwise convolution + silu. xBC: (batch, seq, conv_dim), zero history."""
        # fused: in xBC's layout (no transposed copies), saves xBC only (ops/fused.py has the conv1d reference)
        return fused.causal_conv_silu(xBC, self.conv1d.weight, self.conv1d.bias)

    def scan_inputs(self, xBC: torch.Tensor, dt_raw: torch.Tensor, mask: torch.Tensor | None):
        """Split the convolved stream into the scan's (x, dt, A, B, C); padded positions get x = 0 and dt = 0."""
        batch, seq, _ = xBC.shape
        x, B, C = torch.split(xBC, [self.inner] + [self.num_groups * self.state_size] * 2, dim=-1)
        x = x.reshape(batch, seq, self.num_heads, self.head_dim)
        heads_per_group = self.num_heads // self.num_groups
        B = B.reshape(batch, seq, self.num_groups, 1, self.state_size).expand(-1, -1, -1, heads_per_group, -1)
        C = C.reshape(batch, seq, self.num_groups, 1, self.state_size).expand(-1, -1, -1, heads_per_group, -1)
        B = B.reshape(batch, seq, self.num_heads, self.state_size)
        C = C.reshape(batch, seq, self.num_heads, self.state_size)
        dt = F.softplus(at_least_fp32(dt_raw) + at_least_fp32(self.dt_bias))
        if mask is not None:
            dt = dt * mask[..., None]
            x = x * mask[..., None, None].to(x.dtype)
        A = -torch.exp(at_least_fp32(self.A_log))
        return x, dt, A, B, C

    def output(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """y: (batch, seq, heads, head_dim) scan output -> (batch, seq, hidden)."""
        return self.out_proj(self.norm(y.reshape(*y.shape[:2], self.inner), z))

    # --- the two forms
    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Whole sequence from a zero state. hidden: (batch, seq, hidden); mask: (batch, seq) bool, True for
        real tokens -> (batch, seq, hidden)."""
        if mask is not None:
            hidden = hidden * mask[..., None].to(hidden.dtype)
        z, xBC, dt_raw = self.project(hidden)
        x, dt, A, B, C = self.scan_inputs(self.convolve(xBC), dt_raw, mask)
        y, _ = ops.ssd_scan(x, dt, A, B, C, at_least_fp32(self.D), None, self.chunk_size)
        return self.output(y, z)

    def extend(self, hidden: torch.Tensor, tokens: Tokens, state) -> torch.Tensor:
        """New tokens after ``state`` (its ``conv`` and ``ssm`` tensors, updated in place of the dict).
        hidden: (B, T, hidden) -> (B, T, hidden)."""
        hidden = hidden * tokens.mask[..., None].to(hidden.dtype)
        z, xBC, dt_raw = self.project(hidden)
        history = torch.cat([state["conv"], xBC.transpose(1, 2)], dim=-1)  # (B, conv_dim, K - 1 + T)
        if hidden.shape[1] == 1:  # decode: one output, the window slides by one if the token is real
            conv = conv_step(history, self.conv1d.weight[:, 0], self.conv1d.bias)[..., None]
            state["conv"] = slide_conv_history(history, tokens.mask[:, 0])
        else:
            conv = F.conv1d(history, self.conv1d.weight, self.conv1d.bias, groups=self.conv_dim)  # (B, conv_dim, T)
            keep = tokens.n[:, None] + torch.arange(self.conv_kernel - 1, device=hidden.device)  # last K-1 real
            state["conv"] = history.gather(2, keep[:, None, :].expand(-1, self.conv_dim, -1))
        x, dt, A, B, C = self.scan_inputs(F.silu(conv).transpose(1, 2), dt_raw, tokens.mask)
        if hidden.shape[1] == 1:
            y, state["ssm"] = ops.ssd_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], self.D.float(), state["ssm"])
            y = y[:, None]
        else:
            y, state["ssm"] = ops.ssd_scan(x, dt, A, B, C, self.D.float(), state["ssm"], self.chunk_size)
        return self.output(y, z)


class SSMMixer(nn.Module):
    """The ``ssm`` layer's mixer: the SSM alone (Mamba-2 with the decoder layer's MLP)."""

    state_grows = False

    def __init__(self, config: BMojoConfig, layer_idx: int = 0):
        super().__init__()
        self.ssm = BMojoSSM(config)

    empty_state = staticmethod(BMojoSSM.empty_state)

    def forward(self, hidden: torch.Tensor, tokens: Tokens, state=None):
        """hidden: (B, T, hidden) normalised layer input -> (out (B, T, hidden), None)."""
        if state is None:
            return self.ssm(hidden, tokens.mask), None
        return self.ssm.extend(hidden, tokens, state), None
