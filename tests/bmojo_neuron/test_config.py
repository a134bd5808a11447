"""The config validates itself: every bad value raises a ValueError that names the field."""

from __future__ import annotations

import pytest
from transformers import AutoConfig

from bmojo_neuron import BMojoConfig, expand_layer_pattern


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"layer_types": ["bmojo", "transformer"]}, "layer_types"),
        ({"layer_types": ["bmojo"]}, "layer_types"),
        ({"hidden_size": 30, "num_attention_heads": 4}, "num_attention_heads"),
        ({"num_key_value_heads": 3}, "num_key_value_heads"),
        ({"eidetic_policy": "lru"}, "eidetic_policy"),
        ({"sliding_window": 0}, "sliding_window"),
        ({"sliding_window": -4}, "sliding_window"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"eidetic_topk": 64, "chunk_size": 32}, "eidetic_topk"),
        ({"eidetic_slots": 0}, "eidetic_slots"),
        ({"ssm_num_heads": 4, "ssm_num_groups": 3}, "ssm_num_groups"),
        ({"vocab_size": 2.5}, "vocab_size"),
        ({"eidetic_aux_loss_weight": -1.0}, "eidetic_aux_loss_weight"),
        ({"eidetic_innovation": "oracle"}, "eidetic_innovation"),
        ({"layer_pattern": "BXA", "num_hidden_layers": 3}, "layer_pattern"),
        ({"rope_theta": 0.0}, "rope_theta"),
        ({"eidetic_topk": 8, "eidetic_slots": 4, "chunk_size": 8}, "eidetic_slots"),
        ({"sliding_window": 64, "max_position_embeddings": 32}, "sliding_window"),
        ({"chunk_size": 64, "sliding_window": 16, "max_position_embeddings": 32}, "chunk_size"),
        ({"conv_kernel": 64, "max_position_embeddings": 48}, "conv_kernel"),
        ({"initializer_range": float("inf")}, "initializer_range"),
        ({"initializer_range": float("nan")}, "initializer_range"),
        ({"initializer_range": -0.02}, "initializer_range"),
        ({"rms_norm_eps": float("nan")}, "rms_norm_eps"),
        ({"rope_theta": float("inf")}, "rope_theta"),
        ({"eidetic_aux_loss_weight": float("nan")}, "eidetic_aux_loss_weight"),
        ({"pad_token_id": -5}, "pad_token_id"),
        ({"pad_token_id": 512}, "pad_token_id"),
        ({"bos_token_id": 10_000}, "bos_token_id"),
        ({"eos_token_id": [3, 600]}, "eos_token_id"),
        ({"eos_token_id": "2"}, "eos_token_id"),
        ({"tie_word_embeddings": "no"}, "tie_word_embeddings"),
        ({"use_cache": 1}, "use_cache"),
        ({"hidden_size": "128"}, "hidden_size"),
        ({"hidden_size": None}, "hidden_size"),
        ({"num_attention_heads": None}, "num_attention_heads"),
        ({"vocab_size": "512"}, "vocab_size"),
        ({"eidetic_slot": 64}, "eidetic_slot"),
        ({"layer_pattern": 3}, "layer_pattern"),
    ],
)
def test_invalid_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        BMojoConfig(**{"num_hidden_layers": 2, **overrides})


def test_standard_keys_still_load(tmp_path):
    """Keys that PreTrainedConfig knows (and old configs carry) are accepted; only unknown ones are refused."""
    config = BMojoConfig(vocab_size=512, torch_dtype="float32", max_length=20, architectures=["BMojoForCausalLM"])
    config.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).vocab_size == 512
    assert BMojoConfig(eos_token_id=[1, 2], pad_token_id=0).eos_token_id == [1, 2]


@pytest.mark.parametrize("shape", [(0,), (5,), (1, 0), (0, 4), (1, 2, 3)])
def test_input_ids_of_the_wrong_shape_are_named(shape):
    import torch

    from bmojo_neuron import BMojoForCausalLM

    model = BMojoForCausalLM(BMojoConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=32))
    with pytest.raises(ValueError, match=r"input_ids must be a non-empty 2-D tensor \(batch, sequence\)"):
        model(torch.zeros(shape, dtype=torch.long))


def test_pattern_shorthand_repeats():
    config = BMojoConfig(num_hidden_layers=5, layer_pattern="BBA")
    assert config.layer_types == ["bmojo", "bmojo", "attention", "bmojo", "bmojo"]
    assert expand_layer_pattern("SW", 3) == ["ssm", "sliding_attention", "ssm"]


def test_attention_name_survives_save_and_load(tmp_path):
    config = AutoConfig.for_model("bmojo", num_hidden_layers=3, layer_types=["attention", "ssm", "bmojo"])
    assert config.layer_types == ["attention", "ssm", "bmojo"]
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, BMojoConfig)
    assert loaded.layer_types == ["attention", "ssm", "bmojo"]


def test_eidetic_lag_follows_design():
    # Memory updated after chunk c is visible from chunk c + 1 + ceil((w - 1) / C); with C = w that is c + 2.
    assert BMojoConfig(sliding_window=32, chunk_size=32).eidetic_lag == 2
    assert BMojoConfig(sliding_window=32, chunk_size=8).eidetic_lag == 5
    assert BMojoConfig(sliding_window=1, chunk_size=8).eidetic_lag == 1
