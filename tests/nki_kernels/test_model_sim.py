"""Model level: with the kernels (``sim``) a tiny bmojo model gives the torch path's logits and gradients."""

from __future__ import annotations

import torch

from bmojo_neuron import BMojoForCausalLM, ops
from bmojo_neuron.ops import dispatch
from bmojo_neuron.testing import tiny_config


def _logits_and_grads(model, ids, mode):
    model.zero_grad()
    with ops.use_kernels(mode):
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_tiny_bmojo_model_sim_equals_torch():
    # The windowed attention has no NKI kernel in this package: under "sim" it runs its torch path.
    torch.manual_seed(0)
    # The logits of a training step are compared, so the output layer is not fused with the loss.
    model = BMojoForCausalLM(tiny_config(["bmojo", "ssm"], fuse_linear_cross_entropy=False))
    ids = torch.randint(0, 97, (2, 29))  # 29 tokens: partial last chunk of 8
    logits_t, grads_t = _logits_and_grads(model, ids, "torch")
    logits_s, grads_s = _logits_and_grads(model, ids, "sim")
    for op in ("ssd_scan", "eidetic_select", "gather_rows"):
        assert dispatch._registry[op]["sim"].__module__ == "bmojo_neuron.ops.nki.sim"
    torch.testing.assert_close(logits_s, logits_t, rtol=1e-4, atol=1e-4)
    assert grads_s.keys() == grads_t.keys()
    for name in grads_t:
        torch.testing.assert_close(grads_s[name], grads_t[name], rtol=1e-3, atol=1e-4, msg=name)
