"""The fused autograd Functions of :mod:`bmojo_neuron.ops.fused` against their plain-autograd references:
outputs and gradients in fp32 and bf16 (odd shapes), ``gradcheck`` in fp64, and what they save."""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron.ops import fused
from tests.helpers.ops import BF16_RTOL, assert_close

SHAPES = [(7,), (3, 5, 13), (2, 1, 9, 33)]
EPS = 1e-6
NAMES = ["rms_norm", "gated_rms_norm", "swiglu"]


def _inputs(name: str, shape, dtype, weight_dtype):
    g = torch.Generator().manual_seed(NAMES.index(name) * 1000 + sum(shape))
    n_in = 2 if name in ("gated_rms_norm", "swiglu") else 1
    xs = [(torch.randn(shape, generator=g) * 2).to(dtype).requires_grad_() for _ in range(n_in)]
    if name == "swiglu":
        return xs, []
    w = (1 + 0.3 * torch.randn(shape[-1], generator=g)).to(weight_dtype).requires_grad_()
    return xs, [w]


def _call(name: str, impl: str, xs, ws):
    fn = getattr(fused, name if impl == "fused" else f"{name}_reference")
    return fn(*xs) if name == "swiglu" else fn(*xs, *ws, EPS)


def _check(name: str, shape, dtype, weight_dtype, rtol: float) -> None:
    xs, ws = _inputs(name, shape, dtype, weight_dtype)
    leaves = xs + ws
    out_f = _call(name, "fused", xs, ws)
    out_r = _call(name, "reference", xs, ws)
    assert out_f.dtype == out_r.dtype
    assert_close(out_f, out_r, rtol, f"{name} output")
    cot = torch.randn(out_r.shape, generator=torch.Generator().manual_seed(1)).to(out_r.dtype)
    g_f = torch.autograd.grad(out_f, leaves, cot)
    g_r = torch.autograd.grad(out_r, leaves, cot)
    for i, (a, b) in enumerate(zip(g_f, g_r)):
        assert_close(a, b, rtol, f"{name} grad {i}")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_fp32_matches_reference(name, shape):
    _check(name, shape, torch.float32, torch.float32, 1e-5)


@pytest.mark.parametrize("weight_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_bf16_matches_reference(name, shape, weight_dtype):
    _check(name, shape, torch.bfloat16, weight_dtype, BF16_RTOL)


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_bit_identical_fp32(name):
    xs, ws = _inputs(name, (4, 6, 17), torch.float32, torch.float32)
    assert torch.equal(_call(name, "fused", xs, ws), _call(name, "reference", xs, ws))


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_fp64(name):
    xs, ws = _inputs(name, (2, 3, 5), torch.float64, torch.float64)
    assert torch.autograd.gradcheck(lambda *a: _call(name, "fused", a[: len(xs)], a[len(xs) :]), (*xs, *ws))


def _saved_numel(fn) -> int:
    """Total elements of the tensors autograd saves while ``fn()`` builds its graph."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


@pytest.mark.parametrize("name", NAMES)
def test_saves_less_than_reference(name):
    shape = (3, 16, 32)
    xs, ws = _inputs(name, shape, torch.float32, torch.float32)
    rows, n = 3 * 16, 3 * 16 * 32
    saved = _saved_numel(lambda: _call(name, "fused", xs, ws))
    expected = {"rms_norm": n + 32 + rows, "gated_rms_norm": 2 * n + 32 + rows, "swiglu": 2 * n}[name]
    assert saved == expected
    assert saved < _saved_numel(lambda: _call(name, "reference", xs, ws))


def test_compiles_fullgraph():
    torch._dynamo.reset()
    y, z, w = torch.randn(2, 5, 8, requires_grad=True), torch.randn(2, 5, 8), torch.ones(8, requires_grad=True)

    def f(y, z, w):
        return fused.swiglu(fused.rms_norm(fused.gated_rms_norm(y, z, w, EPS), w, EPS), z)

    out = torch.compile(f, fullgraph=True, backend="aot_eager")(y, z, w)
    ref = f(y, z, w)
    assert_close(out, ref, 1e-5, "compiled output")
    g_c = torch.autograd.grad(out.sum(), (y, w))
    g_e = torch.autograd.grad(ref.sum(), (y, w))
    for a, b in zip(g_c, g_e):
        assert_close(a, b, 1e-5, "compiled grad")


# --- Functions that also hold a weight: the SwiGLU with its down projection, the causal conv with its silu


def _weighted_inputs(name: str, dtype, seq: int = 13):
    g = torch.Generator().manual_seed(7 + seq)
    r = lambda *s: (torch.randn(s, generator=g) * 0.7).to(dtype).requires_grad_()  # noqa: E731
    if name == "swiglu_down":
        return r(3, seq, 11), r(3, seq, 11), r(5, 11)
    return r(2, seq, 6), r(6, 1, 4), r(6)  # causal_conv_silu: (B, T, C), conv1d weight (C, 1, K), bias


WEIGHTED = ["swiglu_down", "causal_conv_silu"]


@pytest.mark.parametrize("seq", [1, 3, 13])  # shorter than, near and longer than the conv kernel
@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.bfloat16, BF16_RTOL)])
@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_match_reference(name, dtype, rtol, seq):
    inputs = _weighted_inputs(name, dtype, seq)
    out_f = getattr(fused, name)(*inputs)
    out_r = getattr(fused, f"{name}_reference")(*inputs)
    assert out_f.dtype == out_r.dtype and out_f.shape == out_r.shape
    assert_close(out_f, out_r, rtol, f"{name} output")
    cot = torch.randn(out_r.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    for i, (a, b) in enumerate(zip(torch.autograd.grad(out_f, inputs, cot), torch.autograd.grad(out_r, inputs, cot))):
        assert_close(a, b, rtol, f"{name} grad {i}")


@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_gradcheck_fp64(name):
    assert torch.autograd.gradcheck(getattr(fused, name), _weighted_inputs(name, torch.float64, 5))


@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_save_their_inputs_only(name):
    inputs = _weighted_inputs(name, torch.float32)
    saved = _saved_numel(lambda: getattr(fused, name)(*inputs))
    assert saved == sum(t.numel() for t in inputs)
    assert saved < _saved_numel(lambda: getattr(fused, f"{name}_reference")(*inputs))
