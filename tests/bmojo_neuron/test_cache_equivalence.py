"""BMojoCache: cached prefill, chunked prefill and token-by-token decoding equal the full forward."""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron.cache import BMojoCache
from bmojo_neuron.testing import LAYER_STACKS, tiny_model
from tests.helpers.cache import SHORT_WINDOWS, comparable_state, full_logits

# bmojo variants: the other retention policy and innovation mode, and windows that change the memory's lag.
VARIANTS = {
    "bmojo-fifo": (["bmojo", "bmojo"], {"eidetic_policy": "fifo"}),
    "bmojo-key": (["bmojo", "bmojo"], {"eidetic_innovation": "key"}),
    "bmojo-lag3": (["bmojo", "bmojo"], {"sliding_window": 6, "eidetic_slots": 5}),
    "bmojo-mha-w3": (["bmojo", "bmojo"], {"sliding_window": 3, "num_key_value_heads": 4}),
    # the attention-only readout (AWS's B'MOJO-F); the default gates the current SSM output in
    "bmojo-nogate": (["bmojo", "bmojo"], {"ssm_output_gate": "none"}),
    "bmojo_f-nogate": (["bmojo_f", "bmojo_f"], {"ssm_output_gate": "none"}),
    # the data-dependent gate (its logits vary by token: tiny_model randomises the projection)
    "bmojo-token-gate": (["bmojo", "bmojo_f"], {"ssm_output_gate": "token"}),
}
ALL = {**{k: (v, {}) for k, v in LAYER_STACKS.items()}, **VARIANTS}
ATOL = 1e-4
TOTAL = 26  # crosses the window (4), the fading window (8) and several eidetic chunks (4)


def model_for(kind: str):
    layer_types, overrides = ALL[kind]
    return tiny_model(layer_types, **(SHORT_WINDOWS | overrides))


def run_cached(model, ids, segments, attention_mask=None, cache=None):
    """Feed the columns ``[a, b)`` of each segment in turn through a cache; return (logits, cache)."""
    cache = BMojoCache(model.config) if cache is None else cache
    out = []
    for a, b in segments:
        mask = None if attention_mask is None else attention_mask[:, :b]
        out.append(model(ids[:, a:b], attention_mask=mask, cache=cache, use_cache=True).logits)
    return torch.cat(out, 1), cache


def prefill_then_decode(prompt_len, total, prefill_chunk=None):
    """Segments: a prefill of ``prompt_len`` columns (in chunks if asked), then one column at a time."""
    step = prefill_chunk or prompt_len
    return [(a, min(a + step, prompt_len)) for a in range(0, prompt_len, step)] + [
        (i, i + 1) for i in range(prompt_len, total)
    ]


@pytest.mark.parametrize("kind", list(ALL))
@pytest.mark.parametrize("prompt_len", [1, 5, 11])
@torch.no_grad()
def test_prefill_then_decode_matches_full_forward(kind, prompt_len):
    model = model_for(kind)
    ids = torch.randint(0, 256, (2, TOTAL), generator=torch.Generator().manual_seed(prompt_len))
    full = full_logits(model, ids)
    cached, cache = run_cached(model, ids, prefill_then_decode(prompt_len, TOTAL))
    torch.testing.assert_close(cached, full, atol=ATOL, rtol=0)
    assert cache.get_seq_length() == TOTAL
    assert cache.positions.tolist() == [TOTAL, TOTAL]


@pytest.mark.parametrize("kind", list(ALL))
@pytest.mark.parametrize("chunk", [1, 3, 8])
@torch.no_grad()
def test_chunked_prefill_matches_full_prefill(kind, chunk):
    model = model_for(kind)
    ids = torch.randint(0, 256, (2, TOTAL), generator=torch.Generator().manual_seed(chunk))
    full = full_logits(model, ids)
    cache = BMojoCache(model.config)
    pieces = [model(ids[:, a : a + chunk], cache=cache, use_cache=True).logits for a in range(0, TOTAL, chunk)]
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=ATOL, rtol=0)
    one_shot = BMojoCache(model.config)
    model(ids, cache=one_shot, use_cache=True)
    expected = comparable_state(one_shot.state_names(), one_shot.to_tensors())
    for name, b in comparable_state(cache.state_names(), cache.to_tensors()).items():
        a = expected[name]
        if a.is_floating_point():
            torch.testing.assert_close(a, b, atol=ATOL, rtol=0, msg=name)
        else:
            assert torch.equal(a, b), name


def left_pad(seqs, pad_id=256):
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, width - len(s) :] = torch.tensor(s)
        mask[row, width - len(s) :] = 1
    return ids, mask


@pytest.mark.parametrize("kind", [*LAYER_STACKS, "bmojo-fifo"])
@pytest.mark.parametrize("prefill_chunk", [None, 5])
@torch.no_grad()
def test_left_padded_batch_matches_each_sequence_alone(kind, prefill_chunk):
    model = model_for(kind)
    g = torch.Generator().manual_seed(1)
    lengths, n_decode = [9, 2, 14], 10  # row 1's padding spans several prefill chunks
    seqs = [torch.randint(0, 256, (n,), generator=g).tolist() for n in lengths]
    ids, mask = left_pad(seqs)
    new = torch.randint(0, 256, (3, n_decode), generator=g)
    ids, mask = torch.cat([ids, new], 1), torch.cat([mask, torch.ones_like(new)], 1)
    width = max(lengths)
    cached, _ = run_cached(model, ids, prefill_then_decode(width, ids.shape[1], prefill_chunk), mask)
    for row, s in enumerate(seqs):
        alone = full_logits(model, torch.tensor([s + new[row].tolist()]))[0]
        torch.testing.assert_close(cached[row, width - len(s) :], alone, atol=ATOL, rtol=0, msg=f"row {row}")


@pytest.mark.parametrize("norm", ["chunk", "none"])
@pytest.mark.parametrize("mode", ["predictor", "key"])
@torch.no_grad()
def test_cached_paths_agree_when_the_innovation_decides(mode, norm):
    """The learned score at zero and a predictor that predicts something: the selection is the innovation's
    (standardised within the chunk or raw), and prefill, chunked prefill and decoding must agree on it."""
    model = tiny_model(["bmojo", "bmojo"], eidetic_innovation=mode, eidetic_innovation_norm=norm, **SHORT_WINDOWS)
    for layer in model.model.layers:
        torch.nn.init.zeros_(layer.mixer.eidetic.score_proj.weight)
        torch.nn.init.zeros_(layer.mixer.eidetic.score_proj.bias)
        if mode == "predictor":
            torch.nn.init.normal_(layer.mixer.eidetic.predictor.weight, std=0.5)
    ids = torch.randint(0, 256, (2, TOTAL), generator=torch.Generator().manual_seed(7))
    full = full_logits(model, ids)
    for segments in (prefill_then_decode(5, TOTAL), prefill_then_decode(1, TOTAL), prefill_then_decode(11, TOTAL, 3)):
        cached, _ = run_cached(model, ids, segments)
        torch.testing.assert_close(cached, full, atol=ATOL, rtol=0)
    # The innovation matters here: without it (scale 0) the memory's ties are broken otherwise.
    for layer in model.model.layers:
        layer.mixer.eidetic.innovation_scale.fill_(0.0)
    assert not torch.allclose(full_logits(model, ids), full, atol=1e-3)
