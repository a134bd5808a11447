"""BMojoCache's size and shapes: constant without ``attention`` layers; errors for bad use."""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron.cache import BMojoCache
from bmojo_neuron.testing import tiny_model
from tests.helpers.cache import SHORT_WINDOWS


def feed(model, cache, n_tokens, chunk=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    for a in range(0, n_tokens, chunk):
        ids = torch.randint(0, 256, (2, min(chunk, n_tokens - a)), generator=g)
        model(ids, cache=cache, use_cache=True)


@pytest.mark.parametrize(
    "layer_types",
    [["bmojo"], ["bmojo_f"], ["ssm"], ["sliding_attention"], ["bmojo", "ssm", "bmojo_f", "sliding_attention"]],
    ids=str,
)
@torch.no_grad()
def test_cache_bytes_do_not_grow_without_attention_layers(layer_types):
    model = tiny_model(layer_types, **SHORT_WINDOWS)
    cache = BMojoCache(model.config)
    feed(model, cache, 64)
    after_64 = cache.nbytes
    shapes = [tuple(t.shape) for t in cache.to_tensors()]
    feed(model, cache, 4096 - 64, seed=1)
    assert cache.get_seq_length() == 4096
    assert cache.nbytes == after_64 > 0
    assert [tuple(t.shape) for t in cache.to_tensors()] == shapes


@torch.no_grad()
def test_attention_layers_grow():
    model = tiny_model(["bmojo", "attention"], **SHORT_WINDOWS)
    cache = BMojoCache(model.config)
    feed(model, cache, 64)
    small = cache.nbytes
    feed(model, cache, 64, seed=1)
    assert cache.nbytes > small


@torch.no_grad()
def test_decode_step_keeps_shapes_and_dtypes():
    model = tiny_model(["bmojo", "ssm"], **SHORT_WINDOWS)
    cache = BMojoCache(model.config)
    model(torch.randint(0, 256, (2, 7)), cache=cache, use_cache=True)
    before = [(t.shape, t.dtype) for t in cache.to_tensors()]
    for _ in range(5):
        model(torch.randint(0, 256, (2, 1)), cache=cache, use_cache=True)
    assert [(t.shape, t.dtype) for t in cache.to_tensors()] == before


@torch.no_grad()
def test_reset_and_batch_operations():
    model = tiny_model(["bmojo"], **SHORT_WINDOWS)
    cache = BMojoCache(model.config)
    ids = torch.randint(0, 256, (2, 9))
    first = model(ids, cache=cache, use_cache=True).logits
    cache.reset()
    assert cache.get_seq_length() == 0 and cache.positions.tolist() == [0, 0]
    torch.testing.assert_close(model(ids, cache=cache, use_cache=True).logits, first)
    cache.batch_repeat_interleave(2)
    assert cache.batch_size == 4
    cache.batch_select_indices(torch.tensor([0, 3]))
    assert cache.batch_size == 2


@torch.no_grad()
def test_bad_inputs_raise_clear_errors():
    model = tiny_model(["bmojo"], **SHORT_WINDOWS)
    cache = BMojoCache(model.config)
    model(torch.randint(0, 256, (2, 3)), cache=cache, use_cache=True)
    with pytest.raises(ValueError, match="rows"):
        model(torch.randint(0, 256, (3, 1)), cache=cache, use_cache=True)
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.randint(0, 256, (2, 4)), attention_mask=torch.ones(2, 2), cache=cache, use_cache=True)
    with pytest.raises(NotImplementedError):
        cache.crop(1)
