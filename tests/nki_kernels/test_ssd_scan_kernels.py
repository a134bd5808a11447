"""The SSD scan kernels, run by the interpreter, against the torch reference (outputs, states, gradients).

Tolerances: fp32 kernels vs a float64 reference, max error <= 2e-4 x max |reference| (fp32 chunked sums vs
a sequential loop); bf16 inputs vs the fp32 reference on the same bf16 values, <= 3e-2 x max |reference|
(the kernel rounds matmul operands and the output to bf16, ~2^-8 each).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bmojo_neuron.ops.nki.sim import ssd_scan_sim
from bmojo_neuron.ops.ssd.reference import ssd_scan_reference
from nki_kernels.interp import run_kernel
from nki_kernels.interp.torch_io import to_numpy
from nki_kernels.kernels.ssd_scan_bwd import ssd_scan_bwd_kernel
from nki_kernels.kernels.ssd_scan_fwd import ssd_scan_fwd_kernel
from tests.helpers.kernels import make_inputs, rel_err

FP32_TOL, BF16_TOL = 2e-4, 3e-2

# (batch, seq, heads, head_dim, state, chunk): partial last chunk, single chunk, many chunks, max tiles
CASES = {
    "partial_last_chunk": (2, 37, 2, 8, 4, 16),
    "single_chunk": (1, 64, 1, 16, 8, 64),
    "single_short_chunk": (1, 5, 1, 4, 4, 16),
    "many_chunks": (1, 200, 1, 8, 8, 8),
    "head_dim_above_chunk_and_state": (1, 20, 1, 16, 4, 8),
    "max_tiles": (1, 140, 1, 128, 128, 128),
}


def _np(t, dtype=torch.float32):
    return None if t is None else to_numpy(t.detach().to(dtype))


@pytest.mark.parametrize("case", list(CASES))
def test_forward_fp32_matches_reference(case):
    b, t, h, p, n, L = CASES[case]
    x, dt, A, B, C, D, h0 = make_inputs(b, t, h, p, n, with_d=case != "single_chunk", with_h0=case != "many_chunks")
    (y, final), _ = run_kernel(ssd_scan_fwd_kernel, _np(x), _np(dt), _np(A), _np(B), _np(C), _np(D), _np(h0), L)
    y_ref, final_ref = ssd_scan_reference(x, dt, A, B, C, D, h0)
    assert y.dtype == np.float32 and final.dtype == np.float32
    assert rel_err(y, y_ref) < FP32_TOL
    assert rel_err(final, final_ref) < FP32_TOL


@pytest.mark.parametrize("target", ["trn1", "trn2"])
def test_forward_bf16_matches_reference_on_both_targets(target):
    x, dt, A, B, C, D, h0 = make_inputs(1, 150, 2, 32, 16, dtype=torch.float32)
    xb, Bb, Cb = (v.to(torch.bfloat16) for v in (x, B, C))
    bf = torch.bfloat16
    (y, final), rep = run_kernel(
        ssd_scan_fwd_kernel, _np(xb, bf), _np(dt), _np(A), _np(Bb, bf), _np(Cb, bf), _np(D), _np(h0), 64, target=target
    )
    y_ref, final_ref = ssd_scan_reference(xb.float(), dt, A, Bb.float(), Cb.float(), D, h0)
    assert str(y.dtype) == "bfloat16"
    assert rel_err(y.astype(np.float32), y_ref) < BF16_TOL
    assert rel_err(final, final_ref) < BF16_TOL
    assert rep.target == target and rep.psum_peak_banks <= 7


@pytest.mark.parametrize(
    "case", ["partial_last_chunk", "single_short_chunk", "many_chunks", "head_dim_above_chunk_and_state"]
)
@pytest.mark.parametrize("with_grad_final", [True, False])
def test_backward_matches_autograd_of_reference(case, with_grad_final):
    b, t, h, p, n, L = CASES[case]
    x, dt, A, B, C, D, h0 = make_inputs(b, t, h, p, n, seed=1)
    leaves = [v.requires_grad_() for v in (x, dt, A, B, C, D, h0)]
    y, final = ssd_scan_reference(*leaves)
    gy = torch.randn_like(y)
    gf = torch.randn_like(final) if with_grad_final else None
    loss = (y * gy).sum() + ((final * gf).sum() if gf is not None else 0.0)
    grads = torch.autograd.grad(loss, leaves)
    outs, _ = run_kernel(ssd_scan_bwd_kernel, *[_np(v) for v in (x, dt, A, B, C, D, h0, gy, gf)], L)
    for name, got, ref in zip(("dx", "ddt", "dA", "dB", "dC", "dD", "dh0"), outs, grads):
        assert rel_err(got, ref) < 1e-3 if name == "dA" else rel_err(got, ref) < FP32_TOL, name


def test_backward_without_d_and_initial_state():
    x, dt, A, B, C, _, _ = make_inputs(1, 40, 2, 8, 8, seed=2)
    leaves = [v.requires_grad_() for v in (x, dt, A, B, C)]
    y, _ = ssd_scan_reference(*leaves)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad((y * gy).sum(), leaves)
    outs, _ = run_kernel(ssd_scan_bwd_kernel, *[_np(v) for v in (x, dt, A, B, C)], None, None, _np(gy), None, 16)
    for name, got, ref in zip(("dx", "ddt", "dA", "dB", "dC"), outs, grads):
        assert rel_err(got, ref) < 1e-3, name


def test_bridge_autograd_matches_reference_fp32():
    x, dt, A, B, C, D, h0 = make_inputs(2, 45, 2, 8, 4, dtype=torch.float32, seed=3)
    a = [v.clone().requires_grad_() for v in (x, dt, A, B, C, D, h0)]
    r = [v.double().requires_grad_() for v in (x, dt, A, B, C, D, h0)]
    y, f = ssd_scan_sim(*a, chunk_size=16)
    y_ref, f_ref = ssd_scan_reference(*r, chunk_size=16)
    assert y.dtype == torch.float32 and f.dtype == torch.float32
    ((y * y_ref.detach().float()).sum() + f.sum()).backward()
    ((y_ref * y_ref.detach()).sum() + f_ref.sum()).backward()
    assert rel_err(y.detach(), y_ref.detach()) < FP32_TOL
    for got, ref in zip(a, r):
        assert rel_err(got.grad, ref.grad) < 1e-3


def test_bridge_bf16_returns_bf16_and_grads_in_input_dtypes():
    x, dt, A, B, C, D, _ = make_inputs(1, 20, 1, 8, 4, dtype=torch.float32, seed=4)
    xb, Bb, Cb = (v.to(torch.bfloat16).requires_grad_() for v in (x, B, C))
    y, f = ssd_scan_sim(xb, dt, A, Bb, Cb, D, None, 8)
    assert y.dtype == torch.bfloat16 and f.dtype == torch.float32
    y.float().sum().backward()
    assert xb.grad.dtype == torch.bfloat16 and Bb.grad.dtype == torch.bfloat16
    y_ref, _ = ssd_scan_reference(xb.detach().float(), dt, A, Bb.detach().float(), Cb.detach().float(), D)
    assert rel_err(y.detach().float(), y_ref) < BF16_TOL
