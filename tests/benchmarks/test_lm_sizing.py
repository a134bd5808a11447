"""Equal-parameter sizing of the language-modelling arms (benchmarks/lm_models.py)."""

from __future__ import annotations

import pytest

from benchmarks.lm import FULL, QUICK
from benchmarks.lm_models import (
    ARMS,
    GATE_ARMS,
    LM_ARMS,
    REFERENCE_ARM,
    LMShape,
    arm_config,
    hybrid_layer_types,
    sized_configs,
    solve_width,
)
from bmojo_neuron.configuration_bmojo import expand_layer_pattern

TINY = LMShape(hidden_size=32, num_layers=4, num_heads=2, intermediate_size=64, sliding_window=8, chunk_size=8,
               eidetic_slots=8, ssm_heads=2, ssm_head_dim=16, ssm_state_size=8)  # fmt: skip


@pytest.mark.parametrize("shape", [QUICK.shape, FULL.shape], ids=["quick", "full"])
def test_every_arm_matches_the_reference_within_2_percent(shape):
    sized = sized_configs(list(ARMS), shape)
    target = sized[REFERENCE_ARM][1]
    for arm, (config, params) in sized.items():
        assert abs(params - target) / target < 0.02, (arm, params, target)
        assert config.vocab_size == shape.vocab_size


def test_peers_are_the_transformers_classes_with_the_shared_shape():
    sized = sized_configs(["llama", "mistral", "mamba2"], TINY)
    assert sized["mistral"][0].sliding_window == TINY.sliding_window
    assert sized["llama"][0].num_hidden_layers == TINY.num_layers
    assert sized["mamba2"][0].num_hidden_layers == 2 * TINY.num_layers  # no MLP: two blocks per layer


@pytest.mark.parametrize("count", [lambda w: 1000 + 37 * w, lambda w: 50 + w * w])
@pytest.mark.parametrize("target", [1, 2000, 12345, 99999])
def test_solve_width_finds_the_nearest_multiple(count, target):
    width = solve_width(count, target, multiple=8)
    assert width % 8 == 0 and width >= 8
    best = min(range(8, 4096, 8), key=lambda w: (abs(count(w) - target), w))
    assert width == best


def test_hybrid_has_attention_every_fourth_layer_and_at_least_once():
    assert hybrid_layer_types(8) == ["ssm", "ssm", "ssm", "attention"] * 2
    assert hybrid_layer_types(2) == ["ssm", "attention"]


def test_variant_arms_carry_their_overrides_and_keep_the_parameter_count():
    sized = sized_configs(["bmojo", "bmojo_n64", "SSSB_e2", "ssm_e2"], FULL.shape)
    target = sized[REFERENCE_ARM][1]
    assert sized["bmojo_n64"][0].ssm_state_size == 64 and sized["bmojo"][0].ssm_state_size == FULL.shape.ssm_state_size
    assert sized["SSSB_e2"][0].ssm_num_heads == 2 * FULL.shape.ssm_heads
    assert sized["SSSB_e2"][0].layer_types == ["ssm", "ssm", "ssm", "bmojo"]
    for arm, (_, params) in sized.items():
        assert abs(params - target) / target < 0.02, (arm, params, target)
    assert sized["ssm_e2"][0].intermediate_size < sized_configs(["ssm"], FULL.shape)["ssm"][0].intermediate_size


def test_gated_targets_compare_a_variant_with_the_ssm_of_the_same_variant():
    from benchmarks.lm import check_gated_targets

    rows = [{"arm": "ssm", "ppl_1x": 3.0}, {"arm": "ssm_e2", "ppl_1x": 4.0}, {"arm": "bmojo_e2", "ppl_1x": 3.5}]
    (check,) = [c for c in check_gated_targets(rows) if "ssm" in c["target"]]
    assert "ssm_e2" in check["target"] and check["met"]


@pytest.mark.parametrize("arm", list(LM_ARMS))
def test_every_lm_arm_is_a_valid_config(arm):
    """Every arm the benchmark offers builds (an arm that leaned on a default broke when the default gate changed)."""
    config = arm_config(arm, TINY, 64)
    if arm in GATE_ARMS:
        pattern, fields = GATE_ARMS[arm]
        assert all(getattr(config, k) == v for k, v in fields.items())
        assert config.layer_types == expand_layer_pattern(pattern, TINY.num_layers)
