"""Negative tests: every violated limit raises the interpreter's clear error."""

from __future__ import annotations

import numpy as np
import pytest

from nki_kernels import interp
from nki_kernels.interp import isa as nisa
from nki_kernels.interp import language as nl
from nki_kernels.interp.errors import (
    NkiBufferError,
    NkiCapacityError,
    NkiDtypeError,
    NkiLimitError,
    NkiUninitializedReadError,
    NkiUnsupportedError,
    NkiUsageError,
)
from tests.helpers.kernels import sbuf_from

X = np.ones((4, 4), np.float32)


@interp.jit
def _psum_hog(x, n_tiles):
    """Keeps n_tiles one-bank PSUM accumulators alive at once (like a too-wide output-stationary tiling)."""
    out = nl.ndarray((128, 512), nl.float32, buffer=nl.shared_hbm)
    accs = [nl.ndarray((128, 512), nl.float32, buffer=nl.psum, name=f"acc{i}") for i in range(n_tiles)]
    t = nl.ndarray((128, 512), nl.float32)
    nisa.tensor_copy(dst=t, src=accs[0])
    nl.store(out, t)
    return out


def test_psum_oversubscription_raises_naming_limit():
    # 7 usable banks (nl.tile_size.psum_num_banks with bank 7 kept for PE transposes): the 8th tile fails
    with interp.session():
        keep = [nl.ndarray((128, 512), nl.float32, buffer=nl.psum) for _ in range(7)]  # 7 banks fit
        assert len(keep) == 7
    with pytest.raises(NkiCapacityError, match=r"PSUM oversubscribed allocating 'acc7'.*limit is 7 banks"):
        _psum_hog(X, 8)
    assert interp.language.tile_size.psum_num_banks == 7


def test_psum_allocations_are_bank_aligned():
    with interp.session() as ctx:
        small = nl.ndarray((128, 4), nl.float32, buffer=nl.psum)  # 16 B still takes a whole bank
        other = nl.ndarray((128, 4), nl.float32, buffer=nl.psum)
        assert (small.storage.first_bank, other.storage.first_bank) == (0, 1)
        with pytest.raises(NkiCapacityError):
            [nl.ndarray((128, 1), nl.float32, buffer=nl.psum) for _ in range(6)]
        assert ctx.allocator.psum_peak_banks == 7


def test_sbuf_oversubscription_depends_on_target():
    shape = (128, 50_000)  # 200000 B/partition: fits trn2 (212984), not trn1 (180224)

    @interp.jit
    def big(x):
        t = nl.ndarray(shape, nl.float32, name="big_tile")
        nisa.memset(dst=t, value=0.0)
        out = nl.ndarray((4, 4), nl.float32, buffer=nl.shared_hbm)
        nl.store(out, t[:4, :4])
        return out

    interp.run_kernel(big, X, target="trn2")
    with pytest.raises(NkiCapacityError, match=r"SBUF oversubscribed allocating 'big_tile'.*limit is 180224"):
        interp.run_kernel(big, X, target="trn1")


def test_freed_tiles_release_their_sbuf():
    with interp.session() as ctx:
        for _ in range(10):  # each iteration's tile is freed when the name is rebound
            t = nl.ndarray((128, 20_000), nl.float32)
        del t
        assert ctx.allocator.sbuf_used == 0
        assert ctx.allocator.sbuf_peak == 2 * 80_000  # old and new tile overlap during rebinding


@pytest.mark.parametrize(
    "st_shape, mv_shape, match",
    [
        ((129, 4), (129, 4), "partition dimension is 129, limit is 128"),
        ((64, 129), (64, 4), "stationary' free size M is 129, limit is 128"),
        ((64, 4), (64, 513), "moving' free size N is 513, limit is 512"),
        ((64, 4), (32, 4), "contraction"),
    ],
)
def test_matmul_tile_limits(st_shape, mv_shape, match):
    with interp.session():
        st = nl.zeros(st_shape, nl.float32) if st_shape[0] <= 128 else None
        if st is None:
            with pytest.raises(NkiLimitError, match=match):
                nl.zeros(st_shape, nl.float32)
            return
        mv = nl.zeros(mv_shape, nl.float32)
        dst = nl.ndarray((min(st_shape[1], 128), min(mv_shape[1], 512)), nl.float32, buffer=nl.psum)
        with pytest.raises(NkiLimitError, match=match):
            nisa.nc_matmul(dst=dst, stationary=st, moving=mv, accumulate=False)


