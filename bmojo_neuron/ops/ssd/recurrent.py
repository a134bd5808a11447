"""One step of the SSD recurrence, for token-by-token decoding."""

from __future__ import annotations

import torch


def ssd_step(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``h = exp(dt A) h + dt x B^T``, ``y = h C + D x``: the scan of :func:`.reference.ssd_scan_reference`
    advanced by one token.

    Args:
        x: (batch, heads, head_dim); dt: (batch, heads) >= 0; A: (heads,) < 0;
        B, C: (batch, heads, state); D: (heads,) or None;
        state: (batch, heads, head_dim, state), the state before this token (float32 recommended).

    Returns:
        y: (batch, heads, head_dim) in ``x.dtype``; new_state: (batch, heads, head_dim, state) in the
        state's compute dtype (float32 for float32/bfloat16 inputs), as ``ssd_scan``'s final state.
    """
    compute = torch.promote_types(torch.promote_types(x.dtype, state.dtype), torch.float32)
    xf, dtf, Bf, Cf = (t.to(compute) for t in (x, dt, B, C))
    decay = torch.exp(dtf * A.to(compute))  # (batch, heads)
    new_state = decay[..., None, None] * state.to(compute) + (dtf[..., None] * xf)[..., None] * Bf[:, :, None, :]
    y = (new_state @ Cf[..., None]).squeeze(-1)
    if D is not None:
        y = y + D.to(compute)[:, None] * xf
    return y.to(x.dtype), new_state
