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
        B, C: (batch, groups, state), ``heads`` a multiple of ``groups`` (head ``h`` reads group
        ``h // (heads // groups)``; ``groups == heads`` gives every head its own); D: (heads,) or None;
        state: (batch, heads, head_dim, state), the state before this token (float32 recommended).

    Returns:
        y: (batch, heads, head_dim) in ``x.dtype``; new_state: (batch, heads, head_dim, state) in the
        state's compute dtype (float32 for float32/bfloat16 inputs), as ``ssd_scan``'s final state.
    """
    batch, heads, p = x.shape
    groups, n = B.shape[1], B.shape[2]
    per_group = heads // groups
    if x.dtype == state.dtype == torch.float32:  # decoding's case: no casts to dispatch
        xf, dtf, Af, Bf, Cf, hf = x, dt, A, B, C, state
    else:
        compute = torch.promote_types(torch.promote_types(x.dtype, state.dtype), torch.float32)
        xf, dtf, Af, Bf, Cf, hf = (_as(t, compute) for t in (x, dt, A, B, C, state))
    grouped = (batch, groups, per_group)
    h = hf.view(*grouped, p, n) * torch.exp(dtf * Af).view(*grouped, 1, 1)
    h = torch.addcmul(h, (xf * dtf.view(batch, heads, 1)).view(*grouped, p, 1), Bf.view(batch, groups, 1, 1, n))
    y = (h @ Cf.view(batch, groups, 1, n, 1)).view(batch, heads, p)
    if D is not None:
        y = torch.addcmul(y, _as(D, y.dtype).view(heads, 1), xf)
    return _as(y, x.dtype), h.view(batch, heads, p, n)


def _as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Skips the dispatch of a no-op cast: this runs once per layer and token in decoding.
    return t if t.dtype == dtype else t.to(dtype)
