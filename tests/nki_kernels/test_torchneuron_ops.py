"""The TorchNeuron custom ops, built on the CPU through torch.library.custom_op (the machinery nki_op registers
through) with the interpreter standing in for the compiled kernel: schemas, opcheck, values and gradients."""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron.ops.nki.device import dispatcher_impls
from bmojo_neuron.ops.ssd.reference import ssd_scan_reference
from nki_kernels import interp
from nki_kernels.launch import grid
from nki_kernels.torchneuron_ops import build_ops
from tests.helpers.kernels import make_inputs


def _interp_run(kernel, *args):
    out, _ = interp.run_kernel(grid(kernel), *args)
    return out


OPS = build_ops("bmojo_cpu_test", torch.library.custom_op, _interp_run)


def test_schemas_have_fixed_arity_returns_and_optional_tensors():
    fwd = str(torch.ops.bmojo_cpu_test.ssd_scan_fwd.default._schema)
    bwd = str(torch.ops.bmojo_cpu_test.ssd_scan_bwd.default._schema)
    assert "Tensor? D, Tensor? initial_state, SymInt chunk_size) -> (Tensor, Tensor)" in fwd
    assert "Tensor? grad_final_state" in bwd and bwd.endswith(
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
    )
    sel = str(torch.ops.bmojo_cpu_test.eidetic_select.default._schema)
    assert "str policy" in sel and sel.endswith("-> (Tensor, Tensor)")


def test_variadic_tuple_return_cannot_be_inferred():
    # the annotation the old device.py had: PyTorch cannot build a schema from it (audit F7)
    def bad(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (x,)

    with pytest.raises(ValueError, match="unsupported type"):
        torch.library.infer_schema(bad, mutates_args=())


def _scan_args(dtype=torch.float32, with_d=True, with_h0=True):
    x, dt, A, B, C, D, h0 = make_inputs(2, 13, 3, 4, 4, dtype=dtype, with_d=with_d, with_h0=with_h0)
    return x, dt, A, B, C, D, h0


@pytest.mark.parametrize("with_optional", [True, False])
def test_opcheck_scan_forward_and_backward(with_optional):
    x, dt, A, B, C, D, h0 = _scan_args(with_d=with_optional, with_h0=with_optional)
    args = [t.requires_grad_() if t is not None else None for t in (x, dt, A, B, C, D, h0)]
    torch.library.opcheck(OPS["ssd_scan_fwd"], (*args, 8))
    gy = torch.randn_like(x)
    gf = torch.randn(2, 3, 4, 4) if with_optional else None
    torch.library.opcheck(OPS["ssd_scan_bwd"], (x.detach(), dt.detach(), A.detach(), B.detach(), C.detach(),
                                                None if D is None else D.detach(), None if h0 is None else h0.detach(),
                                                gy, gf, 8))  # fmt: skip


def test_opcheck_gather_scatter_select():
    src = torch.randn(2, 10, 6, requires_grad=True)
    idx = torch.randint(0, 10, (2, 5))
    torch.library.opcheck(OPS["gather_rows"], (src, idx))
    torch.library.opcheck(OPS["scatter_add_rows"], (torch.randn(2, 5, 6), idx, 10))
    torch.library.opcheck(OPS["eidetic_select"], (torch.randn(3, 20), 8, 4, 6, "topk", 1))


def test_ops_match_the_reference_values_and_gradients():
    x, dt, A, B, C, D, h0 = (t.float().requires_grad_() for t in _scan_args())
    impl = dispatcher_impls(OPS)
    y, final = impl["ssd_scan"](x, dt, A, B, C, D, h0, chunk_size=8)
    y_ref, final_ref = ssd_scan_reference(x, dt, A, B, C, D, h0)
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(final, final_ref, atol=1e-4, rtol=1e-4)
    inputs = (x, dt, A, B, C, D, h0)
    w = torch.randn_like(y_ref)
    got = torch.autograd.grad((y * w).sum() + final.sum(), inputs)
    ref = torch.autograd.grad((y_ref * w).sum() + final_ref.sum(), inputs)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, atol=2e-4, rtol=2e-4)

    src = torch.randn(2, 10, 6, requires_grad=True)
    idx = torch.randint(0, 10, (2, 7))
    out = impl["gather_rows"](src, idx)
    torch.testing.assert_close(out, torch.gather(src, 1, idx[..., None].expand(-1, -1, 6)))
    (g,) = torch.autograd.grad(out.sum(), src)
    torch.testing.assert_close(
        g, torch.zeros_like(src).index_put_((torch.arange(2)[:, None], idx), torch.ones(2, 7, 6), accumulate=True)
    )
