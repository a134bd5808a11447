"""Chunked SSD (Mamba-2) scan, backward, as an NKI kernel: the adjoint scan in reverse chunk order.

Notation per (b, h) and chunk (rows s, t, u in the chunk; ``cs`` inclusive cumulative sum of ``dt A``;
``h0`` the state entering the chunk, ``Gc`` the gradient w.r.t. the state leaving it; the gradient
w.r.t. ``h_t`` is ``g_t = sum_{u>=t} e^{cs_u-cs_t} dy_u C_u^T + e^{cs_L-cs_t} Gc``):

    dx_s  = dt_s g_s B_s + D dy_s          g_s B_s = sum_{t>=s} e^{cs_t-cs_s} (C_t.B_s) dy_t + e^{cs_L-cs_s} Gc B_s
    dB_s  = dt_s g_s^T x_s                 = dt_s sum_{t>=s} e^{cs_t-cs_s} (dy_t.x_s) C_t + dt_s e^{cs_L-cs_s} Gc^T x_s
    dC_t  = h_t^T dy_t                     = sum_{s<=t} e^{cs_t-cs_s} dt_s (dy_t.x_s) B_s + e^{cs_t} h0^T dy_t
    Gc   <- e^{cs_L} Gc + sum_u e^{cs_u} dy_u C_u^T       (gradient w.r.t. h0, carried to the previous chunk)

The log-decays get ``d cs_u`` from every factor ``exp(cs_t - cs_s)``, ``exp(cs_t)``, ``exp(cs_L)`` (row sums
minus column sums of ``W[t, s] = e^{cs_t-cs_s} dt_s (C_t.B_s)(dy_t.x_s)``, plus ``e^{cs_u} dy_u.(h0 C_u)``,
plus the state terms), and ``d dA_r = sum_{u>=r} d cs_u`` (a reverse cumulative sum: a triangular matmul).
Then ``d dt_t = x_t.(g_t B_t) + A d dA_t``, ``dA = sum_t dt_t d dA_t``, ``dD = sum_t x_t.dy_t``.

A first pass re-runs the state recurrence and stores every chunk's entering state in an HBM scratch
tensor; the second pass walks the chunks backwards. Everything is fp32 (bf16 inputs are upcast on load);
all gradients are returned in fp32.
"""

from __future__ import annotations

import math

from nki_kernels._nki import DYNAMIC_LOOPS, nisa, nki, nl

from ._scan_common import (
    DA,
    DECAY,
    DT,
    ECS,
    NEGCS,
    U,
    W,
    check_scan_shapes,
    chunk_columns,
    chunks_per_transfer,
    move_chunks,
    move_time_cols,
)
from ._tiles import broadcast_scalar, check_tile_limits, constant_tiles, psum_pool, psum_slot, work_range

PSUM_POOL_BANKS = 4  # banks of small matmul results (16 slots); chunk_columns takes 2 more
PSUM_BANKS = PSUM_POOL_BANKS + 2
# Columns of the [L, N_COLT] per-row scratch tile (one tile instead of a dict of [L, 1] tiles).
XGB_INTRA, XGBI, Z, DDT_DIRECT, DCS, V, TMP, N_COLT = 0, 1, 2, 3, 4, 5, 6, 7


def _slot(pool, k: int, rows: int, cols: int):
    return psum_slot(pool, k, rows, cols)


def _transpose_to(dst, src, ps):
    """``dst[F, P] = src[P, F]`` through the tensor engine (PSUM) and a VectorE copy back to SBUF."""
    nisa.nc_transpose(dst=ps, data=src)
    nisa.tensor_copy(dst=dst, src=ps)


def _row_dot(dst, a, b, tmp):
    """``dst[p, 0] = sum_f a[p, f] * b[p, f]`` (VectorE multiply then add-reduce)."""
    nisa.tensor_tensor(dst=tmp, data1=a, data2=b, op=nl.multiply)
    nisa.tensor_reduce(dst=dst, op=nl.add, data=tmp, axis=1)


