"""LNC launch grids: kernels split their (batch, head) work over nl.program_id(); the interpreter runs the grid
and checks that the programs' output writes cover every element exactly once (planted overlap and gap)."""

from __future__ import annotations

import numpy as np
import pytest

from nki_kernels import interp
from nki_kernels.interp import NkiShardError
from nki_kernels.interp import isa as nisa
from nki_kernels.interp import language as nl
from nki_kernels.kernels import _tiles
from nki_kernels.kernels.eidetic_select import eidetic_select_kernel
from nki_kernels.kernels.gather_rows import gather_rows_kernel, scatter_add_rows_kernel
from nki_kernels.kernels.ssd_scan_bwd import ssd_scan_bwd_kernel
from nki_kernels.kernels.ssd_scan_fwd import ssd_scan_fwd_kernel
from nki_kernels.launch import compiler_flags, grid, lnc_degree

RNG = np.random.default_rng(0)
WORK_RANGE = _tiles.work_range  # the real split, kept before any test patches the kernels' reference


def _scan_args(b=3, t=20, h=1, p=8, n=4):
    x = RNG.standard_normal((b, t, h, p)).astype(np.float32)
    dt = np.log1p(np.exp(RNG.standard_normal((b, t, h)))).astype(np.float32)
    A = -(RNG.random(h) + 0.3).astype(np.float32)
    B = RNG.standard_normal((b, t, h, n)).astype(np.float32)
    C = RNG.standard_normal((b, t, h, n)).astype(np.float32)
    D = RNG.standard_normal(h).astype(np.float32)
    return x, dt, A, B, C, D, None


def _run(kernel, lnc, *args):
    out, _ = interp.run_kernel(kernel[lnc], *args)
    return out


@pytest.mark.parametrize(
    "kernel, args",
    [
        (ssd_scan_fwd_kernel, (*_scan_args(), 8)),  # 3 (batch, head) pairs over 2 programs: uneven shards
        (ssd_scan_bwd_kernel, (*_scan_args(b=2, h=3), RNG.standard_normal((2, 20, 3, 8)).astype(np.float32), None, 8)),
        (eidetic_select_kernel, (RNG.standard_normal((5, 40)).astype(np.float32), 8, 4, 6, "topk", 1)),
        (
            gather_rows_kernel,
            (
                RNG.standard_normal((3, 16, 8)).astype(np.float32),
                RNG.integers(0, 16, (3, 5)).astype(np.int32),
                "indirect",
            ),
        ),
        (
            scatter_add_rows_kernel,
            (RNG.standard_normal((3, 5, 8)).astype(np.float32), RNG.integers(0, 16, (3, 5)).astype(np.int32), 16),
        ),
    ],
)
def test_lnc2_equals_lnc1_and_covers_outputs_once(kernel, args):
    one, two = _run(kernel, 1, *args), _run(kernel, 2, *args)
    for a, b in zip(one if isinstance(one, tuple) else (one,), two if isinstance(two, tuple) else (two,)):
        np.testing.assert_array_equal(a, b)


def _every_program_takes_everything(n_work):
    return 0, n_work


def _last_item_dropped(n_work):
    lo, hi = WORK_RANGE(n_work)
    return lo, (hi - 1 if nl.program_id(0) == 1 else hi)


@pytest.mark.parametrize(
    "planted, match",
    [(_every_program_takes_everything, "overlap"), (_last_item_dropped, "gap")],
)
def test_planted_shard_bugs_in_the_scan_are_caught(monkeypatch, planted, match):
    import nki_kernels.kernels.ssd_scan_fwd as fwd

    monkeypatch.setattr(fwd, "work_range", planted)
    args = (*_scan_args(b=4), 8)
    _run(ssd_scan_fwd_kernel, 1, *args)  # one program: no sharding, nothing to catch
    with pytest.raises(NkiShardError, match=match):
        _run(ssd_scan_fwd_kernel, 2, *args)


def test_planted_overlap_and_gap_in_a_small_kernel():
    @interp.jit
    def k(x, overlap):
        out = nl.ndarray(x.shape, x.dtype, buffer=nl.shared_hbm)
        half = x.shape[0] // 2
        lo = 0 if overlap else nl.program_id(0) * half
        if nl.program_id(0) == 0 or overlap:
            t = nl.load(x[lo : lo + half])
            nl.store(out[lo : lo + half], t)
        return out

    x = np.ones((8, 3), np.float32)
    with pytest.raises(NkiShardError, match="overlap"):
        interp.simulate(k[2])(x, True)
    with pytest.raises(NkiShardError, match="gap"):
        interp.simulate(k[2])(x, False)


def test_launch_degree_and_compiler_flags_agree(monkeypatch):
    monkeypatch.delenv("NEURON_LOGICAL_NC_CONFIG", raising=False)
    assert lnc_degree() == 2 and compiler_flags() == ["--lnc=2"]
    monkeypatch.setenv("NEURON_LOGICAL_NC_CONFIG", "1")
    assert lnc_degree() == 1 and grid(ssd_scan_fwd_kernel).lnc == 1
    monkeypatch.setenv("NEURON_LOGICAL_NC_CONFIG", "4")
    with pytest.raises(ValueError, match="NEURON_LOGICAL_NC_CONFIG"):
        lnc_degree()


def test_unsharded_kernel_under_lnc2_is_an_overlap():
    @interp.jit
    def whole(x):
        out = nl.ndarray(x.shape, x.dtype, buffer=nl.shared_hbm)
        t = nl.load(x)
        nisa.tensor_copy(dst=t, src=t)
        nl.store(out, t)
        return out

    with pytest.raises(NkiShardError, match="overlap"):
        interp.simulate(whole[2])(np.ones((4, 4), np.float32))
