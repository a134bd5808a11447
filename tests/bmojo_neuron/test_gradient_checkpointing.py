"""Gradient checkpointing (``activation_checkpointing_enable()``, called ``gradient_checkpointing_enable()``
before transformers 5.24): every layer is recomputed in the backward pass, gradients unchanged."""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron import BMojoForCausalLM
from bmojo_neuron.testing import tiny_config


def _loss_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(ids, labels=ids)
    out.loss.backward()
    return out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _count_mixer_calls(model) -> list[int]:
    calls = [0] * len(model.model.layers)
    for i, layer in enumerate(model.model.layers):
        layer.mixer.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


@pytest.mark.parametrize("use_reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_gradients_equal_without_checkpointing(any_layer_types, use_reentrant):
    torch.manual_seed(0)
    model = BMojoForCausalLM(tiny_config(any_layer_types)).train()
    ids = torch.randint(0, model.config.vocab_size, (2, 37))  # odd length: a partial last chunk
    loss, grads = _loss_and_grads(model, ids)

    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": use_reentrant})
    calls = _count_mixer_calls(model)
    loss_ckpt, grads_ckpt = _loss_and_grads(model, ids)

    assert calls == [2] * len(calls), "each layer runs once forward and once more in the backward pass"
    torch.testing.assert_close(loss_ckpt, loss, rtol=0, atol=0)
    assert grads_ckpt.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-5, atol=1e-5, msg=name)


def test_the_older_name_still_enables_it():
    model = BMojoForCausalLM(tiny_config(["bmojo", "ssm"])).train()
    with pytest.warns(FutureWarning):  # transformers' own deprecation of the name
        model.gradient_checkpointing_enable()
    calls = _count_mixer_calls(model)
    model(torch.randint(0, 97, (1, 12)), labels=torch.randint(0, 97, (1, 12))).loss.backward()
    assert calls == [2, 2]


def test_evaluation_and_generation_do_not_recompute():
    model = BMojoForCausalLM(tiny_config(["bmojo", "ssm"])).train()
    model.activation_checkpointing_enable()
    calls = _count_mixer_calls(model)
    with torch.no_grad():
        model(torch.randint(0, 97, (1, 12)))
    assert calls == [1, 1]
