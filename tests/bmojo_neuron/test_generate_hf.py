"""HF ``generate`` with BMojoCache: the same tokens as without a cache, for every decoding mode."""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron import ops
from bmojo_neuron.cache import BMojoCache
from bmojo_neuron.testing import HYBRID, LAYER_STACKS, tiny_model
from tests.helpers.cache import SHORT_WINDOWS

PAD, EOS = 256, 258


def prompts():
    """Three left-padded prompts of different lengths (7, 2, 13 tokens)."""
    g = torch.Generator().manual_seed(3)
    lengths = [7, 2, 13]
    ids = torch.full((3, 13), PAD, dtype=torch.long)
    mask = torch.zeros(3, 13, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, 13 - n :] = torch.randint(0, 256, (n,), generator=g)
        mask[row, 13 - n :] = 1
    return ids, mask


def generate(model, use_cache, seed=0, **kwargs):
    """``model.generate`` on :func:`prompts`; without a cache every step is a full forward on the reference ops."""
    ids, mask = prompts()
    torch.manual_seed(seed)
    with ops.use_kernels("torch" if use_cache else "reference"):
        return model.generate(ids, attention_mask=mask, use_cache=use_cache, pad_token_id=PAD, **kwargs)


@pytest.mark.parametrize("layer_types", list(LAYER_STACKS.values()), ids=list(LAYER_STACKS))
def test_greedy_with_cache_equals_without(layer_types):
    model = tiny_model(layer_types, **SHORT_WINDOWS)
    kwargs = dict(max_new_tokens=14, do_sample=False, eos_token_id=None)
    with_cache = generate(model, True, **kwargs)
    without = generate(model, False, **kwargs)
    assert with_cache.shape == (3, 13 + 14)
    assert torch.equal(with_cache, without)


def test_sampling_and_num_return_sequences():
    model = tiny_model(HYBRID, **SHORT_WINDOWS)
    kwargs = dict(
        max_new_tokens=10,
        do_sample=True,
        temperature=0.8,
        top_k=50,
        top_p=0.9,
        num_return_sequences=3,
        eos_token_id=None,
    )
    with_cache = generate(model, True, seed=11, **kwargs)
    without = generate(model, False, seed=11, **kwargs)
    assert with_cache.shape == (9, 13 + 10)
    assert torch.equal(with_cache, without)
    new = with_cache[:, 13:]
    assert len({tuple(r) for r in new[:3].tolist()}) > 1, "the 3 samples of a prompt should differ"
    assert not torch.equal(generate(model, True, seed=12, **kwargs), with_cache)


def test_stop_token_ends_rows():
    model = tiny_model(HYBRID, **SHORT_WINDOWS)
    greedy = generate(model, True, max_new_tokens=8, do_sample=False, eos_token_id=None)
    stop = int(greedy[0, 13 + 2])  # row 0's third new token becomes the stop token
    out = generate(model, True, max_new_tokens=8, do_sample=False, eos_token_id=stop)
    assert torch.equal(out, generate(model, False, max_new_tokens=8, do_sample=False, eos_token_id=stop))
    row = out[0, 13:].tolist()
    first = row.index(stop)
    assert first <= 2 and all(t == PAD for t in row[first + 1 :])


def test_chunked_prefill_in_generate():
    model = tiny_model(HYBRID, **SHORT_WINDOWS)
    kwargs = dict(max_new_tokens=8, do_sample=False, eos_token_id=None)
    assert torch.equal(generate(model, True, prefill_chunk_size=4, **kwargs), generate(model, False, **kwargs))


def test_beam_search_reorders_the_cache():
    model = tiny_model(["bmojo", "attention"], **SHORT_WINDOWS)
    kwargs = dict(max_new_tokens=6, do_sample=False, num_beams=3, eos_token_id=None)
    assert torch.equal(generate(model, True, **kwargs), generate(model, False, **kwargs))


def test_generate_returns_the_cache_and_continues_from_it():
    model = tiny_model(HYBRID, **SHORT_WINDOWS)
    ids, mask = prompts()
    first = model.generate(
        ids,
        attention_mask=mask,
        max_new_tokens=5,
        do_sample=False,
        pad_token_id=PAD,
        eos_token_id=None,
        return_dict_in_generate=True,
    )
    cache = first.cache
    assert isinstance(cache, BMojoCache) and cache.get_seq_length() == 13 + 4
    # continuing from the returned cache gives the same tokens as one longer generate
    seq = first.sequences
    more = model.generate(
        seq,
        attention_mask=torch.cat([mask, torch.ones(3, 5, dtype=torch.long)], 1),
        cache=cache,
        max_new_tokens=5,
        do_sample=False,
        pad_token_id=PAD,
        eos_token_id=None,
    )
    once = generate(model, False, max_new_tokens=10, do_sample=False, eos_token_id=None)
    assert torch.equal(more, once)
