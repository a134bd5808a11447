"""Fixtures of the inference tests."""

from __future__ import annotations

import pytest
from inference_fixtures import tiny_model

from bmojo_neuron.tokenization import byte_level_tokenizer


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory):
    """A tiny hybrid model and the byte-level tokenizer saved with ``save_pretrained``."""
    path = tmp_path_factory.mktemp("tiny-bmojo")
    model = tiny_model(["bmojo", "ssm", "sliding_attention"])
    model.save_pretrained(path)
    byte_level_tokenizer(model_max_length=64).save_pretrained(path)
    return path
