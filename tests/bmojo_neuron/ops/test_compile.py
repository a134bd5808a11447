"""``torch.compile(fullgraph=True)`` of a ``bmojo`` layer (forward + backward) and of a tiny model forward:
the custom ops have fake kernels and autograd, the rest of the torch path has static shapes and no graph
breaks. The fast test compiles with ``aot_eager`` (Dynamo capture + AOTAutograd tracing with fake tensors,
the parts that can fail on our ops); the Inductor build is marked slow (about a minute of codegen)."""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron import BMojoForCausalLM
from bmojo_neuron.layers import Tokens
from bmojo_neuron.modeling_bmojo import BMojoDecoderLayer
from bmojo_neuron.ops import use_kernels
from bmojo_neuron.testing import tiny_config
from tests.helpers.ops import assert_close

SEQ = 40


def layer_inputs(config):
    hidden = torch.randn(2, SEQ, config.hidden_size, requires_grad=True)
    mask = torch.ones(2, SEQ, dtype=torch.bool)
    mask[1, 30:] = False
    return hidden, Tokens.whole_sequence(config, SEQ, hidden.dtype, mask)


def check_layer(backend: str) -> None:
    torch._dynamo.reset()
    config = tiny_config(["bmojo"])
    layer = BMojoDecoderLayer(config, 0)
    hidden, tokens = layer_inputs(config)
    with use_kernels("torch"):
        out, aux = torch.compile(layer, fullgraph=True, backend=backend)(hidden, tokens)
        (grad,) = torch.autograd.grad(out.sum() + aux, hidden)
        out_eager, aux_eager = layer(hidden, tokens)
        (grad_eager,) = torch.autograd.grad(out_eager.sum() + aux_eager, hidden)
    assert_close(out, out_eager, 1e-4, "compiled layer output")
    assert_close(grad, grad_eager, 1e-4, "compiled layer input gradient")


def test_bmojo_layer_compiles_fullgraph():
    check_layer("aot_eager")


def test_tiny_model_forward_compiles_fullgraph():
    torch._dynamo.reset()
    model = BMojoForCausalLM(tiny_config(["bmojo", "attention"])).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, SEQ))
    with torch.no_grad(), use_kernels("torch"):
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")(input_ids=ids, use_cache=False).logits
        eager = model(input_ids=ids, use_cache=False).logits
    assert_close(compiled, eager, 1e-4, "compiled logits")


@pytest.mark.slow
def test_bmojo_layer_compiles_with_inductor():
    check_layer("inductor")
