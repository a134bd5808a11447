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
    if route == "indirect":
        flat = src.reshape((batch * seq, F))
        idx_t = nl.ndarray((PMAX, 1), nl.int32, name="idx_t")
        rows_t = nl.ndarray((PMAX, F), src.dtype, name="rows_t")
        for b in range(b_lo, b_hi):
            for i0 in range(0, n, PMAX):
                r = min(PMAX, n - i0)
                nisa.dma_copy(dst=idx_t[:r], src=idx.ap([[1, r], [1, 1]], offset=b * n + i0))
                if b > 0:  # row of the flattened (batch * seq, F) source
                    nisa.tensor_scalar(dst=idx_t[:r], data=idx_t[:r], op0=nl.add, operand0=float(b * seq))
                nisa.dma_copy(
                    dst=rows_t[:r],
                    src=flat.ap([[F, r], [1, F]], offset=0, vector_offset=idx_t[:r], indirect_dim=0),
                    dge_mode=nisa.dge_mode.swdge,
                )
                nisa.dma_copy(dst=out[b, i0 : i0 + r, :], src=rows_t[:r])
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
    for b in range(b_lo, b_hi):
        for t0 in range(0, seq, PMAX):
            tt = min(PMAX, seq - t0)
            nisa.iota(dst=t_row[:, :tt], pattern=[[1, tt]], offset=t0, channel_multiplier=0)
            for f0 in range(0, F, GEMM_MOVING_FMAX):
                fw = min(GEMM_MOVING_FMAX, F - f0)
                for i0 in range(0, n, PMAX):
                    r = min(PMAX, n - i0)
                    nisa.dma_copy(dst=idx_col[:r], src=idx.ap([[1, r], [1, 1]], offset=b * n + i0))
                    nisa.tensor_scalar(dst=onehot_t[:r, :tt], data=t_row[:r, :tt], op0=nl.equal, operand0=idx_col[:r])
                    nisa.dma_copy(dst=g_t[:r, :fw], src=grad_out[b, i0 : i0 + r, f0 : f0 + fw])
                    nisa.nc_matmul(
                        dst=acc[:tt, :fw],
                        stationary=onehot_t[:r, :tt],
                        moving=g_t[:r, :fw],
                        is_stationary_onezero=True,
                        accumulate=i0 > 0,
                    )
                nisa.tensor_copy(dst=o_t[:tt, :fw], src=acc[:tt, :fw])
                nisa.dma_copy(dst=grad_src[b, t0 : t0 + tt, f0 : f0 + fw], src=o_t[:tt, :fw])
    return grad_src
