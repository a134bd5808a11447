"""Eidetic memory: selection by score, retention policies, visibility, attention to slots, auxiliary loss."""

from __future__ import annotations

import math

import pytest
import torch

from bmojo_neuron import BMojoForCausalLM, ops
from bmojo_neuron.ops.eidetic.reference import eidetic_select_reference
from bmojo_neuron.testing import tiny_config


def _candidates(scores, chunk, topk):
    """Brute force: the top-k (score, position) pairs of every chunk, as a list per chunk."""
    out = []
    for c in range(math.ceil(scores.shape[0] / chunk)):
        part = scores[c * chunk : (c + 1) * chunk]
        order = sorted(range(len(part)), key=lambda i: -float(part[i]))[:topk]
        out.append([(float(part[i]), c * chunk + i) for i in order])
    return out


@pytest.mark.parametrize(("seq", "chunk", "topk", "slots"), [(64, 8, 2, 6), (45, 8, 3, 4), (100, 16, 4, 16)])
def test_topk_policy_keeps_the_highest_scores(seq, chunk, topk, slots):
    scores = torch.randn(1, seq)
    idx, valid = eidetic_select_reference(scores, chunk, topk, slots, "topk", lag=1)
    candidates = _candidates(scores[0], chunk, topk)
    for q in range(idx.shape[1]):
        seen = [c for chunk_cands in candidates[:q] for c in chunk_cands]
        expected = {pos for _, pos in sorted(seen, reverse=True)[:slots]}
        assert set(idx[0, q][valid[0, q]].tolist()) == expected


