"""Hardware loops (nl.fori_loop) in the scan kernels: program size independent of T, same values as the unrolled
form, and the interpreter's checks on loop bodies and loop registers."""

from __future__ import annotations

import numpy as np
import pytest

import nki_kernels.kernels.ssd_scan_bwd as bwd_mod
import nki_kernels.kernels.ssd_scan_fwd as fwd_mod
from nki_kernels import interp
from nki_kernels.interp import NkiUsageError
from nki_kernels.interp import isa as nisa
from nki_kernels.interp import language as nl
from nki_kernels.kernels.ssd_scan_bwd import ssd_scan_bwd_kernel
from nki_kernels.kernels.ssd_scan_fwd import ssd_scan_fwd_kernel

# head_dim 64 fp32 -> 8 chunks of 16 per transfer (2 KiB per partition): T = 256 and 512 are 2 and 4 groups,
# T = 300 adds an unrolled tail with a partial chunk.
P, N, L = 64, 16, 16


def _args(T, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, T, 1, P)).astype(np.float32)
    dt = np.log1p(np.exp(rng.standard_normal((1, T, 1)) - 1)).astype(np.float32)
    A = -(rng.random(1) + 0.3).astype(np.float32)
    B = (rng.standard_normal((1, T, 1, N)) / 4).astype(np.float32)
    C = rng.standard_normal((1, T, 1, N)).astype(np.float32)
    return x, dt, A, B, C, np.ones(1, np.float32), rng.standard_normal((1, 1, P, N)).astype(np.float32)


def _fwd(T):
    return interp.run_kernel(ssd_scan_fwd_kernel[1], *_args(T), L)


def _bwd(T):
    args = _args(T)
    gy = np.random.default_rng(1).standard_normal(args[0].shape).astype(np.float32)
    return interp.run_kernel(ssd_scan_bwd_kernel[1], *args, gy, None, L)


@pytest.mark.parametrize("run", [_fwd, _bwd])
def test_program_size_does_not_grow_with_T(run):
    (_, small), (_, large) = run(256), run(512)
    assert small.static_instructions == large.static_instructions
    dyn = [sum(e["instructions"] for e in r.engines.values()) for r in (small, large)]
    assert dyn[1] > dyn[0]  # the hardware executes more iterations
    assert max(small.psum_peak_banks, large.psum_peak_banks) <= 7


@pytest.mark.parametrize("mod, run", [(fwd_mod, _fwd), (bwd_mod, _bwd)])
def test_unrolled_form_gives_the_same_values_and_a_larger_program(monkeypatch, mod, run):
    dyn_out, dyn_rep = run(300)
    monkeypatch.setattr(mod, "DYNAMIC_LOOPS", False)  # the SDK <= 2.31 form
    unr_out, unr_rep = run(300)
    for a, b in zip(dyn_out, unr_out):
        np.testing.assert_array_equal(a, b)
    assert unr_rep.static_instructions > dyn_rep.static_instructions


def test_loop_body_must_issue_the_same_instructions_every_iteration():
    @interp.jit
    def k(x):
        out = nl.ndarray(x.shape, x.dtype, buffer=nl.shared_hbm)
        t = nl.ndarray((4, 4), nl.float32)
        state = {"i": 0}

        def body(i):
            nisa.memset(dst=t, value=0.0)
            if state["i"] == 1:  # a branch on something that changes per iteration
                nisa.memset(dst=t, value=1.0)
            state["i"] += 1

        nl.fori_loop(0, 3, body)
        nl.store(out, t)
        return out

    with pytest.raises(NkiUsageError, match="same|fixed instruction sequence"):
        interp.simulate(k)(np.zeros((4, 4), np.float32))


def test_loop_register_is_not_a_python_int():
    @interp.jit
    def k(x):
        out = nl.ndarray(x.shape, x.dtype, buffer=nl.shared_hbm)

        def body(i):
            t = nl.load(x[i : i + 1])  # slicing with the register: not possible on hardware
            nl.store(out[0:1], t)

        nl.fori_loop(0, 2, body)
        return out

    with pytest.raises(NkiUsageError, match="loop register"):
        interp.simulate(k)(np.zeros((4, 4), np.float32))
