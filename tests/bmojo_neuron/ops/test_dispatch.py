"""The dispatcher: BMOJO_KERNELS values, use_kernels blocks, the auto default, clear errors."""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron import ops
from bmojo_neuron.ops import dispatch
from bmojo_neuron.ops.attention.blocked import bmojo_attention_torch
from bmojo_neuron.ops.attention.reference import bmojo_attention_reference
from bmojo_neuron.ops.ssd.custom_op import ssd_scan_torch
from bmojo_neuron.ops.ssd.reference import ssd_scan_reference

OPS = ("ssd_scan", "eidetic_select", "gather_rows", "bmojo_attention")


@pytest.mark.parametrize("op", OPS)
def test_every_op_has_reference_and_torch(op):
    assert {"reference", "torch"} <= set(ops.available(op))
    assert ops.resolve(op, torch.zeros(1)) is not dispatch._registry[op]["reference"]  # auto on CPU = torch


@pytest.mark.parametrize("value,expected", [("reference", ssd_scan_reference), ("torch", ssd_scan_torch),
                                            ("auto", ssd_scan_torch), ("", ssd_scan_torch), (" Torch ", ssd_scan_torch)])  # fmt: skip
def test_env_var_selects_implementation(monkeypatch, value, expected):
    monkeypatch.setenv("BMOJO_KERNELS", value)
    assert ops.resolve("ssd_scan", torch.zeros(1)) is expected


def test_use_kernels_overrides_env_and_nests(monkeypatch):
    monkeypatch.setenv("BMOJO_KERNELS", "reference")
    assert ops.resolve("bmojo_attention", torch.zeros(1)) is bmojo_attention_reference
    with ops.use_kernels("torch"):
        assert ops.resolve("bmojo_attention", torch.zeros(1)) is bmojo_attention_torch
        with ops.use_kernels("reference"):
            assert ops.resolve("bmojo_attention", torch.zeros(1)) is bmojo_attention_reference
        assert ops.kernel_mode() == "torch"
    assert ops.kernel_mode() == "reference"


def test_invalid_values_raise(monkeypatch):
    monkeypatch.setenv("BMOJO_KERNELS", "cuda")
    with pytest.raises(ValueError, match="BMOJO_KERNELS='cuda' is not valid"):
        ops.resolve("ssd_scan", torch.zeros(1))
    with pytest.raises(ValueError, match="not valid"), ops.use_kernels("fast"):
        pass
    with pytest.raises(ValueError, match="unknown implementation"):
        ops.register("ssd_scan", "cuda")


def test_nki_without_sdk_is_a_clear_error(monkeypatch):
    if dispatch.neuron_sdk_available():
        pytest.skip("the Neuron SDK imports here")
    monkeypatch.setenv("BMOJO_KERNELS", "nki")
    with pytest.raises(ops.KernelUnavailableError, match="Neuron SDK"):
        ops.resolve("ssd_scan", torch.zeros(1))


def test_missing_implementation_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(dispatch._registry, "only_reference_op", {"reference": lambda: None})
    with ops.use_kernels("torch"), pytest.raises(ops.KernelUnavailableError, match="has no 'torch' implementation"):
        ops.resolve("only_reference_op", torch.zeros(1))
    with pytest.raises(KeyError, match="no op named"):
        ops.resolve("no_such_op", torch.zeros(1))


def test_unimportable_provider_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(dispatch._PROVIDERS, "sim", "bmojo_neuron_no_such_module")
    monkeypatch.setitem(dispatch._registry, "only_reference_op", {"reference": lambda: None})
    with ops.use_kernels("sim"), pytest.raises(ops.KernelUnavailableError, match="failed to import"):
        ops.resolve("only_reference_op", torch.zeros(1))