def test_fifo_policy_evicts_the_oldest_first():
    chunk, topk, slots = 8, 2, 6  # the memory holds the candidates of the last three chunks
    scores = torch.randn(1, 80)
    idx, valid = eidetic_select_reference(scores, chunk, topk, slots, "fifo", lag=1)
    candidates = _candidates(scores[0], chunk, topk)
    for q in range(1, idx.shape[1]):
        recent = candidates[max(0, q - slots // topk) : q]
        expected = {pos for chunk_cands in recent for _, pos in chunk_cands}
        assert set(idx[0, q][valid[0, q]].tolist()) == expected


def test_padding_is_never_stored():
    scores = torch.randn(2, 40)
    scores[1, 20:] = float("-inf")
    idx, valid = eidetic_select_reference(scores, 8, 2, 6, "topk", lag=1)
    assert (idx[1][valid[1]] < 20).all()
    assert valid[0, -1].all() and valid[1, -1].sum() == 6


@pytest.mark.parametrize(("window", "chunk"), [(8, 8), (8, 4), (8, 3), (5, 8), (1, 4), (16, 5)])
def test_no_visible_slot_is_still_in_the_raw_window(window, chunk):
    config = tiny_config(["bmojo"], sliding_window=window, chunk_size=chunk, eidetic_topk=min(2, chunk))
    seq = 70
    scores = torch.arange(seq, dtype=torch.float32)[None]  # newest tokens score highest: the worst case
    idx, valid = eidetic_select_reference(scores, chunk, config.eidetic_topk, 6, "topk", config.eidetic_lag)
    for i in range(seq):
        slots = idx[0, i // chunk][valid[0, i // chunk]]
        assert (slots < i - window + 1).all(), (i, slots.tolist())
    # ... and the rule is not vacuous: memory is in use by the end.
    assert valid[0, -1].any()


def test_planted_token_is_selected_kept_and_attended():
    """A token with a very high score enters memory, stays, and a query far beyond the window retrieves it."""
    batch, seq, heads, dim, window, chunk, slots = 1, 96, 2, 8, 8, 8, 4
    planted = 10
    scores = torch.randn(batch, seq)
    scores[0, planted] = 50.0
    idx, valid = ops.eidetic_select(scores, chunk, 2, slots, "topk", 2)
    first_visible = planted // chunk + 2
    for q in range(idx.shape[1]):
        holds = bool(((idx[0, q] == planted) & valid[0, q]).any())
        assert holds == (q >= first_visible), q

    k = torch.randn(batch, seq, heads, dim) * 0.1
    v = torch.randn(batch, seq, heads, dim)
    q = torch.zeros(batch, seq, heads, dim)
    k[0, planted] = k[0, planted] / k[0, planted].norm(dim=-1, keepdim=True)
    q[0, -1] = k[0, planted] * 100  # the last query looks for the planted key
    flat = idx.reshape(batch, -1)
    mem_k = ops.gather_rows(k.reshape(batch, seq, -1), flat).view(batch, -1, slots, heads, dim)
    mem_v = ops.gather_rows(v.reshape(batch, seq, -1), flat).view(batch, -1, slots, heads, dim)
    bias = torch.zeros(idx.shape).masked_fill(~valid, float("-inf"))
    out = ops.bmojo_attention(q, k, v, window, None, None, mem_k, mem_v, bias, None, chunk)
    torch.testing.assert_close(out[0, -1], v[0, planted], rtol=0.05, atol=0.05)
    without_memory = ops.bmojo_attention(q, k, v, window, None, None, None, None, None, None, chunk)
    assert not torch.allclose(without_memory[0, -1], v[0, planted], rtol=0.05, atol=0.05)


@pytest.mark.parametrize("norm", ["none", "chunk"])
def test_high_innovation_token_enters_the_model_memory(norm):
    """Inside the model: a token far from what the fading memory predicts has the top innovation and is stored,
    with the raw and with the chunk-standardised innovation.

    The predictor is set to predict the ordinary token from the SSM's steady state (a random predictor can sit
    closer to the planted token than to the ordinary one: every normalised input has the same norm)."""
    config = tiny_config(["bmojo"], eidetic_policy="topk", eidetic_innovation_norm=norm)
    model = BMojoForCausalLM(config).eval()
    layer = model.model.layers[0]
    memory = layer.mixer.eidetic
    memory.record = True
    planted = 15  # the last token of its chunk: the tokens after it, which the fading memory also mispredicts,
    # compete in (and, standardised, are standardised with) their own chunk
    with torch.no_grad():
        memory.innovation_scale.fill_(100.0)
        embeddings = model.model.embed_tokens.weight
        embeddings[5] = 0.001  # every ordinary token: (near) constant and predictable
        embeddings[7] = torch.randn(config.hidden_size) * 5  # the planted one
        steady = {}
        hook = layer.mixer.ssm.register_forward_hook(lambda module, args, out: steady.update(s=out[0, -1]))
        model(torch.full((1, 64), 5))
        hook.remove()
        x5 = layer.input_layernorm(embeddings[5])
        memory.predictor.weight.copy_(torch.outer(x5, steady["s"]) / steady["s"].square().sum())
        ids = torch.full((1, 64), 5)
        ids[0, planted] = 7
        model(ids)
    idx, valid = memory.last_selection
    for q in range(planted // config.chunk_size + config.eidetic_lag, idx.shape[1]):
        assert ((idx[0, q] == planted) & valid[0, q]).any(), q


def test_aux_loss_trains_the_predictor():
    model = BMojoForCausalLM(tiny_config(["bmojo"], eidetic_aux_loss_weight=1.0))
    predictor = model.model.layers[0].mixer.eidetic.predictor
    optimizer = torch.optim.Adam(predictor.parameters(), lr=1e-2)
    ids = torch.randint(0, 97, (4, 32))
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        aux = model(ids).aux_loss
        aux.backward()
        assert predictor.weight.grad is not None and predictor.weight.grad.abs().sum() > 0
        optimizer.step()
        losses.append(aux.item())
    assert losses[-1] < 0.8 * losses[0]


def test_score_parameters_learn_from_retrieval():
    """The logit bias log sigmoid(score) passes gradients to the score's parameters."""
    model = BMojoForCausalLM(tiny_config(["bmojo"]))
    ids = torch.randint(0, 97, (2, 48))
    model(ids, labels=ids).loss.backward()
    memory = model.model.layers[0].mixer.eidetic
    assert memory.score_proj.weight.grad.abs().sum() > 0
    assert memory.innovation_scale.grad.abs() > 0
