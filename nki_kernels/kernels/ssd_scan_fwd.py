"""Chunked SSD (Mamba-2) scan, forward, as an NKI kernel.

Per batch b and head h (P = head_dim, N = state size, L = chunk size), with ``a_t = exp(dt_t A)``:
``h_t = a_t h_{t-1} + dt_t x_t B_t^T`` (P x N) and ``y_t = h_t C_t + D x_t``.

Inside a chunk, with ``cs_t = sum_{r<=t} dt_r A`` (cumulative log-decay) and ``h0`` the state entering it:

    y_t   = sum_{s<=t} exp(cs_t - cs_s + log dt_s) (C_t . B_s) x_s  +  exp(cs_t) h0 C_t  +  D x_t
    h_end = exp(cs_L) h0 + sum_s dt_s exp(cs_L - cs_s) x_s B_s^T

Layout: a chunk's time steps on partitions. The intra-chunk term is two tensor-engine matmuls
(``G^T = B C^T`` contracting over the state, then ``y = (G^T * decay)^T x`` contracting over time); the
state ``h^T`` (N x P, fp32) is carried in SBUF from chunk to chunk. The per-chunk scalars (cumulative
sums by a triangular matmul, decays) are computed once per group of up to 512 chunks, one column per
chunk. The decay matrix ``exp(cs_t - cs_s + log dt_s)`` is built from a partition-broadcast of ``cs``
(a matmul with a ones matrix) and masked to ``s <= t`` on GpSimd. Matmul operands are in the input dtype
(bf16 or fp32), accumulation fp32 in PSUM; decays and the state are fp32.
Loops and transfers (issue 15): the chunks of a (batch, head) pair go in groups of ``G`` chunks whose
loads and stores are one DMA each (``G`` chosen so a transfer moves >= 2 KiB per partition). Full groups run
in a hardware loop, ``nl.fori_loop`` with step ``G L`` (SDK >= 2.32; the loop index is the group's start
time, used as the DMAs' ``scalar_offset``), so the program size does not grow with T; the last, partial
group is unrolled. Without ``nl.fori_loop`` (SDK <= 2.31) every group unrolls. The (batch, head) pairs
are unrolled and split over the LNC programs.
"""

from __future__ import annotations

import math

from nki_kernels._nki import DYNAMIC_LOOPS, nisa, nki, nl

from ._scan_common import BIAS, DA, DECAY, ECS, W, check_scan_shapes, chunk_columns, chunks_per_transfer, move_chunks
from ._tiles import (
    check_tile_limits,
    constant_tiles,
    psum_pool,
    psum_slot,
    work_range,
)

PSUM_BANKS = 5  # transpose bank + 2 pooled banks + chunk_columns' 2


