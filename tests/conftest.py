"""Shared fixtures: tiny configs for every layer type, deterministic seeds, one thread per test process."""

from __future__ import annotations

import pytest
import torch

import bmojo_neuron  # noqa: F401 - registers the Auto classes
from bmojo_neuron import LAYER_TYPES, BMojoConfig

torch.set_num_threads(1)

HYBRID = ["bmojo", "attention", "ssm", "bmojo_f", "sliding_attention"]


def tiny_config(layer_types: list[str], **overrides) -> BMojoConfig:
    """A model small enough for exact tests, with windows and chunks much shorter than the test sequences."""
    fields = dict(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=len(layer_types),
        num_attention_heads=4,
        num_key_value_heads=2,
        layer_types=layer_types,
        sliding_window=8,
        chunk_size=8,
        eidetic_topk=2,
        eidetic_slots=6,
        ssm_num_heads=2,
        ssm_head_dim=16,
        ssm_state_size=8,
        conv_kernel=4,
        # Larger than the default so that attention is far from uniform and window edges show in the logits.
        initializer_range=0.2,
    )
    fields.update(overrides)
    return BMojoConfig(**fields)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=[*LAYER_TYPES, "hybrid"])
def any_layer_types(request) -> list[str]:
    """Two layers of each type, and a hybrid of all five."""
    return HYBRID if request.param == "hybrid" else [request.param] * 2
