"""Each interpreter instruction against NumPy."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from nki_kernels import interp
from nki_kernels.interp import isa as nisa
from nki_kernels.interp import language as nl
from tests.helpers.kernels import sbuf_from, value

rng = np.random.default_rng(0)
BF16 = ml_dtypes.bfloat16


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_nc_matmul_is_stationary_transposed_times_moving_fp32():
    s, m = randn(96, 40), randn(96, 300)
    with interp.session():
        dst = nl.ndarray((40, 300), nl.float32, buffer=nl.psum)
        nisa.nc_matmul(dst=dst, stationary=sbuf_from(s), moving=sbuf_from(m), accumulate=False)
        np.testing.assert_allclose(value(dst), s.T @ m, rtol=1e-5, atol=1e-4)


def test_nc_matmul_bf16_inputs_accumulate_in_fp32():
    s, m = randn(128, 16).astype(BF16), randn(128, 8).astype(BF16)
    with interp.session():
        dst = nl.ndarray((16, 8), nl.float32, buffer=nl.psum)
        st, mv = sbuf_from(s), sbuf_from(m)
        nisa.nc_matmul(dst=dst, stationary=st, moving=mv, accumulate=False)
        nisa.nc_matmul(dst=dst, stationary=st, moving=mv, accumulate=True)
        exact = 2 * (s.astype(np.float64).T @ m.astype(np.float64))
        np.testing.assert_allclose(value(dst), exact, rtol=1e-5, atol=1e-4)


def test_nc_matmul_accumulate_none_overwrites_first_then_adds():
    s, m = randn(8, 4), randn(8, 4)
    with interp.session():
        dst = nl.ndarray((4, 4), nl.float32, buffer=nl.psum)
        st, mv = sbuf_from(s), sbuf_from(m)
        nisa.nc_matmul(dst=dst, stationary=st, moving=mv)
        np.testing.assert_allclose(value(dst), s.T @ m, rtol=1e-6)
        nisa.nc_matmul(dst=dst, stationary=st, moving=mv)
        np.testing.assert_allclose(value(dst), 2 * s.T @ m, rtol=1e-6)


def test_nc_transpose_tensor_engine_and_vector_engine():
    a = randn(100, 70)
    with interp.session():
        ps = nl.ndarray((70, 100), nl.float32, buffer=nl.psum)
        nisa.nc_transpose(dst=ps, data=sbuf_from(a))
        np.testing.assert_array_equal(value(ps), a.T)
        small = randn(16, 32)
        out = nl.ndarray((32, 16), nl.float32)
        nisa.nc_transpose(dst=out, data=sbuf_from(small), engine=nisa.engine.vector)
        np.testing.assert_array_equal(value(out), small.T)


@pytest.mark.parametrize(
    "op, fn",
    [
        (nl.add, np.add),
        (nl.subtract, np.subtract),
        (nl.multiply, np.multiply),
        (nl.maximum, np.maximum),
        (nl.greater, lambda a, b: (a > b).astype(np.float32)),
    ],
)
def test_tensor_tensor(op, fn):
    a, b = randn(64, 33), randn(64, 33)
    with interp.session():
        out = nl.ndarray((64, 33), nl.float32)
        nisa.tensor_tensor(dst=out, data1=sbuf_from(a), data2=sbuf_from(b), op=op)
        np.testing.assert_array_equal(value(out), fn(a, b))


def test_tensor_tensor_rounds_once_to_bf16_rne():
    a, b = randn(8, 64), randn(8, 64)
    with interp.session():
        out = nl.ndarray((8, 64), nl.bfloat16)
        nisa.tensor_tensor(dst=out, data1=sbuf_from(a), data2=sbuf_from(b), op=nl.multiply)
        np.testing.assert_array_equal(np.array(out.np_view()), (a * b).astype(BF16))


def test_tensor_scalar_two_ops_tile_operand_and_reverse():
    a, col = randn(32, 20), randn(32, 1)
    with interp.session():
        out = nl.ndarray((32, 20), nl.float32)
        nisa.tensor_scalar(
            dst=out,
            data=sbuf_from(a),
            op0=nl.subtract,
            operand0=sbuf_from(col),
            reverse0=True,
            op1=nl.multiply,
            operand1=3.0,
        )
        np.testing.assert_allclose(value(out), (col - a) * 3.0, rtol=1e-6)


def test_scalar_tensor_tensor():
    a, col, b = randn(16, 12), randn(16, 1), randn(16, 12)
    with interp.session():
        out = nl.ndarray((16, 12), nl.float32)
        nisa.scalar_tensor_tensor(
            dst=out, data=sbuf_from(a), op0=nl.multiply, operand0=sbuf_from(col), op1=nl.add, operand1=sbuf_from(b)
        )
        np.testing.assert_allclose(value(out), a * col + b, rtol=1e-6)


def test_activation_exp_with_tile_scale_and_bias_reads_psum():
    a, sc, bi = randn(24, 10), randn(24, 1), randn(24, 1)
    with interp.session():
        ps = nl.ndarray((24, 10), nl.float32, buffer=nl.psum)
        nisa.tensor_copy(dst=ps, src=sbuf_from(a))
        out = nl.ndarray((24, 10), nl.float32)
        nisa.activation(dst=out, op=nl.exp, data=ps, scale=sbuf_from(sc), bias=sbuf_from(bi))
        np.testing.assert_allclose(value(out), np.exp(a * sc + bi), rtol=1e-6)


def test_tensor_copy_casts_fp32_to_int_round_half_even_and_saturates():
    a = np.array([[0.5, 1.5, 2.5, -0.5, 3e9, -3e9, 7.49, np.nan]], np.float32)
    with interp.session():
        out = nl.ndarray((1, 8), nl.int32)
        nisa.tensor_copy(dst=out, src=sbuf_from(a))
        np.testing.assert_array_equal(value(out)[0], [0, 2, 2, 0, 2**31 - 1, -(2**31), 7, 0])


def test_tensor_reduce_last_axes_and_negate():
    a = randn(8, 4, 6)
    with interp.session():
        t = sbuf_from(a)
        s = nl.ndarray((8, 4), nl.float32)
        nisa.tensor_reduce(dst=s, op=nl.add, data=t, axis=2)
        np.testing.assert_allclose(value(s), a.sum(axis=2), rtol=1e-5)
        m = nl.ndarray((8, 1), nl.float32)
        nisa.tensor_reduce(dst=m, op=nl.maximum, data=t, axis=(1, 2), negate=True)
        np.testing.assert_array_equal(value(m)[:, 0], -a.reshape(8, -1).max(axis=1))


def test_tensor_tensor_scan_is_the_linear_recurrence():
    a, b, init = rng.uniform(0.5, 1.0, (4, 50)).astype(np.float32), randn(4, 50), randn(4, 1)
    expected = np.empty_like(b)
    h = init[:, 0].copy()
    for i in range(50):
        h = a[:, i] * h + b[:, i]
        expected[:, i] = h
    with interp.session():
        out = nl.ndarray((4, 50), nl.float32)
        nisa.tensor_tensor_scan(
            dst=out, data0=sbuf_from(a), data1=sbuf_from(b), initial=sbuf_from(init), op0=nl.multiply, op1=nl.add
        )
        np.testing.assert_allclose(value(out), expected, rtol=1e-5, atol=1e-5)


def test_iota_and_affine_select():
    with interp.session():
        io = nl.ndarray((5, 3, 4), nl.int32)
        nisa.iota(dst=io, pattern=[[10, 3], [1, 4]], offset=7, channel_multiplier=100)
        p, i, j = np.meshgrid(np.arange(5), np.arange(3), np.arange(4), indexing="ij")
        np.testing.assert_array_equal(value(io), 7 + 100 * p + 10 * i + j)
        ones = nl.ones((6, 6), nl.float32)
        tri = nl.ndarray((6, 6), nl.float32)
        nisa.affine_select(
            dst=tri,
            pattern=[[1, 6]],
            channel_multiplier=-1,
            on_true_tile=ones,
            on_false_value=-5.0,
            cmp_op=nl.greater_equal,
        )
        np.testing.assert_array_equal(value(tri), np.where(np.triu(np.ones((6, 6))) > 0, 1.0, -5.0))


def test_memset_and_full():
    with interp.session():
        t = nl.ndarray((3, 4), nl.int32)
        nisa.memset(dst=t, value=9)
        np.testing.assert_array_equal(value(t), np.full((3, 4), 9))
        np.testing.assert_array_equal(value(nl.full((2, 2), 2.5, nl.float32)), np.full((2, 2), 2.5))


def test_max8_find_index8_match_replace8_with_duplicates():
    data = np.array([[3.0, 9.0, 1.0, 9.0, 5.0, 7.0, 2.0, 8.0, 0.0, 6.0, 4.0, -1.0]], np.float32)
    with interp.session():
        d = sbuf_from(data)
        top = nl.ndarray((1, 8), nl.float32)
        nisa.max8(dst=top, src=d)
        np.testing.assert_array_equal(value(top)[0], [9, 9, 8, 7, 6, 5, 4, 3])
        idx = nl.ndarray((1, 8), nl.uint32)
        nisa.nc_find_index8(dst=idx, data=d, vals=top)
        np.testing.assert_array_equal(value(idx)[0], [1, 3, 7, 5, 9, 4, 10, 0])  # duplicates: ascending
        rep = nl.ndarray((1, 12), nl.float32)
        ridx = nl.ndarray((1, 8), nl.uint32)
        nisa.nc_match_replace8(dst=rep, data=d, vals=top, imm=-100.0, dst_idx=ridx)
        np.testing.assert_array_equal(value(rep)[0], [-100, -100, 1, -100, -100, -100, 2, -100, 0, -100, -100, -1])
        np.testing.assert_array_equal(value(ridx)[0], [3, 1, 7, 5, 9, 4, 10, 0])  # i = 7..0: earliest in slot 1
        missing = sbuf_from(np.full((1, 8), 42.0, np.float32))
        nisa.nc_find_index8(dst=idx, data=d, vals=missing)
        assert (value(idx) == np.iinfo(np.uint32).max).all()


def test_nc_n_gather_within_partition():
    data, ix = randn(4, 10), rng.integers(0, 10, (4, 6)).astype(np.uint32)
    with interp.session():
        out = nl.ndarray((4, 6), nl.float32)
        nisa.nc_n_gather(dst=out, data=sbuf_from(data), indices=sbuf_from(ix))
        np.testing.assert_array_equal(value(out), np.take_along_axis(data, ix.astype(np.int64), axis=1))


def test_dma_strided_views_cast_and_load_store():
    x = randn(3, 10, 4, 6)

    @interp.jit
    def k(x):
        out = nl.ndarray((10, 6), nl.bfloat16, buffer=nl.shared_hbm)
        t = nl.ndarray((10, 6), nl.bfloat16)
        nisa.dma_copy(dst=t, src=x[1, :, 2, :])  # HBM int index drops dims; DMA casts fp32 -> bf16
        nl.store(out, value=t)
        back = nl.load(out)
        assert back.shape == (10, 6) and back.dtype == nl.bfloat16
        return out

    np.testing.assert_array_equal(interp.simulate(k)(x), x[1, :, 2, :].astype(BF16))


def test_indirect_dma_gather_scatter_and_oob_skip():
    src = randn(20, 5)
    idx = np.array([[3], [19], [0], [3]], np.int32)

    @interp.jit
    def k(src, idx, bad_idx):
        out = nl.ndarray((4, 5), nl.float32, buffer=nl.shared_hbm)
        scat = nl.ndarray((20, 5), nl.float32, buffer=nl.shared_hbm)
        it, rows = nl.load(idx), nl.ndarray((4, 5), nl.float32)
        nisa.dma_copy(dst=rows, src=src.ap([[5, 4], [1, 5]], vector_offset=it, indirect_dim=0))
        nl.store(out, rows)
        zero = nl.zeros((20, 5), nl.float32)
        nl.store(scat, zero)
        nisa.dma_copy(dst=scat.ap([[5, 4], [1, 5]], vector_offset=it, indirect_dim=0), src=rows)
        keep = nl.full((4, 5), -7.0, nl.float32)
        nisa.dma_copy(
            dst=keep,
            src=src.ap([[5, 4], [1, 5]], vector_offset=nl.load(bad_idx), indirect_dim=0),
            oob_mode=nisa.oob_mode.skip,
        )
        nl.store(out, keep)  # overwrite: rows with a bad index stay -7
        return out, scat

    bad = np.array([[1], [99], [2], [-1]], np.int32)
    out, scat = interp.simulate(k, target="trn2")(src, idx, bad)
    np.testing.assert_array_equal(out[[0, 2]], src[[1, 2]])
    assert (out[[1, 3]] == -7.0).all()
    expected = np.zeros((20, 5), np.float32)
    expected[[3, 19, 0]] = src[[3, 19, 0]]
    np.testing.assert_array_equal(scat, expected)


def test_views_on_chip_keep_partition_dim_and_hbm_drops_dims():
    with interp.session():
        t = nl.ndarray((8, 4, 6), nl.float32)
        assert t[:, 0, 1].shape == (8, 1)
        assert t[3].shape == (1, 4, 6)
        assert t[nl.ds(2, 3), 1:4:2].shape == (3, 2, 6)
        h = nl.ndarray((2, 3, 4), nl.float32, buffer=nl.hbm)
        assert h[1, :, 2].shape == (3,)
        assert h[0].permute((1, 0)).shape == (4, 3)


def test_lnc2_runs_two_program_instances_sharing_outputs():
    @interp.jit
    def k(x):
        out = nl.ndarray(x.shape, x.dtype, buffer=nl.shared_hbm)
        pid, half = nl.program_id(), x.shape[0] // 2
        t = nl.load(x[pid * half : (pid + 1) * half])
        nisa.tensor_scalar(dst=t, data=t, op0=nl.add, operand0=float(10 * (pid + 1)))
        nl.store(out[pid * half : (pid + 1) * half], t)
        return out

    x = randn(8, 3)
    out = interp.simulate(k[2])(x)
    np.testing.assert_allclose(out[:4], x[:4] + 10, rtol=1e-6)
    np.testing.assert_allclose(out[4:], x[4:] + 20, rtol=1e-6)


def test_kernel_writes_modified_inputs_back():
    @interp.jit
    def k(x):
        t = nl.load(x)
        nisa.tensor_scalar(dst=t, data=t, op0=nl.multiply, operand0=2.0)
        nl.store(x, t)

    x = randn(4, 4)
    orig = x.copy()
    interp.simulate(k)(x)
    np.testing.assert_array_equal(x, orig * 2)
