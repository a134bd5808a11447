"""Row gather (``out[b, i] = src[b, idx[b, i]]``) and its backward scatter-add, as NKI kernels.

Two gather routes (chosen by the caller, see :func:`gather_route`):

* ``"indirect"`` (the default on the kernel targets trn2 / trn3): one indirect DMA per 128 rows,
  ``src.ap(..., vector_offset=idx, indirect_dim=0)`` (SWDGE, NeuronCore-v3+). Moves only the selected rows.
* ``"onehot"`` (explicit fallback, ``BMOJO_NKI_GATHER_ROUTE=onehot``; also the interpreter's legacy trn1
  model, which has no indirect DMA): ``out = onehot^T @ src`` on the tensor engine, ``onehot[t, i] =
  (t == idx[i])`` built with one VectorE compare per tile. Reads all of ``src`` (O(seq x rows)). Exact: each
  output element is one product with 1.0 plus zeros (a NaN/Inf anywhere in the src column would spread).

The backward (scatter-add, duplicates accumulate) is the transposed one-hot matmul on every target:
``dma_compute`` scatter-add needs unique indices per tile, and memory indices repeat across chunks.
"""

from __future__ import annotations

from nki_kernels._nki import nisa, nki, nl

from ._tiles import GEMM_MOVING_FMAX, PMAX, check_tile_limits, work_range

ROUTES = ("indirect", "onehot")


def gather_route(target_name: str) -> str:
    """The gather route for a target: ``indirect`` on the kernel targets (trn2, trn3); ``onehot`` only on the
    legacy NeuronCore-v2 model (trn1), where current NKI has no indirect DMA."""
    return "onehot" if target_name == "trn1" else "indirect"


PRELOAD_BYTES = 64 * 1024  # per partition: a batch row's index and gradient tiles are loaded once if they fit
STORE_BYTES = 4096  # per partition: gathered row tiles are stored in groups this large (DMA guide: >= 2 KiB)


def _row_tiles(t, b: int, k0: int, kk: int):
    """``[PMAX, kk, F]`` pattern over rows ``(k0 + k) * PMAX + p`` of ``t[b]`` (``t``: (batch, n, F)), full tiles."""
    n = t.shape[1]
    F = t.shape[2]
    return t.ap([[F, PMAX], [PMAX * F, kk], [1, F]], offset=(b * n + k0 * PMAX) * F)


