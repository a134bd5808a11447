"""Chunked SSD scan (Mamba-2 "state space duality" form): matmuls inside chunks, a recurrence across them.

For chunk length ``L`` and ``n_chunks = ceil(seq / L)`` (the tail is padded with ``dt = 0``, which leaves the
state untouched), with ``a_t = dt_t A`` and ``cs`` its cumulative sum inside the chunk:

- inside a chunk: ``y_l = sum_{s <= l} exp(cs_l - cs_s) (C_l . B_s) dt_s x_s``, a lower-triangular,
  decay-weighted matmul (the decays are differences of cumulative sums, exponentiated only where
  ``s <= l``, so they never overflow);
- chunk states: ``S_c = sum_s exp(cs_last - cs_s) dt_s x_s B_s^T``, the state a chunk leaves behind when it
  starts from zero;
- across chunks: ``H_{c+1} = exp(cs_last(c)) H_c + S_c`` from ``H_0 = initial_state``, solved in one matmul
  with a (n_chunks + 1)^2 decay matrix (small: the number of chunks, not tokens);
- output: ``y_l += exp(cs_l) C_l . H_c`` (the contribution of everything before the chunk), plus ``D x``.

Everything runs in float32 (float64 for float64 inputs), whatever the input dtype. Plain differentiable
torch: autograd goes through it, and :mod:`.custom` wraps it as the ``bmojo::ssd_scan`` op.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..constants import NEG_INF

# Log-decays below this are treated as exactly zero decay. exp(-60) ~ 1e-26 is far below float32
# resolution relative to any term it is added to, and cutting there keeps products out of the subnormal
# range, where CPU arithmetic is 10-100x slower.
LOG_DECAY_FLOOR = -60.0


def _decay(log_decay: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """``exp(log_decay)`` where it is above :data:`LOG_DECAY_FLOOR` (and ``keep``), exactly 0 elsewhere."""
    drop = log_decay < LOG_DECAY_FLOOR
    if keep is not None:
        drop = drop | ~keep
    return torch.exp(log_decay.masked_fill(drop, NEG_INF))  # exp(-inf) = exactly 0


def _chunk_decay(cs: torch.Tensor) -> torch.Tensor:
    """``exp(cs_i - cs_j)`` for ``j <= i``, 0 above the diagonal. cs: (..., n) cumulative log-decays of one
    chunk -> (..., n, n).

    Differences of cumulative sums are accurate here because a chunk is short (the rounding error is
    ``eps * |cs|`` of one chunk); entries above the diagonal are positive and become -inf before the
    exponential, so nothing overflows.
    """
    n = cs.shape[-1]
    causal = torch.ones(n, n, dtype=torch.bool, device=cs.device).tril()
    return _decay(cs[..., :, None] - cs[..., None, :], causal)


def _segment_decay(a: torch.Tensor) -> torch.Tensor:
    """``exp(a_{j+1} + ... + a_i)`` for ``j <= i`` (1 on the diagonal), 0 above it. a: (..., n) -> (..., n, n).

    Used across chunks, where cumulative sums grow with the sequence: each segment is summed on its own (a
    masked cumulative sum down the columns) instead of as a difference of two long sums.
    """
    n = a.shape[-1]
    ones = torch.ones(n, n, dtype=torch.bool, device=a.device)
    # terms[k, j] = a_k for k > j: column j, summed down to row i, is a_{j+1} + ... + a_i.
    terms = a[..., :, None].expand(*a.shape, n).masked_fill(~ones.tril(-1), 0.0)
    segments = torch.cumsum(terms, dim=-2)
    return _decay(segments, ones.tril(0))


class _Layout:
    """Chunked layout: (batch, seq, heads, *rest) <-> (batch, heads, n_chunks, length, *rest), zero-padded."""

    def __init__(self, x: torch.Tensor, chunk_size: int):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.batch, self.seq, self.heads, self.head_dim = x.shape
        self.compute = torch.promote_types(x.dtype, torch.float32)
        self.length = min(chunk_size, max(self.seq, 1))
        self.n_chunks = max(1, -(-self.seq // self.length))
        self.pad = self.n_chunks * self.length - self.seq

    def chunks(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(self.compute)
        if self.pad:
            t = F.pad(t, (0, 0) * (t.dim() - 2) + (0, self.pad))
        t = t.reshape(self.batch, self.n_chunks, self.length, self.heads, *t.shape[3:])
        return t.movedim(3, 1).contiguous()

    def unchunk(self, t: torch.Tensor) -> torch.Tensor:
        t = t.movedim(1, 3).reshape(self.batch, self.n_chunks * self.length, self.heads, *t.shape[4:])
        return t[:, : self.seq]


def _forward(x, dt, A, B, C, D, initial_state, chunk_size):
    """The chunked forward; returns ``(y, final_state, intermediates)`` (the backward reuses them)."""
    lay = _Layout(x, chunk_size)
    batch, heads, head_dim, n_chunks = lay.batch, lay.heads, lay.head_dim, lay.n_chunks
    state_size = B.shape[-1]
    dtc = lay.chunks(dt)  # (b, h, c, l)
    xc = lay.chunks(x)  # (b, h, c, l, p)
    xdt = xc * dtc[..., None]
    Bc, Cc = lay.chunks(B), lay.chunks(C)  # (b, h, c, l, n)
    cs = torch.cumsum(dtc * A.to(lay.compute)[:, None, None], dim=-1)  # (b, h, c, l): within a chunk only

    # Inside each chunk: masked, decay-weighted (C B^T) times dt x.
    gram = Cc @ Bc.transpose(-1, -2)  # (b, h, c, l, l)
    decay = _chunk_decay(cs)
    scores = gram * decay
    y = scores @ xdt  # (b, h, c, l, p)

    # State each chunk leaves behind from zero: sum_s exp(cs_last - cs_s) dt_s x_s B_s^T.
    to_end = _decay(cs[..., -1:] - cs)  # (b, h, c, l)
    chunk_states = (xdt * to_end[..., None]).transpose(-1, -2) @ Bc  # (b, h, c, p, n)

    # Across chunks: H_c = state entering chunk c, for c = 0..n_chunks (the last one is the final state).
    if initial_state is None:
        h0 = chunk_states.new_zeros(batch, heads, 1, head_dim, state_size)
    else:
        h0 = initial_state.to(lay.compute)[:, :, None]
    inputs = torch.cat([h0, chunk_states], dim=2).flatten(-2)  # (b, h, c+1, p*n)
    totals = F.pad(cs[..., -1], (1, 0))  # (b, h, c+1): log-decay of chunk c-1, applied after H_{c-1}
    across = _segment_decay(totals)  # (b, h, c+1, c+1)
    entering = (across @ inputs).view(batch, heads, n_chunks + 1, head_dim, state_size)

    # Contribution of the past: exp(cs_l) C_l . H_c.
    from_start = _decay(cs)  # (b, h, c, l)
    past = Cc @ entering[:, :, :-1].transpose(-1, -2)  # (b, h, c, l, p)
    y = lay.unchunk(y + past * from_start[..., None])
    if D is not None:
        y = y + D.to(lay.compute)[:, None] * x.to(lay.compute)
    final_state = entering[:, :, -1].to(torch.promote_types(lay.compute, torch.float32))
    saved = dict(
        lay=lay, dtc=dtc, xc=xc, xdt=xdt, Bc=Bc, Cc=Cc, gram=gram, decay=decay, scores=scores, to_end=to_end,
        across=across, entering=entering, from_start=from_start, past=past,
    )  # fmt: skip
    return y.to(x.dtype), final_state, saved


def ssd_scan_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`.reference.ssd_scan_reference`, in ``O(seq * chunk_size)`` work and memory.

    Args:
        x: (batch, seq, heads, head_dim); dt: (batch, seq, heads) >= 0; A: (heads,) < 0;
        B, C: (batch, seq, heads, state); D: (heads,) or None;
        initial_state: (batch, heads, head_dim, state) or None; chunk_size: ``L`` >= 1.

    Returns:
        y: (batch, seq, heads, head_dim) in ``x.dtype``; final_state: (batch, heads, head_dim, state) float32
        (float64 for float64 inputs).
    """
    y, final_state, _ = _forward(x, dt, A, B, C, D, initial_state, chunk_size)
    return y, final_state


