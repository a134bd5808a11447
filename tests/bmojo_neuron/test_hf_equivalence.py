"""With only attention (or only sliding-attention) layers, B'MOJO is Llama (or Mistral): same logits."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from bmojo_neuron import BMojoForCausalLM
from bmojo_neuron.convert import from_llama_state_dict
from bmojo_neuron.testing import tiny_config


def _peer_config(cls, config, **extra):
    return cls(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        rms_norm_eps=config.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        tie_word_embeddings=False,
        attn_implementation="eager",
        **extra,
    )


@pytest.mark.parametrize("seq", [1, 13, 40])
@pytest.mark.parametrize(
    ("layer_type", "peer_cls", "peer_config_cls"),
    [("attention", LlamaForCausalLM, LlamaConfig), ("sliding_attention", MistralForCausalLM, MistralConfig)],
)
def test_logits_equal_peer(layer_type, peer_cls, peer_config_cls, seq):
    config = tiny_config([layer_type] * 3, rope_theta=500.0)
    extra = {"sliding_window": config.sliding_window} if layer_type == "sliding_attention" else {}
    peer = peer_cls(_peer_config(peer_config_cls, config, **extra)).eval()
    model = BMojoForCausalLM(config).eval()
    missing, unexpected = model.load_state_dict(from_llama_state_dict(peer.state_dict()), strict=True)
    assert not missing and not unexpected
    ids = torch.randint(0, config.vocab_size, (2, seq))
    with torch.no_grad():
        ours = model(ids).logits
        theirs = peer(ids).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_mistral_window_is_exercised():
    """The sliding-window case must differ from full attention, or the test above proves nothing."""
    config = tiny_config(["sliding_attention"] * 2)
    model = BMojoForCausalLM(config).eval()
    full = BMojoForCausalLM(tiny_config(["attention"] * 2)).eval()
    full.load_state_dict(model.state_dict())
    ids = torch.randint(0, config.vocab_size, (1, 3 * config.sliding_window))
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits[:, -1], full(ids).logits[:, -1], atol=1e-4)
