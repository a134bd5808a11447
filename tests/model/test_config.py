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
    ],
)
def test_invalid_values_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        BMojoConfig(**{"num_hidden_layers": 2, **overrides})


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
