"""Whole model: the ``torch`` kernels and the ``reference`` ones give the same logits, losses and parameter
gradients, for every layer type and a hybrid, with and without padding (trailing and leading)."""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron import BMojoForCausalLM
from bmojo_neuron.ops import use_kernels
from bmojo_neuron.testing import tiny_config

# Not a multiple of the window (8) or the chunk (8), and long enough to fill the eidetic memory.
SEQ = 45
RTOL = 1e-4  # fp32; the paths differ only in the order of their sums


def run(model, mode, ids, mask):
    model.zero_grad()
    # A label counts when its token and the one before are real: the logits of a padded position are
    # unspecified (a padded query may see no key at all), and with leading padding the first real token
    # would be predicted from one.
    real = mask.bool()
    labels = ids.masked_fill(~(real & real.roll(1, dims=1)), -100)
    with use_kernels(mode):
        out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach(), out.loss.detach(), grads


def close(a, b, what):
    scale = b.abs().max().clamp_min(1e-2)
    torch.testing.assert_close(a, b, rtol=RTOL, atol=RTOL * scale.item(), msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("padding", ["none", "trailing", "leading"])
def test_torch_kernels_match_reference(any_layer_types, padding):
    # The logits of a training step are compared, so the output layer is not fused with the loss (the fused
    # loss has its own tests: tests/bmojo_neuron/ops/test_cross_entropy.py).
    model = BMojoForCausalLM(tiny_config(any_layer_types, eidetic_aux_loss_weight=0.1, fuse_linear_cross_entropy=False))
    ids = torch.randint(0, model.config.vocab_size, (2, SEQ))
    mask = torch.ones(2, SEQ, dtype=torch.long)
    if padding == "trailing":
        mask[1, 31:] = 0
    elif padding == "leading":
        mask[1, :12] = 0
    logits_ref, loss_ref, grads_ref = run(model, "reference", ids, mask)
    logits, loss, grads = run(model, "torch", ids, mask)
    real = mask.bool()
    close(logits[real], logits_ref[real], "logits at real positions")
    close(loss, loss_ref, "loss")
    assert grads.keys() == grads_ref.keys() and len(grads) > 0
    for name in grads_ref:
        close(grads[name], grads_ref[name], f"grad {name}")
