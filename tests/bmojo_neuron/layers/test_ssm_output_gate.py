"""The gated current SSM output of ``bmojo_f``/``bmojo`` mixers (docs/layer.md, added 2026-12).

``mixer(x)_i = o_proj(attention_i) + g * s_i``: with the attention's output projection at zero a B'MOJO layer
is its SSM, so Mamba is a special case of the layer; ``ssm_output_gate="none"`` is the attention-only readout.
"""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron import BMojoConfig, BMojoForCausalLM
from bmojo_neuron.layers import Tokens
from bmojo_neuron.ops import use_kernels
from bmojo_neuron.testing import tiny_config

SEQ = 37  # crosses the window (8), the fading window (16) and the eidetic memory's first visible chunk (16)


def ssm_twin(model: BMojoForCausalLM) -> BMojoForCausalLM:
    """An all-``ssm`` model with ``model``'s embeddings, norms, MLPs and SSM weights."""
    config = model.config.to_dict()
    config["layer_types"] = ["ssm"] * model.config.num_hidden_layers
    twin = BMojoForCausalLM(BMojoConfig(**{k: v for k, v in config.items() if k in BMojoConfig.__dataclass_fields__}))
    state = {}
    for name, tensor in model.state_dict().items():
        if ".mixer." in name:
            if ".mixer.ssm." not in name:
                continue  # attention projections, eidetic score, gate: the twin has none
        state[name] = tensor
    missing, unexpected = twin.load_state_dict(state, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    return twin


@pytest.mark.parametrize("layer_type", ["bmojo_f", "bmojo"])
@pytest.mark.parametrize("kernels", ["reference", "torch"])
def test_mamba_is_a_special_case(layer_type, kernels):
    """o_proj = 0 and g = 1: every B'MOJO layer is the ``ssm`` layer with the same SSM weights."""
    model = BMojoForCausalLM(tiny_config([layer_type] * 2)).double().eval()
    for layer in model.model.layers:
        torch.nn.init.zeros_(layer.mixer.o_proj.weight)
        assert torch.equal(layer.mixer.ssm_gate, torch.ones_like(layer.mixer.ssm_gate))  # initialised to 1
    twin = ssm_twin(model).double().eval()
    ids = torch.randint(0, model.config.vocab_size, (2, SEQ))
    with torch.no_grad(), use_kernels(kernels):
        torch.testing.assert_close(model(ids).logits, twin(ids).logits, rtol=1e-10, atol=1e-10)


def test_without_the_gate_the_layer_is_not_its_ssm():
    """The attention-only readout (``none``) cannot be the SSM: with o_proj at zero the mixer outputs zero."""
    model = BMojoForCausalLM(tiny_config(["bmojo"] * 2, ssm_output_gate="none")).double().eval()
    assert model.model.layers[0].mixer.ssm_gate is None
    for layer in model.model.layers:
        torch.nn.init.zeros_(layer.mixer.o_proj.weight)
    twin = ssm_twin(model).double().eval()
    ids = torch.randint(0, model.config.vocab_size, (1, SEQ))
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, twin(ids).logits, atol=1e-3)


@pytest.mark.parametrize("gate", ["vector", "none"])
def test_current_ssm_output_reaches_the_query(gate):
    """``d out_i / d s_i`` is non-zero with the gate and zero without it (then s_i first shows at i + w)."""
    model = BMojoForCausalLM(tiny_config(["bmojo_f"], ssm_output_gate=gate)).double().eval()
    mixer = model.model.layers[0].mixer
    hidden = torch.randn(1, SEQ, model.config.hidden_size, dtype=torch.float64)
    captured = {}

    def keep(module, args, output):
        output.retain_grad()
        captured["s"] = output
        return output

    mixer.ssm.register_forward_hook(keep)
    out, _ = mixer(hidden, Tokens.whole_sequence(model.config, SEQ, torch.float64))
    i = 20
    out[0, i].sum().backward()
    grad = captured["s"].grad[0].abs().sum(-1)  # (seq,)
    assert (grad[i] > 0) == (gate == "vector")
    w = model.config.sliding_window
    assert torch.all(grad[i - w + 1 : i] == 0)  # positions in the raw window reach the query only as raw keys
    assert torch.all(grad[i + 1 :] == 0)  # causal


@pytest.mark.parametrize("value", ["scalar", "", None, 1])
def test_invalid_gate_names_the_field(value):
    with pytest.raises(ValueError, match="ssm_output_gate"):
        BMojoConfig(num_hidden_layers=2, ssm_output_gate=value)


def test_gate_is_saved_and_loaded(tmp_path):
    model = BMojoForCausalLM(tiny_config(["bmojo"] * 2))
    torch.nn.init.normal_(model.model.layers[1].mixer.ssm_gate)
    model.save_pretrained(tmp_path)
    loaded = BMojoForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.ssm_output_gate == "vector"
    torch.testing.assert_close(loaded.model.layers[1].mixer.ssm_gate, model.model.layers[1].mixer.ssm_gate)


@pytest.mark.parametrize("zero", [0.0, 0], ids=["float", "int"])  # an int from YAML or --set must work too
@pytest.mark.parametrize("layer_type", ["bmojo_f", "bmojo"])
def test_gate_initialised_at_zero_starts_as_the_attention_only_readout(layer_type, zero):
    """``ssm_output_gate_init=0``: the same logits as ``ssm_output_gate="none"`` with the same weights, and the
    gate still receives a gradient (it can learn how much of ``s_i`` to add)."""
    zero = BMojoForCausalLM(tiny_config([layer_type] * 2, ssm_output_gate_init=zero)).double()
    plain = BMojoForCausalLM(tiny_config([layer_type] * 2, ssm_output_gate="none")).double()
    plain.load_state_dict({k: v for k, v in zero.state_dict().items() if "ssm_gate" not in k})
    ids = torch.randint(0, zero.config.vocab_size, (2, SEQ))
    logits = zero(ids).logits
    torch.testing.assert_close(logits, plain(ids).logits, rtol=1e-10, atol=1e-10)
    logits.square().mean().backward()
    assert all(layer.mixer.ssm_gate.grad.abs().sum() > 0 for layer in zero.model.layers)


@pytest.mark.parametrize("value", [-0.5, float("nan"), "1", True])
def test_invalid_gate_init_names_the_field(value):
    with pytest.raises(ValueError, match="ssm_output_gate_init"):
        BMojoConfig(num_hidden_layers=2, ssm_output_gate_init=value)