def ssd_scan_chunked_backward(
    grad_y: torch.Tensor,
    grad_state: torch.Tensor | None,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor | None, ...]:
    """Gradients of :func:`ssd_scan_chunked` w.r.t. ``(x, dt, A, B, C, D, initial_state)``, written out.

    The forward's intermediates are recomputed (nothing but the inputs is kept between forward and
    backward), then every step is differentiated by hand in the same chunked layout. ``grad_y`` is like
    ``y``, ``grad_state`` like the final state (None = 0). Returns None for an absent ``D``/``initial_state``.
    Where a decay fell below :data:`LOG_DECAY_FLOOR` the forward used 0, and so does the gradient.
    """
    with torch.no_grad():
        _, _, f = _forward(x, dt, A, B, C, D, initial_state, chunk_size)
        lay = f["lay"]
        batch, heads, head_dim, n_chunks = lay.batch, lay.heads, lay.head_dim, lay.n_chunks
        state_size = B.shape[-1]
        gy = lay.chunks(grad_y)  # (b, h, c, l, p)
        entering, from_start, Bc, Cc, xdt = f["entering"], f["from_start"], f["Bc"], f["Cc"], f["xdt"]

        # y += from_start * (C_l . H_c)
        gy_past = gy * from_start[..., None]
        dC = gy_past @ entering[:, :, :-1]  # (b, h, c, l, n)
        dH = gy_past.transpose(-1, -2) @ Cc  # (b, h, c, p, n)
        dcs = from_start * (gy * f["past"]).sum(-1)  # (b, h, c, l)

        # entering = across @ inputs: the transposed decay matrix carries gradients back to earlier chunks.
        if grad_state is None:
            grad_state = dH.new_zeros(batch, heads, head_dim, state_size)
        dH_all = torch.cat([dH, grad_state.to(lay.compute)[:, :, None]], dim=2).flatten(-2)
        dinputs = (f["across"].transpose(-1, -2) @ dH_all).view(batch, heads, n_chunks + 1, head_dim, state_size)
        d_state0, d_chunk_states = dinputs[:, :, 0], dinputs[:, :, 1:]
        # H_{c+1} = exp(total_c) H_c + S_c  =>  d total_c = exp(total_c) <dS_c, H_c>.
        chunk_decay = torch.diagonal(f["across"], offset=-1, dim1=-2, dim2=-1)  # (b, h, c)
        dcs[..., -1] += chunk_decay * (d_chunk_states * entering[:, :, :-1]).sum((-1, -2))

        # chunk_states = (xdt * to_end)^T B
        to_end = f["to_end"]
        xdt_end = xdt * to_end[..., None]
        dB = xdt_end @ d_chunk_states  # (b, h, c, l, n)
        d_xdt_end = Bc @ d_chunk_states.transpose(-1, -2)  # (b, h, c, l, p)
        dxdt = d_xdt_end * to_end[..., None]
        d_to_end = (d_xdt_end * xdt).sum(-1) * to_end  # d/d(cs_last - cs_l)
        dcs[..., -1] += d_to_end.sum(-1)
        dcs -= d_to_end

        # y = (gram * decay) @ xdt
        d_scores = gy @ xdt.transpose(-1, -2)  # (b, h, c, l, l)
        dxdt += f["scores"].transpose(-1, -2) @ gy
        d_gram = d_scores * f["decay"]
        dC += d_gram @ Bc
        dB += d_gram.transpose(-1, -2) @ Cc
        d_log = d_scores * f["scores"]  # d/d(cs_l - cs_s)
        dcs += d_log.sum(-1) - d_log.sum(-2)

        # cs = cumsum(dt * A): a reversed cumulative sum, then the product rule.
        d_log_decay = dcs.flip(-1).cumsum(-1).flip(-1)
        dtc, xc = f["dtc"], f["xc"]
        ddt = d_log_decay * A.to(lay.compute)[:, None, None] + (dxdt * xc).sum(-1)
        dA = (d_log_decay * dtc).sum((0, 2, 3))
        dx = lay.unchunk(dxdt * dtc[..., None])
        dD = None
        if D is not None:
            dx = dx + D.to(lay.compute)[:, None] * grad_y.to(lay.compute)
            dD = (grad_y.to(lay.compute) * x.to(lay.compute)).sum((0, 1, 3)).to(D.dtype)
        d_initial = None if initial_state is None else d_state0.to(initial_state.dtype)
        return (
            dx.to(x.dtype),
            lay.unchunk(ddt).to(dt.dtype),
            dA.to(A.dtype),
            lay.unchunk(dB).to(B.dtype),
            lay.unchunk(dC).to(C.dtype),
            dD,
            d_initial,
        )