def test_matmul_dst_rules():
    with interp.session():
        a, b = nl.zeros((8, 8), nl.float32), nl.zeros((8, 8), nl.bfloat16)
        with pytest.raises(NkiDtypeError, match="if one is fp32 both must be"):
            nisa.nc_matmul(dst=nl.ndarray((8, 8), nl.float32, buffer=nl.psum), stationary=a, moving=b)
        with pytest.raises(NkiDtypeError, match="writes fp32 to PSUM"):
            nisa.nc_matmul(dst=nl.ndarray((8, 8), nl.bfloat16, buffer=nl.psum), stationary=a, moving=a)
        with pytest.raises(NkiBufferError, match="accepts only psum"):
            nisa.nc_matmul(dst=nl.ndarray((8, 8), nl.float32), stationary=a, moving=a)
        ps = nl.ndarray((8, 8), nl.float32, buffer=nl.psum)
        nisa.tensor_copy(dst=ps, src=a)
        with pytest.raises(NkiBufferError, match="'moving'.*accepts only sbuf"):
            nisa.nc_matmul(dst=nl.ndarray((8, 8), nl.float32, buffer=nl.psum), stationary=a, moving=ps)
        wide = nl.ndarray((8, 1024), nl.float32, buffer=nl.psum)  # two banks
        nisa.nc_matmul(dst=wide[:, 504:512], stationary=a, moving=a)  # last 8 columns of bank 0: fine
        nisa.nc_matmul(dst=wide[:, 512:520], stationary=a, moving=a)  # first 8 of bank 1: fine
        with pytest.raises(NkiLimitError, match="crossing a PSUM bank boundary"):
            nisa.nc_matmul(dst=wide[:, 508:516], stationary=a, moving=a)
        with pytest.raises(NkiUninitializedReadError, match="accumulate=True"):
            nisa.nc_matmul(dst=ps, stationary=a, moving=a, accumulate=True)  # written by tensor_copy, not matmul


def test_read_of_uninitialised_memory_names_instruction_and_operand():
    with interp.session():
        t = nl.ndarray((4, 8), nl.float32, name="never_written")
        nisa.memset(dst=t[:, :4], value=1.0)
        with pytest.raises(
            NkiUninitializedReadError,
            match=r"tensor_tensor: operand 'data2' \(sbuf tensor 'never_written'.*16 uninitialised.*\(0, 4\)",
        ):
            nisa.tensor_tensor(
                dst=nl.ndarray((4, 8), nl.float32), data1=nl.zeros((4, 8), nl.float32), data2=t, op=nl.add
            )
        assert np.isnan(t.np_view()[:, 4:]).all()  # the NaN sentinel is there too
        i = nl.ndarray((2, 2), nl.int32)
        assert (i.np_view() == 4).all()


def test_kernel_reading_uninitialised_tile_fails():
    @interp.jit
    def bad(x):
        out = nl.ndarray(x.shape, x.dtype, buffer=nl.shared_hbm)
        t = nl.ndarray(x.shape, x.dtype)
        nl.store(out, t)  # DMA-out of memory nobody wrote
        return out

    with pytest.raises(NkiUninitializedReadError, match="dma_copy: operand 'src'"):
        bad(X)


def test_kernel_output_must_be_fully_written_shared_hbm():
    @interp.jit
    def partial(x):
        out = nl.ndarray((4, 4), nl.float32, buffer=nl.shared_hbm)
        nl.store(out[:2], nl.load(x[:2]))
        return out

    @interp.jit
    def wrong_buffer(x):
        out = nl.ndarray((4, 4), nl.float32, buffer=nl.hbm)
        nl.store(out, nl.load(x))
        return out

    with pytest.raises(NkiUninitializedReadError, match="8 element"):
        partial(X)
    with pytest.raises(NkiBufferError, match="shared_hbm"):
        wrong_buffer(X)


def test_dma_from_psum_and_store_of_psum_are_rejected():
    with interp.session():
        ps = nl.ndarray((4, 4), nl.float32, buffer=nl.psum)
        nisa.memset(dst=ps, value=0.0)
        h = nl.ndarray((4, 4), nl.float32, buffer=nl.hbm)
        with pytest.raises(NkiBufferError, match="dma_copy: operand 'src'.*DMA cannot access PSUM"):
            nisa.dma_copy(dst=h, src=ps)
        with pytest.raises(NkiBufferError, match="nl.store: operand 'value'.*PSUM"):
            nl.store(h, ps)


