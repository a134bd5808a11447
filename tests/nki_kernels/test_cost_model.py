"""Counts, cost formulas and target selection of the interpreter's report."""

from __future__ import annotations

import numpy as np
import pytest

from nki_kernels import interp
from nki_kernels.interp import cost
from nki_kernels.interp import isa as nisa
from nki_kernels.interp import language as nl
from nki_kernels.interp.targets import resolve_target


@interp.jit
def _one_matmul(a, b):
    out = nl.ndarray((a.shape[1], b.shape[1]), nl.float32, buffer=nl.shared_hbm)
    ps = nl.ndarray(out.shape, nl.float32, buffer=nl.psum)
    nisa.nc_matmul(dst=ps, stationary=nl.load(a), moving=nl.load(b), accumulate=False)
    o = nl.ndarray(out.shape, nl.float32)
    nisa.tensor_copy(dst=o, src=ps)
    nl.store(out, o)
    return out


@pytest.mark.parametrize("dtype, factor", [(np.float32, 4), ("bfloat16", 1)])
def test_matmul_counts_and_cycles(dtype, factor):
    import ml_dtypes

    dt = ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
    a, b = np.ones((128, 96), dt), np.ones((128, 300), dt)
    out, rep = interp.run_kernel(_one_matmul, a, b, target="trn2")
    np.testing.assert_array_equal(out, np.full((96, 300), 128.0))
    assert rep.engines["tensor"] == {"instructions": 1, "elements": 96 * 300, "cycles": 300 * factor}
    assert rep.engines["vector"]["cycles"] == 300  # tensor_copy: max(64, N)
    assert rep.matmul_flops == 2 * 128 * 96 * 300
    itemsize = np.dtype(dt).itemsize
    assert rep.dma_bytes == (a.size + b.size) * itemsize + 96 * 300 * 4
    assert rep.engine_time_us["tensor"] == pytest.approx(300 * factor / 2.4e3)
    assert rep.est_time_us == max(rep.engine_time_us.values())
    assert rep.serial_time_us == pytest.approx(sum(rep.engine_time_us.values()))
    assert rep.psum_peak_banks == 1 and rep.instruction_counts["nc_matmul"] == 1


def test_strided_dma_pays_the_minimum_run():
    @interp.jit
    def transpose_load(x):
        out = nl.ndarray((8, 16), nl.float32, buffer=nl.shared_hbm)
        t = nl.ndarray((8, 16), nl.float32)
        nisa.dma_copy(dst=t, src=x.permute((1, 0)))  # 4-byte runs
        nl.store(out, t)
        return out

    x = np.arange(128, dtype=np.float32).reshape(16, 8)
    out, rep = interp.run_kernel(transpose_load, x)
    np.testing.assert_array_equal(out, x.T)
    assert rep.dma_bytes == 2 * 512
    assert rep.dma_effective_bytes == 128 * 64 + 512  # each element costs a 64 B run; the store is contiguous


def test_target_selection(monkeypatch):
    monkeypatch.delenv("BMOJO_NKI_TARGET", raising=False)
    monkeypatch.delenv("NEURON_PLATFORM_TARGET_OVERRIDE", raising=False)
    assert resolve_target().name == "trn2"
    monkeypatch.setenv("NEURON_PLATFORM_TARGET_OVERRIDE", "gen2")
    assert resolve_target().name == "trn1"
    monkeypatch.setenv("BMOJO_NKI_TARGET", "trn2")
    assert resolve_target().name == "trn2"
    assert resolve_target("trn1").name == "trn1"
    with pytest.raises(interp.NkiUsageError):
        resolve_target("trn9")


def test_dma_fixed_cost_makes_small_transfers_expensive():
    """Model v2: eight 256 B/partition transfers cost far more than one 2 KiB/partition transfer of the same
    bytes (1.3 us fixed cost each); model v1 (bytes / bandwidth) charges them the same."""

    @interp.jit
    def copy(x, pieces):
        out = nl.ndarray(x.shape, x.dtype, buffer=nl.shared_hbm)
        t = nl.ndarray((128, 512), nl.float32)
        w = 512 // pieces
        for k in range(pieces):
            nisa.dma_copy(dst=t[:, k * w : (k + 1) * w], src=x[:, k * w : (k + 1) * w])
        nl.store(out, t)
        return out

    x = np.ones((128, 512), np.float32)
    _, one = interp.run_kernel(copy, x, 1)
    _, eight = interp.run_kernel(copy, x, 8)
    assert eight.dma_transfers == one.dma_transfers + 7
    assert sorted(one.dma_bytes_per_partition) == [2048, 2048]
    assert eight.engine_time_us["dma"] > 2 * one.engine_time_us["dma"]
    assert eight.engine_time_us["dma"] - one.engine_time_us["dma"] >= 7 * cost.DMA_FIXED_US / cost.DMA_FIXED_OVERLAP
    assert abs(eight.dma_time_v1_us - one.dma_time_v1_us) < 1e-9
