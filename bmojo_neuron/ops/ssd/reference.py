"""Sequential (step-by-step) reference of the Mamba-2 / SSD selective scan. Slow and obviously correct."""

from __future__ import annotations

import torch


def ssd_scan_reference(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Selective scan ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T``, ``y_t = h_t C_t + D x_t``.

    Args:
        x: (batch, seq, heads, head_dim) inputs.
        dt: (batch, seq, heads) positive step sizes (already through softplus); 0 leaves the state as is.
        A: (heads,) negative decay rates.
        B: (batch, seq, heads, state) input projections.
        C: (batch, seq, heads, state) output projections.
        D: (heads,) skip connection, or None.
        initial_state: (batch, heads, head_dim, state), or None for zeros.
        chunk_size: unused here (same signature as the chunked implementations).

    Returns:
        y: (batch, seq, heads, head_dim) in ``x.dtype``; final_state: (batch, heads, head_dim, state) float32.
    """
    del chunk_size
    batch, seq, heads, head_dim = x.shape
    state_size = B.shape[-1]
    compute = torch.promote_types(x.dtype, torch.float32)
    xf, dtf, Bf, Cf = (t.to(compute) for t in (x, dt, B, C))
    Af = A.to(compute)
    if initial_state is None:
        h = x.new_zeros(batch, heads, head_dim, state_size, dtype=compute)
    else:
        h = initial_state.to(compute)
    ys = []
    for t in range(seq):
        decay = torch.exp(dtf[:, t] * Af)  # (batch, heads)
        h = decay[..., None, None] * h + (dtf[:, t, :, None] * xf[:, t])[..., None] * Bf[:, t, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", h, Cf[:, t]))
    y = torch.stack(ys, dim=1) if ys else xf.new_zeros(batch, 0, heads, head_dim)
    if D is not None:
        y = y + D.to(compute)[:, None] * xf
    return y.to(x.dtype), h.to(torch.promote_types(compute, torch.float32))