@nki.jit
def ssd_scan_bwd_kernel(x, dt, A, B, C, D, initial_state, grad_y, grad_final_state, chunk_size):
    """Gradients of :func:`ssd_scan_fwd_kernel`.

    Args: the forward inputs (shapes as there), ``grad_y`` (batch, seq, heads, P), ``grad_final_state``
    (batch, heads, P, N) fp32 or None, ``chunk_size`` L <= 128.

    Returns (all fp32, nl.shared_hbm): dx (batch, seq, heads, P), ddt (batch, seq, heads), dA (heads,),
    dB, dC (batch, seq, heads, N), dD (heads,) (x.dy summed; meaningful only when D is given),
    d_initial_state (batch, heads, P, N).
    """
    check_tile_limits(PSUM_BANKS)
    check_scan_shapes(x, B, chunk_size)
    batch, seq, heads, P = x.shape
    N = B.shape[3]
    L = chunk_size
    R = max(L, N, P)
    n_chunks = math.ceil(seq / L)
    f32 = nl.float32
    dx, ddt, dA_out, dB, dC, dD_out, dh0, states = _gradient_outputs(x, dt, B, C, n_chunks)

    tri, ones, _ = constant_tiles(R, R, f32)
    tri_low = _lower_triangle(ones, L)
    tri = tri[:L, :L]
    ps = psum_pool(PSUM_POOL_BANKS, "scan_bwd_psum")
    G = chunks_per_transfer(P, 4, n_chunks)
    n_loop = (seq // L) // G  # full groups: hardware loops (forward for the states, reverse for the adjoint)
    tail = n_chunks - n_loop * G  # the last, unrolled group (holds the partial chunk, if any)
    io = _group_tiles(L, G, P, N)
    tiles, h = _chunk_tiles(L, P, N)
    xT, dyT, bT, cT, g, gT, dab, e_s, mg_t, r_t, wn_t, mg, r_, lp, lp2, ln, ln2, pn, col, s0, acc_dA, acc_dD = tiles
    d_col = nl.ndarray((L, 1), f32, name="D_col")
    out11 = nl.ndarray((1, 1), f32, name="scalar_out")
    consts = (tri, tri_low, ones)
    ins = (x, dt, B, C, grad_y, states)
    outs = (dx, ddt, dB, dC)
    groups = (G, n_loop, tail)

    # LNC: heads are independent (dA[h] and dD[h] sum over the batch, so a head stays on one program);
    # each program (physical core) takes a contiguous block of heads.
    h_lo, h_hi = work_range(heads)
    for hh in range(h_lo, h_hi):
        A_col = broadcast_scalar(A, hh, R, "A_col")
        if D is not None:
            nisa.dma_copy(dst=d_col, src=D.ap([[0, L], [1, 1]], offset=hh))
        nisa.memset(dst=acc_dA, value=0.0)
        nisa.memset(dst=acc_dD, value=0.0)
        for b in range(batch):
            _row_backward(
                ins, outs, initial_state, grad_final_state, dh0, b, hh, groups, L, R, A_col, d_col, D is not None,
                consts, io, ps, tiles, h, P, N,
            )  # fmt: skip
        # dA[h] = sum_t dt_t d dA_t, dD[h] = sum_t x_t . dy_t: partition sums by a ones matmul
        _partition_sum(acc_dA, dA_out, hh, ones, out11, ps, L)
        _partition_sum(acc_dD, dD_out, hh, ones, out11, ps, L)
    return dx, ddt, dA_out, dB, dC, dD_out, dh0


def _gradient_outputs(x, dt, B, C, n_chunks: int):
    """The kernel's outputs (fp32, shared HBM) and the per-core scratch of every chunk's entering state."""
    batch, seq, heads, P = x.shape
    N = B.shape[3]
    f32 = nl.float32
    dx = nl.ndarray(x.shape, f32, buffer=nl.shared_hbm, name="dx")
    ddt = nl.ndarray(dt.shape, f32, buffer=nl.shared_hbm, name="ddt")
    dA_out = nl.ndarray((heads,), f32, buffer=nl.shared_hbm, name="dA")
    dB = nl.ndarray(B.shape, f32, buffer=nl.shared_hbm, name="dB")
    dC = nl.ndarray(C.shape, f32, buffer=nl.shared_hbm, name="dC")
    dD_out = nl.ndarray((heads,), f32, buffer=nl.shared_hbm, name="dD")
    dh0 = nl.ndarray((batch, heads, P, N), f32, buffer=nl.shared_hbm, name="d_initial_state")
    states = nl.ndarray((n_chunks, P, N), f32, buffer=nl.private_hbm, name="chunk_states")  # per-core scratch
    return dx, ddt, dA_out, dB, dC, dD_out, dh0, states


def _lower_triangle(ones, L: int):
    """``[u, r] = 1 if u >= r``: the stationary operand of reverse cumulative sums."""
    tri_low = nl.ndarray((L, L), nl.float32, name="tri_low")
    nisa.affine_select(
        dst=tri_low,
        pattern=[[1, L]],
        channel_multiplier=-1,
        on_true_tile=ones[:L, :L],
        on_false_value=0.0,
        cmp_op=nl.less_equal,
    )
    return tri_low


def _group_tiles(L: int, G: int, P: int, N: int):
    """Group tiles: one DMA per input / output per group of G chunks (as :func:`_adjoint_group` unpacks them)."""
    f32 = nl.float32
    x_g, dy_g = nl.ndarray((L, G, P), f32, name="x_group"), nl.ndarray((L, G, P), f32, name="dy_group")
    b_g, c_g = nl.ndarray((L, G, N), f32, name="b_group"), nl.ndarray((L, G, N), f32, name="c_group")
    dx_g = nl.ndarray((L, G, P), f32, name="dx_group")
    db_g, dc_g = nl.ndarray((L, G, N), f32, name="dB_group"), nl.ndarray((L, G, N), f32, name="dC_group")
    ddt_g = nl.ndarray((L, G), f32, name="ddt_group")
    st_g = nl.ndarray((P, G, N), f32, name="states_group")
    return x_g, dy_g, b_g, c_g, dx_g, db_g, dc_g, ddt_g, st_g


def _chunk_tiles(L: int, P: int, N: int):
    """SBUF working tiles, reused by every chunk (as :func:`_chunk_backward` unpacks them), and the state tile ``h``
    of pass 1."""
    f32 = nl.float32
    xT, dyT = nl.ndarray((P, L), f32, name="xT"), nl.ndarray((P, L), f32, name="dyT")
    bT, cT = nl.ndarray((N, L), f32, name="bT"), nl.ndarray((N, L), f32, name="cT")
    h, g, gT = nl.ndarray((P, N), f32, name="h"), nl.ndarray((P, N), f32, name="g"), nl.ndarray((N, P), f32, name="gT")
    dab, e_s = nl.ndarray((L, L), f32, name="dA_bcast"), nl.ndarray((L, L), f32, name="decay_nodt")
    mg_t = nl.ndarray((L, L), f32, name="mgT")
    r_t = nl.ndarray((L, L), f32, name="rT")
    wn_t = nl.ndarray((L, L), f32, name="wnT")
    mg, r_ = nl.ndarray((L, L), f32, name="mg"), nl.ndarray((L, L), f32, name="r")
    lp = nl.ndarray((L, P), f32, name="lp")
    lp2 = nl.ndarray((L, P), f32, name="lp2")
    ln = nl.ndarray((L, N), f32, name="ln")
    ln2 = nl.ndarray((L, N), f32, name="ln2")
    pn = nl.ndarray((P, N), f32, name="pn")
    col = nl.ndarray((L, N_COLT), f32, name="row_scratch")
    s0 = nl.ndarray((P, 1), f32, name="s0")
    acc_dA, acc_dD = nl.ndarray((L, 1), f32, name="acc_dA"), nl.ndarray((L, 1), f32, name="acc_dD")
    return (xT, dyT, bT, cT, g, gT, dab, e_s, mg_t, r_t, wn_t, mg, r_, lp, lp2, ln, ln2, pn, col, s0, acc_dA, acc_dD), h


def _row_backward(
    ins, outs, initial_state, grad_final_state, dh0, b, hh, groups, L, R, A_col, d_col, has_d, consts, io, ps, tiles,
    h, P, N,
):  # fmt: skip
    """Both passes for batch row ``b`` of head ``hh``: the entering states to the scratch, then the adjoint."""
    G, n_loop, tail = groups
    GL = G * L
    xT, dyT, bT, cT, g, gT, dab, e_s, mg_t, r_t, wn_t, mg, r_, lp, lp2, ln, ln2, pn, col, s0, acc_dA, acc_dD = tiles
    # ---- pass 1: states entering every chunk -> HBM scratch, first chunk first ---------------------
    if initial_state is None:
        nisa.memset(dst=h, value=0.0)
    else:
        nisa.dma_copy(dst=h, src=initial_state[b, hh])

    def states_group(gi, b=b, hh=hh, A_col=A_col):
        _states_group(ins, b, hh, gi * GL, gi * G, G, L, R, A_col, consts, io, h, lp, _slot(ps, 0, P, N))

    if DYNAMIC_LOOPS:
        nl.fori_loop(0, n_loop, states_group)
    else:
        for gi in range(n_loop):
            states_group(gi)
    if tail > 0:
        _states_group(ins, b, hh, n_loop * GL, n_loop * G, tail, L, R, A_col, consts, io, h, lp, _slot(ps, 0, P, N))
    # ---- pass 2: adjoint, last chunk first -----------------------------------------------------------
    if grad_final_state is None:
        nisa.memset(dst=g, value=0.0)
        nisa.memset(dst=gT, value=0.0)
    else:
        nisa.dma_copy(dst=g, src=grad_final_state[b, hh])
        nisa.dma_copy(dst=gT, src=grad_final_state[b, hh].permute((1, 0)))
    if tail > 0:
        _adjoint_group(
            ins, outs, b, hh, n_loop * GL, n_loop * G, tail, L, R, A_col, d_col, has_d, consts, io, ps, tiles, P, N
        )

    def adjoint_group(i, b=b, hh=hh, A_col=A_col):
        gi = (n_loop - 1) - i  # reverse order; on a loop register this is NkiScalar arithmetic
        _adjoint_group(ins, outs, b, hh, gi * GL, gi * G, G, L, R, A_col, d_col, has_d, consts, io, ps, tiles, P, N)

    if DYNAMIC_LOOPS:
        nl.fori_loop(0, n_loop, adjoint_group)
    else:
        for i in range(n_loop):
            adjoint_group(i)
    nisa.dma_copy(dst=dh0[b, hh], src=g)


def _partition_sum(acc, out, hh, ones, out11, ps, L: int) -> None:
    """``out[hh] = sum_p acc[p, 0]`` (a ones matmul over the partitions)."""
    s_ps = _slot(ps, 15, 1, 1)
    nisa.nc_matmul(dst=s_ps, stationary=acc, moving=ones[:L, :1], is_moving_onezero=True, accumulate=False)
    nisa.tensor_copy(dst=out11, src=s_ps)
    nisa.dma_copy(dst=out.ap([[1, 1], [1, 1]], offset=hh), src=out11)


def _states_ap(states, c0, n_cols: int):
    """``[P, n_cols, N]`` pattern over the scratch ``states[c0 + j, p, n]`` (``c0``: int or loop register)."""
    n_chunks, P, N = states.shape
    pattern = [[N, P], [P * N, n_cols], [1, N]]
    if isinstance(c0, int):
        return states.ap(pattern, offset=c0 * P * N)
    return states.ap(pattern, offset=0, scalar_offset=c0, indirect_dim=0)


def _rows(seq: int, t0, j: int, L: int) -> int:
    """Rows of chunk ``j`` of a group starting at ``t0`` (a loop-register group has only full chunks)."""
    if isinstance(t0, int):
        return min(L, seq - t0 - j * L)
    return L


def _states_group(ins, b, hh, t0, c0, n_cols, L, R, A_col, consts, io, h, lp, h_ps):
    """Pass 1 over ``n_cols`` chunks from time ``t0`` (chunk ``c0``): the state entering each chunk into one
    ``[P, n_cols, N]`` tile, written to the scratch with one DMA; ``h`` carries the state on."""
    x, dt, B, C, grad_y, states = ins
    tri, tri_low, ones = consts
    x_g, dy_g, b_g, c_g, dx_g, db_g, dc_g, ddt_g, st_g = io
    P = x.shape[3]
    move_chunks(x_g, x, b, hh, t0, n_cols, L, False)
    move_chunks(b_g, B, b, hh, t0, n_cols, L, False)
    cols = chunk_columns(dt, A_col[:L], b, hh, t0, n_cols, L, R, tri, ones)
    for j in range(n_cols):
        n = _rows(x.shape[1], t0, j, L)
        nisa.tensor_copy(dst=st_g[:, j, :], src=h)
        nisa.activation(dst=lp[:n], op=nl.copy, data=x_g[:n, j, :], scale=cols[W][:n, j : j + 1])
        nisa.nc_matmul(dst=h_ps, stationary=lp[:n], moving=b_g[:n, j, :], accumulate=False)
        nisa.scalar_tensor_tensor(
            dst=h, data=h, op0=nl.multiply, operand0=cols[DECAY][:P, j : j + 1], op1=nl.add, operand1=h_ps
        )
    nisa.dma_copy(dst=_states_ap(states, c0, n_cols), src=st_g[:, :n_cols, :])


def _adjoint_group(ins, outs, b, hh, t0, c0, n_cols, L, R, A_col, d_col, has_d, consts, io, ps, tiles, P, N):
    """Pass 2 over ``n_cols`` chunks from time ``t0``, last chunk first: one load per input (and of the stored
    states), one store per gradient."""
    x, dt, B, C, grad_y, states = ins
    dx, ddt, dB, dC = outs
    tri, tri_low, ones = consts
    x_g, dy_g, b_g, c_g, dx_g, db_g, dc_g, ddt_g, st_g = io
    move_chunks(x_g, x, b, hh, t0, n_cols, L, False)
    move_chunks(dy_g, grad_y, b, hh, t0, n_cols, L, False)
    move_chunks(b_g, B, b, hh, t0, n_cols, L, False)
    move_chunks(c_g, C, b, hh, t0, n_cols, L, False)
    nisa.dma_copy(dst=st_g[:, :n_cols, :], src=_states_ap(states, c0, n_cols))
    cols = chunk_columns(dt, A_col[:L], b, hh, t0, n_cols, L, R, tri, ones, backward=True)
    for j in range(n_cols - 1, -1, -1):
        n = _rows(x.shape[1], t0, j, L)
        views = (
            x_g[:n, j, :],
            dy_g[:n, j, :],
            b_g[:n, j, :],
            c_g[:n, j, :],
            st_g[:, j, :],
            dx_g[:n, j, :],
            db_g[:n, j, :],
            dc_g[:n, j, :],
            ddt_g[:n, j : j + 1],
        )
        _chunk_backward(n, cols, j, views, A_col, d_col, has_d, consts, ps, tiles, P, N)
    move_chunks(dx_g, dx, b, hh, t0, n_cols, L, True)
    move_chunks(db_g, dB, b, hh, t0, n_cols, L, True)
    move_chunks(dc_g, dC, b, hh, t0, n_cols, L, True)
    move_time_cols(ddt_g, ddt, b, hh, t0, n_cols, L, True)


def _chunk_backward(n, cols, j, views, A_col, d_col, has_d, consts, ps, tiles, P, N):
    """One chunk of the adjoint pass (see the module docstring for the formulas); updates g / gT in place.
    ``cols`` are the chunk_columns of the chunk's group, ``j`` the chunk's column in it, ``views`` its rows in
    the group tiles (inputs, entering state, gradient outputs). The steps share one argument list."""
    c = (
        cols[DT][:n, j : j + 1],
        cols[DA][:n, j : j + 1],
        cols[ECS][:n, j : j + 1],
        cols[W][:n, j : j + 1],
        cols[NEGCS][:n, j : j + 1],
        cols[U][:n, j : j + 1],
        cols[DECAY][:, j : j + 1],
    )
    _intra_chunk(n, c, views, A_col, d_col, has_d, consts, ps, tiles, P, N)
    _grad_x(n, c, views, A_col, d_col, has_d, consts, ps, tiles, P, N)
    _grad_c(n, c, views, A_col, d_col, has_d, consts, ps, tiles, P, N)
    _grad_b(n, c, views, A_col, d_col, has_d, consts, ps, tiles, P, N)
    _grad_dt(n, c, views, A_col, d_col, has_d, consts, ps, tiles, P, N)
    _carry_state_grad(n, c, views, A_col, d_col, has_d, consts, ps, tiles, P, N)


def _intra_chunk(n, c, views, A_col, d_col, has_d, consts, ps, tiles, P, N):
    """Transposes of the chunk's inputs, the decay ``e_s[s, t] = exp(cs_t - cs_s)`` (s <= t) and the intra-chunk
    products ``mg = (B.C) e_s``, ``r = (x.dy) e_s``, ``wn = (x.dy) mg`` with the row sums of ``wn``."""
    x_c, dy_c, b_c, c_c, h, dx_c, db_c, dc_c, ddt_c = views
    cj_dt, cj_dA, cj_ecs, cj_w, cj_negcs, cj_u, decay = c
    tri, tri_low, ones = consts
    xT, dyT, bT, cT, g, gT, dab, e_s, mg_t, r_t, wn_t, mg, r_, lp, lp2, ln, ln2, pn, col, s0, acc_dA, acc_dD = tiles
    _transpose_to(xT[:, :n], x_c[:n], _slot(ps, 0, P, n))
    _transpose_to(dyT[:, :n], dy_c[:n], _slot(ps, 0, P, n))
    _transpose_to(bT[:, :n], b_c[:n], _slot(ps, 0, N, n))
    _transpose_to(cT[:, :n], c_c[:n], _slot(ps, 0, N, n))

    # e_s[s, t] = exp(cs_t - cs_s) for s <= t (no dt), from a partition-broadcast of cs
    csb = _slot(ps, 1, n, n)
    nisa.activation(dst=dab[:n, :n], op=nl.copy, data=ones[:n, :n], scale=cj_dA)
    nisa.nc_matmul(dst=csb, stationary=dab[:n, :n], moving=tri[:n, :n], is_moving_onezero=True, accumulate=False)
    nisa.activation(dst=e_s[:n, :n], op=nl.exp, data=csb, bias=cj_negcs)
    nisa.affine_select(
        dst=e_s[:n, :n],
        pattern=[[1, n]],
        channel_multiplier=-1,
        on_true_tile=e_s[:n, :n],
        on_false_value=0.0,
        cmp_op=nl.greater_equal,
    )
    g_ps, q_ps = _slot(ps, 2, n, n), _slot(ps, 3, n, n)
    nisa.nc_matmul(dst=g_ps, stationary=bT[:, :n], moving=cT[:, :n], accumulate=False)  # [s, t] = B_s . C_t
    nisa.nc_matmul(dst=q_ps, stationary=xT[:, :n], moving=dyT[:, :n], accumulate=False)  # [s, t] = x_s . dy_t
    nisa.tensor_tensor(dst=mg_t[:n, :n], data1=g_ps, data2=e_s[:n, :n], op=nl.multiply)
    nisa.tensor_tensor(dst=r_t[:n, :n], data1=q_ps, data2=e_s[:n, :n], op=nl.multiply)
    nisa.tensor_tensor(dst=wn_t[:n, :n], data1=q_ps, data2=mg_t[:n, :n], op=nl.multiply)
    nisa.tensor_reduce(dst=col[:n, XGB_INTRA : XGB_INTRA + 1], op=nl.add, data=wn_t[:n, :n], axis=1)
    _transpose_to(mg[:n, :n], mg_t[:n, :n], _slot(ps, 4, n, n))
    _transpose_to(r_[:n, :n], r_t[:n, :n], _slot(ps, 4, n, n))


def _grad_x(n, c, views, A_col, d_col, has_d, consts, ps, tiles, P, N):
    """``dx = dt * (g B) + D dy``."""
    x_c, dy_c, b_c, c_c, h, dx_c, db_c, dc_c, ddt_c = views
    cj_dt, cj_dA, cj_ecs, cj_w, cj_negcs, cj_u, decay = c
    tri, tri_low, ones = consts
    xT, dyT, bT, cT, g, gT, dab, e_s, mg_t, r_t, wn_t, mg, r_, lp, lp2, ln, ln2, pn, col, s0, acc_dA, acc_dD = tiles
    gb_ps, gbi_ps = _slot(ps, 5, n, P), _slot(ps, 6, n, P)
    nisa.nc_matmul(dst=gb_ps, stationary=mg[:n, :n], moving=dy_c[:n], accumulate=False)
    nisa.nc_matmul(dst=gbi_ps, stationary=bT[:, :n], moving=gT, accumulate=False)  # (Gc B_s)[p]
    _row_dot(col[:n, XGBI : XGBI + 1], x_c[:n], gbi_ps, lp2[:n])
    nisa.activation(dst=lp[:n], op=nl.copy, data=gbi_ps, scale=cj_u)
    nisa.tensor_tensor(dst=lp[:n], data1=gb_ps, data2=lp[:n], op=nl.add)  # g_s B_s
    if has_d:
        nisa.tensor_scalar(dst=lp2[:n], data=dy_c[:n], op0=nl.multiply, operand0=d_col[:n])
        nisa.scalar_tensor_tensor(dst=dx_c, data=lp[:n], op0=nl.multiply, operand0=cj_dt, op1=nl.add, operand1=lp2[:n])
    else:
        nisa.tensor_scalar(dst=dx_c, data=lp[:n], op0=nl.multiply, operand0=cj_dt)


def _grad_c(n, c, views, A_col, d_col, has_d, consts, ps, tiles, P, N):
    """``dC = R^T (dt B) + exp(cs_t) dy_t^T h0``."""
    x_c, dy_c, b_c, c_c, h, dx_c, db_c, dc_c, ddt_c = views
    cj_dt, cj_dA, cj_ecs, cj_w, cj_negcs, cj_u, decay = c
    tri, tri_low, ones = consts
    xT, dyT, bT, cT, g, gT, dab, e_s, mg_t, r_t, wn_t, mg, r_, lp, lp2, ln, ln2, pn, col, s0, acc_dA, acc_dD = tiles
    dci_ps, dc_ps = _slot(ps, 7, n, N), _slot(ps, 8, n, N)
    nisa.nc_matmul(dst=dci_ps, stationary=dyT[:, :n], moving=h, accumulate=False)
    _row_dot(col[:n, Z : Z + 1], c_c[:n], dci_ps, ln2[:n])
    nisa.tensor_scalar(dst=ln[:n], data=b_c[:n], op0=nl.multiply, operand0=cj_dt)
    nisa.nc_matmul(dst=dc_ps, stationary=r_t[:n, :n], moving=ln[:n], accumulate=False)
    nisa.activation(dst=ln2[:n], op=nl.copy, data=dci_ps, scale=cj_ecs)
    nisa.tensor_tensor(dst=dc_c, data1=dc_ps, data2=ln2[:n], op=nl.add)


def _grad_b(n, c, views, A_col, d_col, has_d, consts, ps, tiles, P, N):
    """``dB = dt * R C + w * x^T Gc``."""
    x_c, dy_c, b_c, c_c, h, dx_c, db_c, dc_c, ddt_c = views
    cj_dt, cj_dA, cj_ecs, cj_w, cj_negcs, cj_u, decay = c
    tri, tri_low, ones = consts
    xT, dyT, bT, cT, g, gT, dab, e_s, mg_t, r_t, wn_t, mg, r_, lp, lp2, ln, ln2, pn, col, s0, acc_dA, acc_dD = tiles
    db_ps, dbi_ps = _slot(ps, 9, n, N), _slot(ps, 10, n, N)
    nisa.nc_matmul(dst=db_ps, stationary=r_[:n, :n], moving=c_c[:n], accumulate=False)
    nisa.nc_matmul(dst=dbi_ps, stationary=xT[:, :n], moving=g, accumulate=False)
    nisa.activation(dst=ln[:n], op=nl.copy, data=dbi_ps, scale=cj_w)
    nisa.scalar_tensor_tensor(dst=db_c, data=db_ps, op0=nl.multiply, operand0=cj_dt, op1=nl.add, operand1=ln[:n])


def _grad_dt(n, c, views, A_col, d_col, has_d, consts, ps, tiles, P, N):
    """``d cs``, ``d dA`` (a reverse cumulative sum), ``d dt``, and the dA / dD accumulators."""
    x_c, dy_c, b_c, c_c, h, dx_c, db_c, dc_c, ddt_c = views
    cj_dt, cj_dA, cj_ecs, cj_w, cj_negcs, cj_u, decay = c
    tri, tri_low, ones = consts
    xT, dyT, bT, cT, g, gT, dab, e_s, mg_t, r_t, wn_t, mg, r_, lp, lp2, ln, ln2, pn, col, s0, acc_dA, acc_dD = tiles
    # d cs_u = rowsum_W - dt xgb_intra + ecs z - w xgbi ; d dA = revcumsum(d cs) + sum_s V_s + S0
    rs_ps = _slot(ps, 11, n, 1)
    nisa.nc_matmul(dst=rs_ps, stationary=wn_t[:n, :n], moving=cj_dt, accumulate=False)
    dcs, v, tmp = col[:n, DCS : DCS + 1], col[:n, V : V + 1], col[:n, TMP : TMP + 1]
    nisa.tensor_tensor(dst=dcs, data1=col[:n, Z : Z + 1], data2=cj_ecs, op=nl.multiply)
    nisa.tensor_tensor(dst=dcs, data1=rs_ps, data2=dcs, op=nl.add)
    nisa.tensor_tensor(dst=tmp, data1=col[:n, XGB_INTRA : XGB_INTRA + 1], data2=cj_dt, op=nl.multiply)
    nisa.tensor_tensor(dst=dcs, data1=dcs, data2=tmp, op=nl.subtract)
    nisa.tensor_tensor(dst=v, data1=col[:n, XGBI : XGBI + 1], data2=cj_w, op=nl.multiply)
    nisa.tensor_tensor(dst=dcs, data1=dcs, data2=v, op=nl.subtract)
    _row_dot(s0, g, h, pn)  # S0 = exp(cs_last) <Gc, h0>, per partition p
    nisa.tensor_scalar(dst=s0, data=s0, op0=nl.multiply, operand0=decay[:P])
    dda_ps = _slot(ps, 12, n, 1)
    nisa.nc_matmul(dst=dda_ps, stationary=tri_low[:n, :n], moving=dcs, is_stationary_onezero=True, accumulate=False)
    nisa.nc_matmul(dst=dda_ps, stationary=ones[:n, :n], moving=v, is_stationary_onezero=True, accumulate=True)
    nisa.nc_matmul(dst=dda_ps, stationary=ones[:P, :n], moving=s0, is_stationary_onezero=True, accumulate=True)
    # d dt = x.(g B) + A d dA ; accumulate dt d dA (for dA) and x.dy (for dD)
    nisa.scalar_tensor_tensor(
        dst=col[:n, DDT_DIRECT : DDT_DIRECT + 1],
        data=col[:n, XGBI : XGBI + 1],
        op0=nl.multiply,
        operand0=cj_u,
        op1=nl.add,
        operand1=col[:n, XGB_INTRA : XGB_INTRA + 1],
    )
    nisa.scalar_tensor_tensor(
        dst=ddt_c,
        data=dda_ps,
        op0=nl.multiply,
        operand0=A_col[:n],
        op1=nl.add,
        operand1=col[:n, DDT_DIRECT : DDT_DIRECT + 1],
    )
    nisa.scalar_tensor_tensor(
        dst=acc_dA[:n], data=dda_ps, op0=nl.multiply, operand0=cj_dt, op1=nl.add, operand1=acc_dA[:n]
    )
    _row_dot(tmp, x_c[:n], dy_c[:n], lp2[:n])
    nisa.tensor_tensor(dst=acc_dD[:n], data1=acc_dD[:n], data2=tmp, op=nl.add)


def _carry_state_grad(n, c, views, A_col, d_col, has_d, consts, ps, tiles, P, N):
    """``Gc <- exp(cs_last) Gc + sum_u exp(cs_u) dy_u C_u^T`` in both layouts (g and gT)."""
    x_c, dy_c, b_c, c_c, h, dx_c, db_c, dc_c, ddt_c = views
    cj_dt, cj_dA, cj_ecs, cj_w, cj_negcs, cj_u, decay = c
    tri, tri_low, ones = consts
    xT, dyT, bT, cT, g, gT, dab, e_s, mg_t, r_t, wn_t, mg, r_, lp, lp2, ln, ln2, pn, col, s0, acc_dA, acc_dD = tiles
    # Gc <- exp(cs_last) Gc + sum_u exp(cs_u) dy_u C_u^T (both layouts)
    nisa.activation(dst=lp[:n], op=nl.copy, data=dy_c[:n], scale=cj_ecs)
    gp_ps, gpt_ps = _slot(ps, 13, P, N), _slot(ps, 14, N, P)
    nisa.nc_matmul(dst=gp_ps, stationary=lp[:n], moving=c_c[:n], accumulate=False)
    nisa.nc_matmul(dst=gpt_ps, stationary=c_c[:n], moving=lp[:n], accumulate=False)
    nisa.scalar_tensor_tensor(dst=g, data=g, op0=nl.multiply, operand0=decay[:P], op1=nl.add, operand1=gp_ps)
    nisa.scalar_tensor_tensor(dst=gT, data=gT, op0=nl.multiply, operand0=decay[:N], op1=nl.add, operand1=gpt_ps)