def _move_rows(tile, t, b: int, k0: int, kk: int, store: bool):
    """Load / store ``kk`` row tiles (the last may be partial) between ``tile [PMAX, >= kk, F]`` and ``t[b]``."""
    n = t.shape[1]
    F = t.shape[2]
    n_full = min(kk, (n - k0 * PMAX) // PMAX)
    if n_full > 0:
        hbm = _row_tiles(t, b, k0, n_full)
        if store:
            nisa.dma_copy(dst=hbm, src=tile[:, :n_full, :])
        else:
            nisa.dma_copy(dst=tile[:, :n_full, :], src=hbm)
    if n_full < kk:
        r = n - (k0 + n_full) * PMAX
        hbm = t.ap([[F, r], [1, F]], offset=(b * n + (k0 + n_full) * PMAX) * F)
        if store:
            nisa.dma_copy(dst=hbm, src=tile[:r, n_full, :])
        else:
            nisa.dma_copy(dst=tile[:r, n_full, :], src=hbm)


def _load_index_tiles(tile, idx, b: int):
    """``tile[p, k] = idx[b, k * PMAX + p]`` for all of a batch row's indices: one DMA (+1 for a partial tile)."""
    n = idx.shape[1]
    n_full = n // PMAX
    if n_full > 0:
        nisa.dma_copy(dst=tile[:, :n_full], src=idx.ap([[1, PMAX], [PMAX, n_full]], offset=b * n))
    if n_full * PMAX < n:
        r = n - n_full * PMAX
        nisa.dma_copy(dst=tile[:r, n_full : n_full + 1], src=idx.ap([[1, r], [1, 1]], offset=b * n + n_full * PMAX))


def _partition_index(rows: int, offset: int, name: str):
    """``[rows, 1]`` fp32 tile with ``offset + p`` on partition p."""
    col = nl.ndarray((rows, 1), nl.float32, name=name)
    nisa.iota(dst=col, pattern=[[0, 1]], offset=offset, channel_multiplier=1)
    return col


@nki.jit
def gather_rows_kernel(src, idx, route):
    """Args: src (batch, seq, F) fp32/bf16, idx (batch, n) int32 in [0, seq), route in ROUTES.
    Returns out (batch, n, F) in src.dtype (nl.shared_hbm)."""
    check_tile_limits(1)
    assert route == "indirect" or route == "onehot", "gather_rows kernel: route must be 'indirect' or 'onehot'"
    batch, seq, F = src.shape
    # LNC: batch rows are independent; each program (physical core) takes a contiguous block.
    b_lo, b_hi = work_range(batch)
    n = idx.shape[1]
    out = nl.ndarray((batch, n, F), src.dtype, buffer=nl.shared_hbm, name="out")
    n_tiles = (n + PMAX - 1) // PMAX
    if route == "indirect":
        flat = src.reshape((batch * seq, F))
        idx_all = nl.ndarray((PMAX, n_tiles), nl.int32, name="idx_all")
        group = max(1, min(n_tiles, STORE_BYTES // (F * src.dtype.itemsize)))  # row tiles per store
        rows_g = nl.ndarray((PMAX, group, F), src.dtype, name="rows_group")
        if n % PMAX != 0:  # the partial last tile's unused rows get defined values (the add below reads them)
            nisa.memset(dst=idx_all, value=0)
        for b in range(b_lo, b_hi):
            _load_index_tiles(idx_all, idx, b)  # one index load per batch row, not one per 128 rows
            if b > 0:  # rows of the flattened (batch * seq, F) source
                nisa.tensor_scalar(dst=idx_all, data=idx_all, op0=nl.add, operand0=float(b * seq))
            for k0 in range(0, n_tiles, group):
                kk = min(group, n_tiles - k0)
                for k in range(kk):
                    r = min(PMAX, n - (k0 + k) * PMAX)
                    nisa.dma_copy(
                        dst=rows_g[:r, k, :],
                        src=flat.ap(
                            [[F, r], [1, F]], offset=0, vector_offset=idx_all[:r, k0 + k : k0 + k + 1], indirect_dim=0
                        ),
                        dge_mode=nisa.dge_mode.swdge,
                    )
                _move_rows(rows_g, out, b, k0, kk, True)  # one store per group of row tiles
        return out

    mm = src.dtype
    idx_bc = nl.ndarray((PMAX, PMAX), nl.float32, name="idx_bcast")  # idx[i] on every partition
    onehot = nl.ndarray((PMAX, PMAX), mm, name="onehot")
    src_t = nl.ndarray((PMAX, GEMM_MOVING_FMAX), mm, name="src_t")
    out_t = nl.ndarray((PMAX, GEMM_MOVING_FMAX), src.dtype, name="out_t")
    acc = nl.ndarray((PMAX, GEMM_MOVING_FMAX), nl.float32, buffer=nl.psum, name="gather_psum")
    for b in range(b_lo, b_hi):
        for i0 in range(0, n, PMAX):
            r = min(PMAX, n - i0)
            nisa.dma_copy(dst=idx_bc[:, :r], src=idx.ap([[0, PMAX], [1, r]], offset=b * n + i0))
            for f0 in range(0, F, GEMM_MOVING_FMAX):
                fw = min(GEMM_MOVING_FMAX, F - f0)
                for t0 in range(0, seq, PMAX):
                    tt = min(PMAX, seq - t0)
                    pos = _partition_index(tt, t0, "pos")
                    nisa.tensor_scalar(dst=onehot[:tt, :r], data=idx_bc[:tt, :r], op0=nl.equal, operand0=pos)
                    nisa.dma_copy(dst=src_t[:tt, :fw], src=src[b, t0 : t0 + tt, f0 : f0 + fw])
                    nisa.nc_matmul(
                        dst=acc[:r, :fw],
                        stationary=onehot[:tt, :r],
                        moving=src_t[:tt, :fw],
                        is_stationary_onezero=True,
                        accumulate=t0 > 0,
                    )
                nisa.tensor_copy(dst=out_t[:r, :fw], src=acc[:r, :fw])
                nisa.dma_copy(dst=out[b, i0 : i0 + r, f0 : f0 + fw], src=out_t[:r, :fw])
    return out


@nki.jit
def scatter_add_rows_kernel(grad_out, idx, seq):
    """Backward of the gather: ``grad_src[b, t] = sum_{i: idx[b, i] == t} grad_out[b, i]``.

    Args: grad_out (batch, n, F) fp32/bf16, idx (batch, n) int32, seq (compile-time int).
    Returns grad_src (batch, seq, F) fp32 (nl.shared_hbm).
    """
    check_tile_limits(1)
    batch, n, F = grad_out.shape
    b_lo, b_hi = work_range(batch)  # LNC: batch rows are independent
    mm = grad_out.dtype
    grad_src = nl.ndarray((batch, seq, F), nl.float32, buffer=nl.shared_hbm, name="grad_src")
    t_row = nl.ndarray((PMAX, PMAX), nl.float32, name="t_row")  # t0 + f along the free axis
    idx_col = nl.ndarray((PMAX, 1), nl.float32, name="idx_col")
    onehot_t = nl.ndarray((PMAX, PMAX), mm, name="onehot_t")
    g_t = nl.ndarray((PMAX, GEMM_MOVING_FMAX), mm, name="grad_t")
    o_t = nl.ndarray((PMAX, GEMM_MOVING_FMAX), nl.float32, name="grad_src_t")
    acc = nl.ndarray((PMAX, GEMM_MOVING_FMAX), nl.float32, buffer=nl.psum, name="scatter_psum")
    n_tiles = (n + PMAX - 1) // PMAX
    # A batch row's indices and gradient rows are loaded once (not once per 128 source rows) when they fit.
    preload = n_tiles * (F * mm.itemsize + 4) <= PRELOAD_BYTES
    if preload:
        idx_all = nl.ndarray((PMAX, n_tiles), nl.float32, name="idx_all")
        g_all = nl.ndarray((PMAX, n_tiles, F), mm, name="grad_all")
    for b in range(b_lo, b_hi):
        if preload:
            _load_index_tiles(idx_all, idx, b)
            _move_rows(g_all, grad_out, b, 0, n_tiles, False)
        for t0 in range(0, seq, PMAX):
            tt = min(PMAX, seq - t0)
            nisa.iota(dst=t_row[:, :tt], pattern=[[1, tt]], offset=t0, channel_multiplier=0)
            for f0 in range(0, F, GEMM_MOVING_FMAX):
                fw = min(GEMM_MOVING_FMAX, F - f0)
                for i0 in range(0, n, PMAX):
                    r = min(PMAX, n - i0)
                    k = i0 // PMAX
                    if preload:
                        idx_c = idx_all[:r, k : k + 1]
                        g_c = g_all[:r, k, f0 : f0 + fw]
                    else:
                        idx_c = idx_col[:r]
                        g_c = g_t[:r, :fw]
                        nisa.dma_copy(dst=idx_c, src=idx.ap([[1, r], [1, 1]], offset=b * n + i0))
                        nisa.dma_copy(dst=g_c, src=grad_out[b, i0 : i0 + r, f0 : f0 + fw])
                    nisa.tensor_scalar(dst=onehot_t[:r, :tt], data=t_row[:r, :tt], op0=nl.equal, operand0=idx_c)
                    nisa.nc_matmul(
                        dst=acc[:tt, :fw],
                        stationary=onehot_t[:r, :tt],
                        moving=g_c,
                        is_stationary_onezero=True,
                        accumulate=i0 > 0,
                    )
                nisa.tensor_copy(dst=o_t[:tt, :fw], src=acc[:tt, :fw])
                nisa.dma_copy(dst=grad_src[b, t0 : t0 + tt, f0 : f0 + fw], src=o_t[:tt, :fw])
    return grad_src
