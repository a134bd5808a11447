"""Fixtures shared by every test: one thread per test process, a fixed seed, the layer stacks, a saved model.

Helpers that tests import live in ``tests/helpers/`` and ``bmojo_neuron.testing`` (the tiny models), never here.
"""

from __future__ import annotations

import pytest
import torch

import bmojo_neuron  # noqa: F401 - registers the Auto classes
from bmojo_neuron.testing import LAYER_STACKS, tiny_model
from bmojo_neuron.tokenization import byte_level_tokenizer
from tests.helpers.cache import SHORT_WINDOWS

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=list(LAYER_STACKS))
def any_layer_types(request) -> list[str]:
    """Two layers of each type, and a hybrid of all five."""
    return list(LAYER_STACKS[request.param])


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory):
    """A tiny hybrid model and the byte-level tokenizer saved with ``save_pretrained``."""
    path = tmp_path_factory.mktemp("tiny-bmojo")
    model = tiny_model(["bmojo", "ssm", "sliding_attention"], **SHORT_WINDOWS)
    model.save_pretrained(path)
    byte_level_tokenizer(model_max_length=64).save_pretrained(path)
    return path
