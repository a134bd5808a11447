"""The serving export runs on torch ops alone: Inferentia2 (NeuronCore-v2) is not an NKI target (current NKI
supports Trn2/Trn3 only), so the static prefill buckets and the decode step must contain no kernel call.

The check inspects the exported graphs: every call is an ATen/prims op, a Python operator, or one of the torch
path's own custom ops (``bmojo::*``, torch implementations in ``bmojo_neuron.ops``); none is a kernel op (the
TorchNeuron namespace ``bmojo_nki`` or anything named nki). A planted case routes the scan through a
``bmojo_nki`` op, as the device route would, and sees it caught."""

from __future__ import annotations

import torch

from bmojo_neuron.ops import dispatch
from bmojo_neuron.ops.nki.device import OP_NAMESPACE
from bmojo_neuron.testing import tiny_model
from inference import export as exporter
from tests.helpers.cache import SHORT_WINDOWS

# ``bmojo`` holds the torch path's custom ops (torch implementations): allowed; kernels live in OP_NAMESPACE.
ALLOWED_NAMESPACES = ("aten", "prims", "bmojo")


def kernel_calls(graph_module) -> list[str]:
    """Names of the graph's calls that are not ATen/prims ops or Python operators (custom ops, kernels)."""
    bad = []
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        target = node.target
        if isinstance(target, torch._ops.OpOverload):
            if target.namespace not in ALLOWED_NAMESPACES or "nki" in target.namespace:
                bad.append(str(target))
        elif isinstance(target, torch._ops.HigherOrderOperator) or getattr(target, "__module__", "") not in (
            "_operator",
            "operator",
            "builtins",
        ):
            bad.append(str(target))
    return bad


def _export(tmp_path, model):
    out = exporter.export(model, None, tmp_path, target="cpu", buckets=[8])
    return [torch.export.load(p).graph_module for p in sorted(out.glob("*.pt2"))]


@torch.no_grad()
def test_cpu_export_contains_no_kernel_call(tmp_path):
    graphs = _export(tmp_path, tiny_model(["bmojo", "ssm", "sliding_attention"], **SHORT_WINDOWS))
    assert len(graphs) == 2  # prefill_8 and decode
    for gm in graphs:
        assert kernel_calls(gm) == []
        assert not any(OP_NAMESPACE in str(n.target) or "nki" in str(n.target).lower() for n in gm.graph.nodes)


@torch.no_grad()
def test_a_kernel_op_in_the_export_is_caught(tmp_path, monkeypatch):
    """Planted: the scan resolves to a custom op (as the TorchNeuron route would); the check must see it."""
    reference_scan = dispatch._registry["ssd_scan"]["reference"]

    @torch.library.custom_op(f"{OP_NAMESPACE}::export_probe_scan", mutates_args=())
    def probe(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
              D: torch.Tensor | None, h0: torch.Tensor | None, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        y, h = reference_scan(x, dt, A, B, C, D, h0, chunk_size)
        return y.clone(), h.clone()

    @probe.register_fake
    def _(x, dt, A, B, C, D, h0, chunk_size):
        return x.new_empty(x.shape), x.new_empty((x.shape[0], x.shape[2], x.shape[3], B.shape[3]))

    monkeypatch.setitem(dispatch._registry, "ssd_scan", {**dispatch._registry["ssd_scan"], "torch": probe})
    graphs = _export(tmp_path, tiny_model(["ssm"], **SHORT_WINDOWS))
    assert any(f"{OP_NAMESPACE}.export_probe_scan" in c for gm in graphs for c in kernel_calls(gm))