@nki.jit
def ssd_scan_fwd_kernel(x, dt, A, B, C, D, initial_state, chunk_size):
    """Chunked selective scan forward.

    Args:
        x: (batch, seq, heads, P) fp32 or bf16 in HBM; dt: (batch, seq, heads) > 0; A: (heads,) < 0;
        B, C: (batch, seq, heads, N) same dtype as x; D: (heads,) or None;
        initial_state: (batch, heads, P, N) fp32 or None; chunk_size: L <= 128 (compile-time int).

    Returns:
        y (batch, seq, heads, P) in x.dtype and final_state (batch, heads, P, N) fp32, both nl.shared_hbm.
    """
    check_tile_limits(PSUM_BANKS)
    check_scan_shapes(x, B, chunk_size)
    batch, seq, heads, P = x.shape
    N = B.shape[3]
    L = chunk_size
    R = max(L, N)
    n_chunks = math.ceil(seq / L)
    mm = x.dtype  # matmul operand dtype
    G = chunks_per_transfer(P, 4 if mm == nl.float32 else 2, n_chunks)
    n_loop = (seq // L) // G  # full groups: the hardware loop
    tail = n_chunks - n_loop * G  # chunks left for the unrolled last group (the partial chunk among them)
    y = nl.ndarray(x.shape, x.dtype, buffer=nl.shared_hbm, name="y")
    final_state = nl.ndarray((batch, heads, P, N), nl.float32, buffer=nl.shared_hbm, name="final_state")

    tri, ones, ident = constant_tiles(L, R, mm)
    io, work, ps, pool = _working_tiles(L, G, P, N, mm, x.dtype)
    bT, cT, dab, decay_mat, m_t, y_inter, xs, hT, h_mm, d_ident, tr_ps, h_ps = work
    A_all, D_all = _head_constants(A, D, L, heads)
    # The state crosses HBM in its natural (P, N) layout (contiguous rows) and is transposed on the tensor
    # engine, instead of an element-granular permuted DMA.
    h_nat = nl.ndarray((P, N), nl.float32, name="state_PN")
    hT_ps = psum_slot(pool, 5, P, N)

    # LNC: the (batch, head) pairs are independent; each program (physical core) takes a contiguous block.
    w_lo, w_hi = work_range(batch * heads)
    for w in range(w_lo, w_hi):
        h = w // batch
        b = w % batch
        A_col = A_all[:, h : h + 1]
        if D is not None:
            nisa.tensor_scalar(dst=d_ident, data=ident, op0=nl.multiply, operand0=D_all[:, h : h + 1])
        _load_state(hT, h_nat, h_ps, initial_state, b, h)

        def group(t0, b=b, h=h, A_col=A_col):
            _group_forward(x, dt, B, C, y, b, h, t0, G, L, R, A_col, D is not None, tri, ones, io, work, ps)

        if DYNAMIC_LOOPS:
            nl.fori_loop(0, n_loop * G * L, group, step=G * L)  # index = the group's first time step
        else:
            for t0 in range(0, n_loop * G * L, G * L):
                group(t0)
        if tail > 0:
            _group_forward(
                x, dt, B, C, y, b, h, n_loop * G * L, tail, L, R, A_col, D is not None, tri, ones, io, work, ps
            )
        nisa.nc_transpose(dst=hT_ps, data=hT)
        nisa.tensor_copy(dst=h_nat, src=hT_ps)
        nisa.dma_copy(dst=final_state[b, h], src=h_nat)
    return y, final_state


def _working_tiles(L: int, G: int, P: int, N: int, mm, out_dtype):
    """The SBUF and PSUM tiles of the scan, allocated once and reused by every group (see the interpreter's
    allocator notes): ``io`` (group tiles), ``work`` (per-chunk tiles, as :func:`_group_forward` unpacks them),
    ``ps`` (the pooled PSUM results) and the PSUM pool itself."""
    x_g = nl.ndarray((L, G, P), mm, name="x_group")
    b_g = nl.ndarray((L, G, N), mm, name="b_group")
    c_g = nl.ndarray((L, G, N), mm, name="c_group")
    y_g = nl.ndarray((L, G, P), out_dtype, name="y_group")
    bT = nl.ndarray((N, L), mm, name="bT")
    cT = nl.ndarray((N, L), mm, name="cT")
    dab = nl.ndarray((L, L), nl.float32, name="dA_bcast")
    decay_mat = nl.ndarray((L, L), nl.float32, name="decay_mat")
    m_t = nl.ndarray((L, L), mm, name="m_t")
    y_inter = nl.ndarray((L, P), nl.float32, name="y_inter")
    xs = nl.ndarray((L, P), mm, name="x_scaled")
    hT = nl.ndarray((N, P), nl.float32, name="state_T")
    h_mm = hT
    if mm != nl.float32:
        h_mm = nl.ndarray((N, P), mm, name="state_T_mm")
    d_ident = nl.ndarray((L, L), mm, name="d_ident")
    # PSUM: the transposes (input dtype) take one bank, the five fp32 results share two banks as slots,
    # chunk_columns takes two more: 5 of the 7 usable banks.
    tr_ps = nl.ndarray((N, L), mm, buffer=nl.psum, name="transpose_psum")
    pool = psum_pool(2, "scan_fwd_psum")
    ps = (psum_slot(pool, 0, L, L), psum_slot(pool, 1, L, L), psum_slot(pool, 2, L, P), psum_slot(pool, 3, L, P))
    h_ps = psum_slot(pool, 4, N, P)
    io = (x_g, b_g, c_g, y_g)
    work = (bT, cT, dab, decay_mat, m_t, y_inter, xs, hT, h_mm, d_ident, tr_ps, h_ps)
    return io, work, ps, pool


def _head_constants(A, D, L: int, heads: int):
    """A and D of every head on every row (one transfer each per launch, not one per pair); D's tile is A's
    when there is no D."""
    A_all = nl.ndarray((L, heads), nl.float32, name="A_all")
    nisa.dma_copy(dst=A_all, src=A.ap([[0, L], [1, heads]], offset=0))
    D_all = A_all
    if D is not None:
        D_all = nl.ndarray((L, heads), nl.float32, name="D_all")
        nisa.dma_copy(dst=D_all, src=D.ap([[0, L], [1, heads]], offset=0))
    return A_all, D_all


def _load_state(hT, h_nat, h_ps, initial_state, b: int, h: int) -> None:
    """The state entering the first chunk of pair (b, h), transposed into ``hT`` (zeros without one)."""
    if initial_state is None:
        nisa.memset(dst=hT, value=0.0)
    else:
        nisa.dma_copy(dst=h_nat, src=initial_state[b, h])
        nisa.nc_transpose(dst=h_ps, data=h_nat)
        nisa.tensor_copy(dst=hT, src=h_ps)


def _group_forward(x, dt, B, C, y, b, h, t0, n_cols, L, R, A_col, has_d, tri, ones, io, work, ps):
    """``n_cols`` chunks from time ``t0`` (int, or the loop register: then all chunks are full): one load per
    input, the chunks one after another (the state hT carries between them), one store of y."""
    x_g, b_g, c_g, y_g = io
    bT, cT, dab, decay_mat, m_t, y_inter, xs, hT, h_mm, d_ident, tr_ps, h_ps = work
    csb_ps, g_ps, y_ps, yi_ps = ps
    seq = x.shape[1]
    N = B.shape[3]
    mm = x_g.dtype
    move_chunks(x_g, x, b, h, t0, n_cols, L, False)
    move_chunks(b_g, B, b, h, t0, n_cols, L, False)
    move_chunks(c_g, C, b, h, t0, n_cols, L, False)
    cols = chunk_columns(dt, A_col, b, h, t0, n_cols, L, R, tri, ones)
    dA = cols[DA]
    bias = cols[BIAS]
    ecs = cols[ECS]
    wcol = cols[W]
    decay = cols[DECAY]
    for j in range(n_cols):
        n = L
        if isinstance(t0, int):
            n = min(L, seq - t0 - j * L)  # rows of this chunk (the last one may be partial)
        x_c = x_g[:n, j, :]
        b_c = b_g[:n, j, :]
        c_c = c_g[:n, j, :]
        nisa.nc_transpose(dst=tr_ps[:, :n], data=b_c)
        nisa.activation(dst=bT[:, :n], op=nl.copy, data=tr_ps[:, :n])
        nisa.nc_transpose(dst=tr_ps[:, :n], data=c_c)
        nisa.tensor_copy(dst=cT[:, :n], src=tr_ps[:, :n])
        # decay_mat[s, t] = exp(cs_t - cs_s + log dt_s) for s <= t, else 0 (tri is 0/1: a one/zero hint)
        nisa.activation(dst=dab[:n, :n], op=nl.copy, data=ones[:n, :n], scale=dA[:n, j : j + 1])
        nisa.nc_matmul(
            dst=csb_ps[:n, :n], stationary=dab[:n, :n], moving=tri[:n, :n], is_moving_onezero=True, accumulate=False
        )
        nisa.activation(dst=decay_mat[:n, :n], op=nl.exp, data=csb_ps[:n, :n], bias=bias[:n, j : j + 1])
        nisa.affine_select(
            dst=decay_mat[:n, :n],
            pattern=[[1, n]],
            channel_multiplier=-1,
            on_true_tile=decay_mat[:n, :n],
            on_false_value=0.0,
            cmp_op=nl.greater_equal,
        )
        # intra-chunk: y = (G^T * decay)^T x (+ D x), G^T[s, t] = B_s . C_t
        nisa.nc_matmul(dst=g_ps[:n, :n], stationary=bT[:, :n], moving=cT[:, :n], accumulate=False)
        nisa.tensor_tensor(dst=m_t[:n, :n], data1=g_ps[:n, :n], data2=decay_mat[:n, :n], op=nl.multiply)
        nisa.nc_matmul(dst=y_ps[:n], stationary=m_t[:n, :n], moving=x_c, accumulate=False)
        if has_d:
            nisa.nc_matmul(dst=y_ps[:n], stationary=d_ident[:n, :n], moving=x_c, accumulate=True)
        # inter-chunk: exp(cs_t) C_t h0
        if mm != nl.float32:
            nisa.tensor_copy(dst=h_mm, src=hT)
        nisa.nc_matmul(dst=yi_ps[:n], stationary=cT[:, :n], moving=h_mm, accumulate=False)
        nisa.activation(dst=y_inter[:n], op=nl.copy, data=yi_ps[:n], scale=ecs[:n, j : j + 1])
        nisa.tensor_tensor(dst=y_g[:n, j, :], data1=y_ps[:n], data2=y_inter[:n], op=nl.add)
        # state: h^T <- exp(cs_last) h^T + B^T (w x), w_s = dt_s exp(cs_last - cs_s)
        nisa.activation(dst=xs[:n], op=nl.copy, data=x_c, scale=wcol[:n, j : j + 1])
        nisa.nc_matmul(dst=h_ps, stationary=b_c, moving=xs[:n], accumulate=False)
        nisa.scalar_tensor_tensor(
            dst=hT, data=hT, op0=nl.multiply, operand0=decay[:N, j : j + 1], op1=nl.add, operand1=h_ps
        )
    move_chunks(y_g, y, b, h, t0, n_cols, L, True)
