"""The dispatcher: BMOJO_KERNELS values, use_kernels blocks, the auto default, clear errors."""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron import ops
from bmojo_neuron.ops import dispatch
from bmojo_neuron.ops.attention.blocked import bmojo_attention_blocked
from bmojo_neuron.ops.attention.reference import bmojo_attention_reference
from bmojo_neuron.ops.ssd.custom import ssd_scan_torch
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
        assert ops.resolve("bmojo_attention", torch.zeros(1)) is bmojo_attention_blocked
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
