"""Pieces shared by the SSD scan kernels: shape checks and the per-chunk scalar columns."""

from __future__ import annotations

from nki_kernels._nki import nisa, nl

from ._tiles import MAX_CHUNK, MAX_HEAD_DIM, MAX_STATE

# Positions in the tuple chunk_columns returns (NKI kernels have no dict literals in the parsing front end).
DT, DA, BIAS, ECS, W, DECAY, NEGCS, U = 0, 1, 2, 3, 4, 5, 6, 7


def check_scan_shapes(x, B, chunk_size: int):
    """Trace-time shape checks (the host wrappers check the same with clear ValueErrors first)."""
    assert 1 <= chunk_size, "ssd scan kernel: chunk_size must be >= 1"
    assert chunk_size <= MAX_CHUNK, "ssd scan kernel: chunk_size above 128 (the chunk lies on partitions)"
    assert x.shape[3] <= MAX_HEAD_DIM, "ssd scan kernel: head_dim above 128"
    assert B.shape[3] <= MAX_STATE, "ssd scan kernel: state size above 128"


def chunk_columns(dt, A_col, b: int, h: int, c0: int, n_cols: int, L: int, R: int, tri, ones, backward=False):
    """Per-chunk scalars of chunks ``c0 .. c0 + n_cols - 1`` as ``[L, n_cols]`` fp32 columns (row s of column j
    belongs to time ``(c0 + j) L + s``), as a tuple indexed by ``DT .. U``:

    ``dt``; ``dA = dt A``; ``bias = log dt - cs`` with ``cs`` the inclusive cumulative sum of dA in the chunk;
    ``ecs = exp(cs)``; ``w = dt exp(cs_last - cs)``; ``decay [R, n_cols] = exp(cs_last)`` on every row; and
    with ``backward``: ``negcs = -cs`` and ``u = exp(cs_last - cs)`` (else None).
    Rows past the end of the sequence hold dt = 0, so they add nothing to any sum; ``log`` reads dt with those
    rows set to 1, so every ScalarE log input stays inside its valid range [2^-64, 2^64] (no consumer reads
    the padding rows of ``bias`` / ``w``).
    """
    batch, seq, heads = dt.shape
    t0 = c0 * L
    dt_cols = nl.ndarray((L, n_cols), nl.float32, name="dt_cols")
    n_full = min(n_cols, (seq - t0) // L)
    if n_full < n_cols:  # the group holds the partial last chunk: pad with dt = 0
        nisa.memset(dst=dt_cols, value=0.0)
    base = (b * seq + t0) * heads + h
    if n_full > 0:  # element (s, j) = dt[b, t0 + j L + s, h]
        nisa.dma_copy(dst=dt_cols[:, :n_full], src=dt.ap([[heads, L], [L * heads, n_full]], offset=base))
    if n_full < n_cols:
        rows = seq - t0 - n_full * L
        nisa.dma_copy(
            dst=dt_cols[:rows, n_full : n_full + 1],
            src=dt.ap([[heads, rows], [1, 1]], offset=base + n_full * L * heads),
        )
    dA = nl.ndarray((L, n_cols), nl.float32, name="dA_cols")
    nisa.activation(dst=dA, op=nl.copy, data=dt_cols, scale=A_col)
    cs = nl.ndarray((L, n_cols), nl.float32, buffer=nl.psum, name="cs_psum")
    nisa.nc_matmul(dst=cs, stationary=tri, moving=dA, accumulate=False)  # cs[t] = sum_{s<=t} dA[s]
    last = nl.ndarray((R, n_cols), nl.float32, buffer=nl.psum, name="cs_last_psum")
    nisa.nc_matmul(dst=last, stationary=ones[:L, :R], moving=dA, accumulate=False)  # sum_s dA[s], every row
    bias = nl.ndarray((L, n_cols), nl.float32, name="bias_cols")
    log_in = dt_cols
    if n_full < n_cols:  # log reads (dt == 0) + dt: 1 on the padding rows, dt elsewhere
        log_in = bias
        nisa.scalar_tensor_tensor(dst=log_in, data=dt_cols, op0=nl.equal, operand0=0.0, op1=nl.add, operand1=dt_cols)
    nisa.activation(dst=bias, op=nl.log, data=log_in)
    nisa.tensor_tensor(dst=bias, data1=bias, data2=cs, op=nl.subtract)
    ecs = nl.ndarray((L, n_cols), nl.float32, name="ecs_cols")
    nisa.activation(dst=ecs, op=nl.exp, data=cs)
    w = nl.ndarray((L, n_cols), nl.float32, name="w_cols")
    nisa.tensor_tensor(dst=w, data1=last[:L], data2=bias, op=nl.add)
    nisa.activation(dst=w, op=nl.exp, data=w)
    decay = nl.ndarray((R, n_cols), nl.float32, name="decay_cols")
    nisa.activation(dst=decay, op=nl.exp, data=last)
    negcs = None
    u = None
    if backward:
        negcs = nl.ndarray((L, n_cols), nl.float32, name="negcs_cols")
        nisa.activation(dst=negcs, op=nl.copy, data=cs, scale=-1.0)
        u = nl.ndarray((L, n_cols), nl.float32, name="u_cols")
        nisa.tensor_tensor(dst=u, data1=last[:L], data2=negcs, op=nl.add)  # not both in PSUM
        nisa.activation(dst=u, op=nl.exp, data=u)
    return (dt_cols, dA, bias, ecs, w, decay, negcs, u)
