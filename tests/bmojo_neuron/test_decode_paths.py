"""The fast paths of cached decoding (:mod:`bmojo_neuron.fast_decode`, the host-known position) against the
general ones and the full forward.

The decode step takes one of two eidetic paths: with every row's position known on the host (no attention
mask since the cache was empty) it writes into the chunk slot and merges only on chunk boundaries; with a
mask it runs the branch-free step. Fused projection weights are cached on each layer and must follow
parameter changes made between generations (they are checked once per cache). With autograd on, the general
path runs.
"""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron.cache import BMojoCache
from bmojo_neuron.testing import HYBRID, tiny_model
from tests.helpers.cache import SHORT_WINDOWS, full_logits

KINDS = {
    "bmojo": (["bmojo", "bmojo"], {}),
    "bmojo-fifo": (["bmojo", "bmojo"], {"eidetic_policy": "fifo"}),
    "bmojo-key": (["bmojo", "bmojo"], {"eidetic_innovation": "key"}),
    "bmojo-token-gate": (["bmojo", "bmojo_f"], {"ssm_output_gate": "token"}),
    "hybrid": (HYBRID, {}),
}
TOTAL, PROMPT, ATOL = 30, 6, 1e-4


def decode(model, ids, with_mask: bool):
    cache = BMojoCache(model.config)
    out = [model(ids[:, :PROMPT], cache=cache, use_cache=True).logits]
    for i in range(PROMPT, ids.shape[1]):
        mask = torch.ones(ids.shape[0], i + 1, dtype=torch.long) if with_mask else None
        out.append(model(ids[:, i : i + 1], attention_mask=mask, cache=cache, use_cache=True).logits)
    return torch.cat(out, 1), cache


@pytest.mark.parametrize("kind", list(KINDS))
@torch.no_grad()
def test_known_and_unknown_positions_decode_alike(kind):
    layer_types, overrides = KINDS[kind]
    model = tiny_model(layer_types, **(SHORT_WINDOWS | overrides))
    ids = torch.randint(0, 256, (2, TOTAL), generator=torch.Generator().manual_seed(3))
    full = full_logits(model, ids)
    known, cache = decode(model, ids, with_mask=False)
    assert cache.host_position == TOTAL
    unknown, cache = decode(model, ids, with_mask=True)
    assert cache.host_position is None
    torch.testing.assert_close(known, full, atol=ATOL, rtol=0)
    torch.testing.assert_close(unknown, full, atol=ATOL, rtol=0)


@torch.no_grad()
def test_fused_weights_follow_parameter_changes():
    model = tiny_model(["bmojo", "ssm"], **SHORT_WINDOWS)
    ids = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(4))
    decode(model, ids, with_mask=False)  # builds the fused weights
    layer = model.model.layers[0]
    layer.mixer.q_proj.weight.mul_(1.5)  # in place
    layer.mlp.up_proj.weight = torch.nn.Parameter(layer.mlp.up_proj.weight * 0.5)  # replaced
    model.model.layers[1].mixer.ssm.in_proj.weight.add_(0.01)
    cached, cache = decode(model, ids, with_mask=False)
    torch.testing.assert_close(cached, full_logits(model, ids), atol=ATOL, rtol=0)
    assert cache.fused_weights_checked

    # The same cache, reset, checks again.
    model.model.layers[0].mixer.k_proj.weight.mul_(0.5)  # folded into the fused projection (a copy)
    cache.reset()
    again = [model(ids[:, :PROMPT], cache=cache, use_cache=True).logits]
    again += [model(ids[:, i : i + 1], cache=cache, use_cache=True).logits for i in range(PROMPT, ids.shape[1])]
    torch.testing.assert_close(torch.cat(again, 1), full_logits(model, ids), atol=ATOL, rtol=0)


def test_autograd_takes_the_general_path_with_the_same_result():
    model = tiny_model(["bmojo", "ssm", "bmojo_f"], **SHORT_WINDOWS)
    ids = torch.randint(0, 256, (1, 14), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        fast, _ = decode(model, ids, with_mask=False)
    slow, _ = decode(model, ids, with_mask=False)
    assert slow.requires_grad
    torch.testing.assert_close(slow.detach(), fast, atol=ATOL, rtol=0)


@torch.no_grad()
def test_prompt_after_a_loaded_state_uses_the_general_path():
    """``load_tensors`` forgets the host position: the next prompt extends the state instead of refilling it."""
    model = tiny_model(["bmojo"], **SHORT_WINDOWS)
    ids = torch.randint(0, 256, (1, 20), generator=torch.Generator().manual_seed(6))
    cache = BMojoCache(model.config)
    model(ids[:, :9], cache=cache, use_cache=True)
    copy = BMojoCache(model.config)
    copy.allocate(1, torch.float32, torch.device("cpu"))
    copy.load_tensors([t.clone() for t in cache.to_tensors()], steps=9)
    assert copy.host_position is None
    tail = model(ids[:, 9:], cache=copy, use_cache=True).logits
    torch.testing.assert_close(tail, full_logits(model, ids)[:, 9:], atol=ATOL, rtol=0)


def test_inference_mode_model_decodes_like_the_full_forward():
    """A model built under ``torch.inference_mode`` has parameters without a version counter: the fused
    weights' check must still work (reading ``_version`` of such a tensor raises)."""
    with torch.inference_mode():
        model = tiny_model(["bmojo", "ssm"], **SHORT_WINDOWS)
        assert model.model.layers[0].mixer.q_proj.weight.is_inference()
        ids = torch.randint(0, 256, (1, 14), generator=torch.Generator().manual_seed(7))
        cached, cache = decode(model, ids, with_mask=False)
        assert cache.fused_weights_checked
        torch.testing.assert_close(cached, full_logits(model, ids), atol=ATOL, rtol=0)
