"""The gated current SSM output of ``bmojo_f``/``bmojo`` mixers (docs/layer.md, added 2026-12).

``mixer(x)_i = o_proj(attention_i) + g_i * s_i``: with the attention's output projection at zero a B'MOJO layer
is its SSM, so Mamba is a special case of the layer; ``g`` is a per-channel vector (``vector``) or that vector
times one sigmoid per token of the layer input (``token``); ``ssm_output_gate="none"`` is the attention-only
readout.
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


@pytest.mark.parametrize("gate", ["vector", "token"])
@pytest.mark.parametrize("layer_type", ["bmojo_f", "bmojo"])
@pytest.mark.parametrize("kernels", ["reference", "torch"])
def test_mamba_is_a_special_case(layer_type, kernels, gate):
    """o_proj = 0 and g = 1: every B'MOJO layer is the ``ssm`` layer with the same SSM weights."""
    model = BMojoForCausalLM(tiny_config([layer_type] * 2, ssm_output_gate=gate)).double().eval()
    for layer in model.model.layers:
        mixer = layer.mixer
        torch.nn.init.zeros_(mixer.o_proj.weight)
        assert torch.equal(mixer.ssm_gate, torch.ones_like(mixer.ssm_gate))  # initialised to 1
        if gate == "token":  # w = 0 at initialisation: g = v * sigmoid(b), made 1 through v
            assert torch.equal(mixer.ssm_gate_proj.weight, torch.zeros_like(mixer.ssm_gate_proj.weight))
            with torch.no_grad():
                mixer.ssm_gate.fill_(1 / torch.sigmoid(mixer.ssm_gate_proj.bias).item())
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


@pytest.mark.parametrize("gate", ["vector", "token", "none"])
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
    assert (grad[i] > 0) == (gate != "none")
    w = model.config.sliding_window
    assert torch.all(grad[i - w + 1 : i] == 0)  # positions in the raw window reach the query only as raw keys
    assert torch.all(grad[i + 1 :] == 0)  # causal


@pytest.mark.parametrize("value", ["scalar", "", None, 1])
def test_invalid_gate_names_the_field(value):
    with pytest.raises(ValueError, match="ssm_output_gate"):
        BMojoConfig(num_hidden_layers=2, ssm_output_gate=value)


@pytest.mark.parametrize("gate", ["vector", "token"])
def test_gate_is_saved_and_loaded(tmp_path, gate):
    model = BMojoForCausalLM(tiny_config(["bmojo"] * 2, ssm_output_gate=gate))
    mixer = model.model.layers[1].mixer
    torch.nn.init.normal_(mixer.ssm_gate)
    if gate == "token":
        torch.nn.init.normal_(mixer.ssm_gate_proj.weight)
    model.save_pretrained(tmp_path)
    loaded = BMojoForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.ssm_output_gate == gate
    for name, tensor in model.state_dict().items():
        if "ssm_gate" in name:
            torch.testing.assert_close(loaded.state_dict()[name], tensor)


@pytest.mark.parametrize("zero", [0.0, 0], ids=["float", "int"])  # an int from YAML or --set must work too
@pytest.mark.parametrize("layer_type", ["bmojo_f", "bmojo"])
def test_gate_initialised_at_zero_starts_as_the_attention_only_readout(layer_type, zero):
    """``ssm_output_gate_init=0``: the same logits as ``ssm_output_gate="none"`` with the same weights, and the
    gate still receives a gradient (it can learn how much of ``s_i`` to add)."""
    zero = BMojoForCausalLM(tiny_config([layer_type] * 2, ssm_output_gate="vector", ssm_output_gate_init=zero)).double()
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


def test_token_gate_depends_on_the_token_and_learns():
    """``token``: g_i = v * sigmoid(w . x_i + b); with w != 0 two tokens get different gates, and w, b and v all
    receive gradients (w too at initialisation, where it is 0)."""
    model = BMojoForCausalLM(tiny_config(["bmojo"] * 2, ssm_output_gate="token")).double()
    mixer = model.model.layers[0].mixer
    hidden = torch.randn(1, 3, model.config.hidden_size, dtype=torch.float64)
    assert torch.allclose(mixer.ssm_gate_values(hidden)[0, 0], mixer.ssm_gate_values(hidden)[0, 1])
    ids = torch.randint(0, model.config.vocab_size, (2, SEQ))
    model(ids).logits.square().mean().backward()
    for part in (mixer.ssm_gate, mixer.ssm_gate_proj.weight, mixer.ssm_gate_proj.bias):
        assert part.grad.abs().sum() > 0
    with torch.no_grad():
        torch.nn.init.normal_(mixer.ssm_gate_proj.weight)
    g = mixer.ssm_gate_values(hidden)
    assert g.shape == hidden.shape and not torch.allclose(g[0, 0], g[0, 1])


def test_gate_starts():
    """Default starts: ``token`` 0.2 (sigmoid(b); v = 1), ``vector`` 1; a number or a per-layer list overrides
    them (entries of ungated layers are ignored)."""
    token = BMojoForCausalLM(tiny_config(["bmojo", "ssm", "bmojo_f"], ssm_output_gate="token"))
    gated = [layer.mixer for layer in token.model.layers if layer.layer_type != "ssm"]
    assert [torch.sigmoid(m.ssm_gate_proj.bias).item() for m in gated] == pytest.approx([0.2, 0.2])
    assert all(torch.all(m.ssm_gate == 1) for m in gated)
    vector = BMojoForCausalLM(tiny_config(["bmojo"] * 2, ssm_output_gate="vector"))
    assert all(torch.all(layer.mixer.ssm_gate == 1) for layer in vector.model.layers)
    listed = BMojoForCausalLM(
        tiny_config(["bmojo", "ssm", "bmojo"], ssm_output_gate="token", ssm_output_gate_init=[0.5, 7, 0.05])
    )
    starts = [torch.sigmoid(layer.mixer.ssm_gate_proj.bias).item() for layer in listed.model.layers[::2]]
    assert starts == pytest.approx([0.5, 0.05])
    listed = BMojoForCausalLM(tiny_config(["bmojo", "bmojo"], ssm_output_gate="vector", ssm_output_gate_init=[0.25, 0]))
    assert [layer.mixer.ssm_gate[0].item() for layer in listed.model.layers] == [0.25, 0.0]


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, [0.5, 1.0]])
def test_token_gate_start_must_be_a_probability(value):
    with pytest.raises(ValueError, match="ssm_output_gate_init"):
        BMojoConfig(num_hidden_layers=2, ssm_output_gate="token", ssm_output_gate_init=value)


def test_gate_start_list_needs_one_value_per_layer():
    with pytest.raises(ValueError, match="ssm_output_gate_init.*one number per layer"):
        BMojoConfig(num_hidden_layers=3, ssm_output_gate_init=[1.0, 1.0])
