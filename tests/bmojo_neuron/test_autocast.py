"""Mixed precision: a training step under ``torch.autocast(bfloat16)`` (what the Trainer's ``bf16=True`` does)
runs for every layer stack, with and without the fused output loss, and its loss and gradients follow the fp32
step. Autograd runs backwards outside the autocast region, so every fused Function must replay its forward's
autocast state (``ops.fused.keeps_autocast``); before that, each backward failed on a bf16 x fp32 product."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bmojo_neuron import BMojoForCausalLM
from bmojo_neuron.testing import LAYER_STACKS, tiny_config

# bf16 keeps 8 bits of mantissa: gradients of small parameters (the 2-element SSM skip D) sum many rounded
# products, so their direction is compared only for parameters of at least this many elements.
MIN_ELEMENTS = 16


def _step(model, ids, autocast: bool):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach().float(), {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("fuse_loss", [True, False], ids=["fused-loss", "plain-loss"])
@pytest.mark.parametrize("stack", list(LAYER_STACKS))
def test_bf16_autocast_training_step_follows_fp32(stack, fuse_loss):
    torch.manual_seed(0)
    model = BMojoForCausalLM(tiny_config(list(LAYER_STACKS[stack]), fuse_linear_cross_entropy=fuse_loss)).train()
    ids = torch.randint(0, model.config.vocab_size, (2, 40))
    loss32, grads32 = _step(model, ids, autocast=False)
    loss16, grads16 = _step(model, ids, autocast=True)
    torch.testing.assert_close(loss16, loss32, rtol=1e-2, atol=0)
    assert grads16.keys() == grads32.keys()
    for name, g in grads32.items():
        if g.numel() >= MIN_ELEMENTS:
            cosine = F.cosine_similarity(grads16[name].flatten(), g.flatten(), dim=0)
            assert cosine > 0.99, f"{name}: gradient direction {cosine:.4f} against fp32"