def test_gpsimd_and_psum_rules():
    with interp.session():
        ps = nl.ndarray((4, 4), nl.float32, buffer=nl.psum)
        nisa.memset(dst=ps, value=0.0)
        sb = nl.zeros((4, 4), nl.float32)
        with pytest.raises(NkiBufferError, match="GpSimd cannot access"):
            nisa.tensor_copy(dst=sb, src=ps, engine=nisa.engine.gpsimd)
        with pytest.raises(NkiBufferError, match="affine_select: operand 'on_true_tile'"):
            nisa.affine_select(dst=sb, pattern=[[1, 4]], channel_multiplier=0, on_true_tile=ps, on_false_value=0.0)
        ps2 = nl.ndarray((4, 4), nl.float32, buffer=nl.psum)
        nisa.memset(dst=ps2, value=0.0)
        with pytest.raises(NkiBufferError, match="both in PSUM"):
            nisa.tensor_tensor(dst=sb, data1=ps, data2=ps2, op=nl.add)


def test_api_misuse():
    with interp.session():
        t = nl.zeros((4, 4), nl.float32)
        with pytest.raises(TypeError):
            nisa.tensor_copy(dst=t, src=t, dtype=nl.float32)  # removed old-API kwarg
        with pytest.raises(NkiUsageError, match="nisa.engine member"):
            nisa.tensor_copy(dst=t, src=t, engine=1)
        with pytest.raises(NkiDtypeError, match="must be a float"):
            nisa.memset(dst=t, value=0)
        with pytest.raises(NkiLimitError, match="partition dimension is 129"):
            nl.ndarray((129, 2), nl.float32)
        with pytest.raises(NkiLimitError, match="out of bounds"):
            t[:, 3:9]
        with pytest.raises(NkiLimitError, match="operand 'data2' has 4 partitions x 2"):
            nisa.tensor_tensor(dst=t, data1=t, data2=t[:, :2], op=nl.add)


def test_indirect_dma_is_refused_on_trn1():
    with interp.session(target="trn1"):
        src = nl.ndarray((10, 4), nl.float32, buffer=nl.hbm)
        idx = nl.zeros((2, 1), nl.int32)
        with pytest.raises(NkiUnsupportedError, match="not confirmed"):
            nisa.dma_copy(
                dst=nl.ndarray((2, 4), nl.float32), src=src.ap([[4, 2], [1, 4]], vector_offset=idx, indirect_dim=0)
            )


def test_scan_kernel_rejects_tiles_above_the_limits():
    from nki_kernels.kernels.ssd_scan_fwd import ssd_scan_fwd_kernel

    x = np.zeros((1, 4, 1, 8), np.float32)
    with pytest.raises(AssertionError, match="chunk_size above 128"):  # kernels assert; wrappers raise ValueError
        ssd_scan_fwd_kernel(
            x,
            np.ones((1, 4, 1), np.float32),
            -np.ones(1, np.float32),
            np.zeros((1, 4, 1, 4), np.float32),
            np.zeros((1, 4, 1, 4), np.float32),
            None,
            None,
            256,
        )


def test_sbuf_tile_helper_is_needed_only_in_session():
    with pytest.raises(NkiUsageError, match="outside a kernel call"):
        sbuf_from(X)


@pytest.mark.parametrize("width, ok", [(7, False), (8, True), (16384, True), (16385, False)])
def test_max8_reads_8_to_16384_elements_per_partition(width, ok):
    with interp.session():
        src = sbuf_from(np.arange(2 * width, dtype=np.float32).reshape(2, width))
        dst = nl.ndarray((2, 8), nl.float32)
        if ok:
            nisa.max8(dst=dst, src=src)
        else:
            with pytest.raises(NkiLimitError, match="16384|8"):
                nisa.max8(dst=dst, src=src)


def test_select_kernel_asserts_and_host_check_the_max8_bound():
    from nki_kernels.host_checks import check_select_args
    from nki_kernels.kernels.eidetic_select import eidetic_select_kernel

    with pytest.raises(ValueError, match="16384"):
        check_select_args(20000, 8, 4, "topk", 1)
    with pytest.raises(ValueError, match="slots \\+ topk"):
        check_select_args(64, 8, 16380, "topk", 1)
    with pytest.raises(AssertionError, match="max8"):
        interp.run_kernel(eidetic_select_kernel, np.zeros((1, 20000), np.float32), 20000, 8, 4, "topk", 1)