def test_auto_picks_nki_only_on_a_neuron_device(monkeypatch):
    monkeypatch.setattr(dispatch, "neuron_sdk_available", lambda: True)
    monkeypatch.setitem(dispatch._registry, "probe_op", {"torch": "torch-impl", "nki": "nki-impl"})

    class NeuronTensor(torch.Tensor):
        @property
        def device(self):
            return type("Device", (), {"type": "xla"})()  # torch.device("xla") needs torch_xla

    assert ops.resolve("probe_op", torch.zeros(1)) == "torch-impl"
    assert ops.resolve("probe_op", torch.zeros(1).as_subclass(NeuronTensor)) == "nki-impl"


def test_nki_mode_runs_the_torchneuron_ops_of_the_detected_stack(monkeypatch):
    """BMOJO_KERNELS=nki with the TorchNeuron stack: the dispatcher's nki implementations are the custom ops.
    Here the ops are built with torch.library.custom_op and the interpreter instead of nki_op and a device."""
    from bmojo_neuron.ops.nki import device
    from nki_kernels import interp
    from nki_kernels.launch import grid
    from nki_kernels.torchneuron_ops import build_ops

    ops_cpu = build_ops("bmojo_dispatch_test", torch.library.custom_op, lambda k, *a: interp.run_kernel(grid(k), *a)[0])
    monkeypatch.setattr(device, "register_torchneuron_ops", lambda: ops_cpu)
    monkeypatch.setattr(dispatch, "neuron_sdk_available", lambda: True)
    for op in ("ssd_scan", "eidetic_select", "gather_rows"):
        monkeypatch.setitem(dispatch._registry, op, dict(dispatch._registry[op]))
    for op, fn in device.implementations(stack="torchneuron").items():
        dispatch.register(op, "nki")(fn)
    g = torch.Generator().manual_seed(0)
    x, B, C = (
        torch.randn(1, 9, 2, 4, generator=g),
        torch.randn(1, 9, 2, 4, generator=g),
        torch.randn(1, 9, 2, 4, generator=g),
    )
    dt, A = torch.rand(1, 9, 2, generator=g) + 0.1, -torch.rand(2, generator=g) - 0.3
    with ops.use_kernels("nki"):
        y, final = ops.resolve("ssd_scan", x)(x, dt, A, B, C, chunk_size=4)
    y_ref, final_ref = ssd_scan_reference(x, dt, A, B, C)
    torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(final, final_ref, atol=1e-4, rtol=1e-4)
    if device.detect_stack() is None:  # no SDK here: asking for a stack that is not installed is a clear error
        with pytest.raises(RuntimeError, match="no Neuron device stack"):
            device.implementations()


def test_provider_that_cannot_run_here_is_a_clear_error(monkeypatch):
    """A provider imports but says why it cannot run (the nki one without a device stack): KernelUnavailableError."""
    import sys
    import types

    def implementations():
        raise RuntimeError("no Neuron device stack imports here")

    monkeypatch.setitem(sys.modules, "bmojo_test_provider", types.SimpleNamespace(implementations=implementations))
    monkeypatch.setitem(dispatch._PROVIDERS, "sim", "bmojo_test_provider")
    monkeypatch.setitem(dispatch._registry, "only_reference_op", {"reference": lambda: None})
    with ops.use_kernels("sim"), pytest.raises(ops.KernelUnavailableError, match="cannot run here: no Neuron device"):
        ops.resolve("only_reference_op", torch.zeros(1))


def test_providers_register_their_implementations_under_their_mode(monkeypatch):
    import sys
    import types

    def probe_sim(t):
        return t

    monkeypatch.setitem(
        sys.modules, "bmojo_test_provider", types.SimpleNamespace(implementations=lambda: {"probe_op": probe_sim})
    )
    monkeypatch.setitem(dispatch._PROVIDERS, "sim", "bmojo_test_provider")
    monkeypatch.setitem(dispatch._registry, "probe_op", {"reference": lambda t: t})
    with ops.use_kernels("sim"):
        assert ops.resolve("probe_op", torch.zeros(1)) is probe_sim
    assert dispatch._registry["probe_op"]["sim"] is probe_sim
