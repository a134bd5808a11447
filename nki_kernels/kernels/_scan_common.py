"""Pieces shared by the SSD scan kernels: shape checks and the per-chunk scalar columns."""

from __future__ import annotations

from nki_kernels._nki import nisa, nl

from ._tiles import CHUNK_GROUP, MAX_CHUNK, MAX_HEAD_DIM, MAX_STATE

DMA_MIN_BYTES_PER_PARTITION = 2048  # NKI DMA bandwidth guide: >= 2 KiB per partition approaches peak

# Positions in the tuple chunk_columns returns (NKI kernels have no dict literals in the parsing front end).
DT, DA, BIAS, ECS, W, DECAY, NEGCS, U = 0, 1, 2, 3, 4, 5, 6, 7


def check_scan_shapes(x, B, chunk_size: int):
    """Trace-time shape checks (the host wrappers check the same with clear ValueErrors first)."""
    assert 1 <= chunk_size, "ssd scan kernel: chunk_size must be >= 1"
    assert chunk_size <= MAX_CHUNK, "ssd scan kernel: chunk_size above 128 (the chunk lies on partitions)"
    assert x.shape[3] <= MAX_HEAD_DIM, "ssd scan kernel: head_dim above 128"
    assert B.shape[3] <= MAX_STATE, "ssd scan kernel: state size above 128"


def chunks_per_transfer(width: int, itemsize: int, n_chunks: int) -> int:
    """Chunks per DMA so a transfer of ``width`` elements per time step moves >= 2 KiB per partition (the DMA
    guide's minimum for near-peak bandwidth), at most one PSUM bank's worth of columns and the sequence."""
    per_chunk = width * itemsize
    g = (DMA_MIN_BYTES_PER_PARTITION + per_chunk - 1) // per_chunk
    return max(1, min(g, CHUNK_GROUP, n_chunks))


def _time_ap(t, pattern, base: int, t0, step: int):
    """``t.ap(pattern)`` starting at time ``t0`` (dim 1 of ``t``, ``step`` elements per time step): a static
    offset for an int, ``scalar_offset`` for a loop register (NKI adds ``t0 * prod(shape[2:])``)."""
    if isinstance(t0, int):
        return t.ap(pattern, offset=base + t0 * step)
    return t.ap(pattern, offset=base, scalar_offset=t0, indirect_dim=1)


def chunk_rows_ap(t, b: int, h: int, t0, n_cols: int, L: int):
    """``(batch, seq, heads, W)`` HBM rows of ``n_cols`` full chunks from time ``t0`` as an ``[L, n_cols, W]``
    pattern: element (s, j, w) = ``t[b, t0 + j L + s, h, w]``; one DMA moves all the chunks."""
    batch, seq, heads, W = t.shape
    base = (b * seq * heads + h) * W
    return _time_ap(t, [[heads * W, L], [L * heads * W, n_cols], [1, W]], base, t0, heads * W)


def move_chunks(tile, t, b: int, h: int, t0, n_cols: int, L: int, store: bool):
    """Load (``store=False``) or store the ``[L, n_cols, W]`` SBUF ``tile`` from / to chunks of ``t``: one DMA for
    the full chunks, one more for a partial last chunk (static ``t0`` only)."""
    seq = t.shape[1]
    heads = t.shape[2]
    W = t.shape[3]
    n_full = n_cols
    if isinstance(t0, int):
        n_full = min(n_cols, (seq - t0) // L)
    if n_full > 0:
        hbm = chunk_rows_ap(t, b, h, t0, n_full, L)
        if store:
            nisa.dma_copy(dst=hbm, src=tile[:, :n_full, :])
        else:
            nisa.dma_copy(dst=tile[:, :n_full, :], src=hbm)
    if n_full < n_cols:
        rows = seq - t0 - n_full * L
        base = (b * seq * heads + h) * W + (t0 + n_full * L) * heads * W
        hbm = t.ap([[heads * W, rows], [1, W]], offset=base)
        if store:
            nisa.dma_copy(dst=hbm, src=tile[:rows, n_full, :])
        else:
            nisa.dma_copy(dst=tile[:rows, n_full, :], src=hbm)


def move_time_cols(tile, t, b: int, h: int, t0, n_cols: int, L: int, store: bool):
    """Load or store an ``[L, n_cols]`` tile from / to a ``(batch, seq, heads)`` tensor: element (s, j) is
    ``t[b, t0 + j L + s, h]``. One DMA for the full chunks, one more for a partial last chunk."""
    seq = t.shape[1]
    heads = t.shape[2]
    base = b * seq * heads + h
    n_full = n_cols
    if isinstance(t0, int):
        n_full = min(n_cols, (seq - t0) // L)
    if n_full > 0:
        hbm = _time_ap(t, [[heads, L], [L * heads, n_full]], base, t0, heads)
        if store:
            nisa.dma_copy(dst=hbm, src=tile[:, :n_full])
        else:
            nisa.dma_copy(dst=tile[:, :n_full], src=hbm)
    if n_full < n_cols:
        rows = seq - t0 - n_full * L
        hbm = t.ap([[heads, rows], [1, 1]], offset=base + (t0 + n_full * L) * heads)
        if store:
            nisa.dma_copy(dst=hbm, src=tile[:rows, n_full : n_full + 1])
        else:
            nisa.dma_copy(dst=tile[:rows, n_full : n_full + 1], src=hbm)


def chunk_columns(dt, A_col, b: int, h: int, t0, n_cols: int, L: int, R: int, tri, ones, backward=False):
    """Per-chunk scalars of the ``n_cols`` chunks starting at time ``t0`` (an int, or a loop register inside
    ``nl.fori_loop``, then every chunk is full) as ``[L, n_cols]`` fp32 columns (row s of column j belongs to
    time ``t0 + j L + s``), as a tuple indexed by ``DT .. U``:

    ``dt``; ``dA = dt A``; ``bias = log dt - cs`` with ``cs`` the inclusive cumulative sum of dA in the chunk;
    ``ecs = exp(cs)``; ``w = dt exp(cs_last - cs)``; ``decay [R, n_cols] = exp(cs_last)`` on every row; and
    with ``backward``: ``negcs = -cs`` and ``u = exp(cs_last - cs)`` (else None).
    Rows past the end of the sequence hold dt = 0, so they add nothing to any sum; ``log`` reads dt with those
    rows set to 1, so every ScalarE log input stays inside its valid range [2^-64, 2^64] (no consumer reads
    the padding rows of ``bias`` / ``w``).
    """
    batch, seq, heads = dt.shape
    dt_cols = nl.ndarray((L, n_cols), nl.float32, name="dt_cols")
    n_full = n_cols
    if isinstance(t0, int):
        n_full = min(n_cols, (seq - t0) // L)
    if n_full < n_cols:  # the group holds the partial last chunk: pad with dt = 0
        nisa.memset(dst=dt_cols, value=0.0)
    move_time_cols(dt_cols, dt, b, h, t0, n_cols, L, False)  # element (s, j) = dt[b, t0 + j L + s, h]
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
