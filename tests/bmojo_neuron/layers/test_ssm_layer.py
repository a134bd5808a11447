"""The `ssm` layer equals an independent step-by-step recurrence written here from the Mamba-2 equations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bmojo_neuron.layers.ssm import BMojoSSM
from bmojo_neuron.testing import tiny_config


def step_by_step(ssm: BMojoSSM, hidden: torch.Tensor) -> torch.Tensor:
    """One token at a time: conv ring buffer, h_t = exp(dt A) h + dt x B^T, y = h C + D x, gate, norm, project."""
    batch, seq, _ = hidden.shape
    heads, head_dim, n, groups = ssm.num_heads, ssm.head_dim, ssm.state_size, ssm.num_groups
    kernel = ssm.conv1d.weight[:, 0]  # (conv_dim, K)
    width = kernel.shape[1]
    conv_buffer = hidden.new_zeros(batch, ssm.conv_dim, width)
    h = hidden.new_zeros(batch, heads, head_dim, n)
    A = -torch.exp(ssm.A_log)
    outputs = []
    for t in range(seq):
        z, xBC, dt_raw = torch.split(ssm.in_proj(hidden[:, t]), [ssm.inner, ssm.conv_dim, heads], dim=-1)
        conv_buffer = torch.cat([conv_buffer[..., 1:], xBC[..., None]], dim=-1)
        xBC = F.silu((conv_buffer * kernel).sum(-1) + ssm.conv1d.bias)
        x, B, C = torch.split(xBC, [ssm.inner, groups * n, groups * n], dim=-1)
        x = x.view(batch, heads, head_dim)
        B = B.view(batch, groups, n).repeat_interleave(heads // groups, dim=1)
        C = C.view(batch, groups, n).repeat_interleave(heads // groups, dim=1)
        dt = F.softplus(dt_raw + ssm.dt_bias)
        for head in range(heads):
            decay = torch.exp(dt[:, head] * A[head])
            h[:, head] = (
                decay[:, None, None] * h[:, head] + dt[:, head, None, None] * x[:, head, :, None] * B[:, head, None, :]
            )
        y = torch.einsum("bhpn,bhn->bhp", h, C) + ssm.D[:, None] * x
        gated = y.reshape(batch, -1) * F.silu(z)
        normed = gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + ssm.norm.eps) * ssm.norm.weight
        outputs.append(ssm.out_proj(normed))
    return torch.stack(outputs, dim=1)


def test_ssm_layer_equals_recurrence():
    config = tiny_config(["ssm"], ssm_num_heads=4, ssm_num_groups=2, ssm_head_dim=8)
    from bmojo_neuron import BMojoForCausalLM

    ssm = BMojoForCausalLM(config).model.layers[0].mixer.ssm.double()
    hidden = torch.randn(2, 29, config.hidden_size, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ssm(hidden), step_by_step(ssm, hidden), rtol=1e-10, atol=1e-10)
