"""The eidetic memory's innovation and auxiliary loss, from docs/layer.md's formulas.

``innovation_j = mean((x_j - W_p s_{j-1})^2)`` (``predictor``) or ``mean((W_k x_j - W_k s_{j-1})^2)`` (``key``),
``s_{-1} = 0``; the auxiliary loss is the predictor's ``mean ||stopgrad(x_j) - W_p s_{j-1}||^2`` over real
tokens; the score reads the innovation detached, standardised within its chunk (``chunk``) or raw (``none``).
"""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron import BMojoForCausalLM
from bmojo_neuron.layers.eidetic import INNOVATION_STD_FLOOR, standardise_chunks
from bmojo_neuron.testing import tiny_config

SEQ = 29  # a partial last chunk of 8


def memory_of(mode: str, norm: str = "chunk"):
    model = BMojoForCausalLM(tiny_config(["bmojo"], eidetic_innovation=mode, eidetic_innovation_norm=norm)).double()
    attn = model.model.layers[0].mixer
    if mode == "predictor":
        torch.nn.init.normal_(attn.eidetic.predictor.weight, std=0.3)  # predicts something: innovations differ
    return attn


def run(attn, x, s, mask=None):
    """The memory's forward, recording the innovation it computed (batch, seq)."""
    seen = {}
    original = attn.eidetic.innovation

    def recording(*args):
        innovation, aux = original(*args)
        seen["innovation"] = innovation
        return innovation, aux

    attn.eidetic.innovation = recording
    try:
        k = attn.heads(attn.k_proj, x, attn.num_kv_heads)
        v = attn.heads(attn.v_proj, x, attn.num_kv_heads)
        mem_k, mem_v, mem_bias, aux = attn.eidetic(x, s, k, v, attn.k_proj, mask)
    finally:
        del attn.eidetic.innovation
    return seen["innovation"], mem_bias, aux


def hand_innovation(attn, mode, x, s):
    s_prev = torch.cat([torch.zeros_like(s[:, :1]), s[:, :-1]], 1)
    if mode == "predictor":
        return (x - s_prev @ attn.eidetic.predictor.weight.T).pow(2).mean(-1)
    wk = attn.k_proj.weight
    return (x @ wk.T - s_prev @ wk.T).pow(2).mean(-1)


def random_xs(hidden, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(2, SEQ, hidden, generator=gen, dtype=torch.float64) for _ in "xs")


@pytest.mark.parametrize("mode", ["predictor", "key"])
def test_innovation_is_the_hand_formula(mode):
    attn = memory_of(mode)
    x, s = random_xs(attn.o_proj.out_features)
    innovation, _, _ = run(attn, x, s)
    torch.testing.assert_close(innovation, hand_innovation(attn, mode, x, s), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["predictor", "key"])
def test_perturbing_s_at_j_changes_the_innovation_at_j_plus_1_only(mode):
    attn = memory_of(mode)
    x, s = random_xs(attn.o_proj.out_features)
    before, _, _ = run(attn, x, s)
    j = 11
    s2 = s.clone()
    s2[:, j] += 1.0
    after, _, _ = run(attn, x, s2)
    changed = (after != before).any(0)
    assert changed.tolist() == [t == j + 1 for t in range(SEQ)]


def test_standardised_innovation_per_chunk():
    """``chunk``: ``(u - mean) / sqrt(var + (floor * mean)^2)`` over each chunk's real tokens."""
    gen = torch.Generator().manual_seed(0)
    u = 1.0 + 0.5 * torch.rand(2, 20, generator=gen, dtype=torch.float64)
    valid = torch.ones(2, 20, dtype=torch.bool)
    valid[1, 13:] = False  # row 1: its last chunk has 5 real tokens
    z = standardise_chunks(u, valid, 8)
    for row, start, end in [(0, 0, 8), (0, 8, 16), (0, 16, 20), (1, 8, 13)]:
        ref = u[row, start:end]
        expected = (ref - ref.mean()) / (ref.var(unbiased=False) + (INNOVATION_STD_FLOOR * ref.mean()) ** 2).sqrt()
        torch.testing.assert_close(z[row, start:end], expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(z[1, 8:13], standardise_chunks(u[1:, 8:13], valid[1:, 8:13], 8)[0], rtol=0, atol=0)


def test_auxiliary_loss_does_not_reach_x_through_its_target():
    attn = memory_of("predictor")
    x, s = random_xs(attn.o_proj.out_features)
    x.requires_grad_(True)
    s.requires_grad_(True)
    _, _, aux = run(attn, x, s)
    gx, gs, gp = torch.autograd.grad(aux, (x, s, attn.eidetic.predictor.weight), allow_unused=True)
    assert gx is None or torch.count_nonzero(gx) == 0  # stop-gradient on the target x_j
    assert torch.count_nonzero(gs) > 0 and torch.count_nonzero(gp) > 0  # it trains the predictor (and s)


@pytest.mark.parametrize("norm", ["chunk", "none"])
def test_score_reads_the_innovation_detached(norm):
    """The memory's logit bias trains the score (its scale and projection), never the predictor."""
    attn = memory_of("predictor", norm)
    torch.nn.init.normal_(attn.eidetic.score_proj.weight, std=0.1)
    x, s = random_xs(attn.o_proj.out_features)
    _, mem_bias, _ = run(attn, x, s)
    finite = torch.isfinite(mem_bias)
    assert finite.any()
    params = (attn.eidetic.predictor.weight, attn.eidetic.innovation_scale, attn.eidetic.score_proj.weight)
    gp, ga, gw = torch.autograd.grad(mem_bias[finite].sum(), params, allow_unused=True)
    assert gp is None or torch.count_nonzero(gp) == 0
    assert torch.count_nonzero(ga) > 0 and torch.count_nonzero(gw) > 0


def test_padded_tokens_do_not_change_the_auxiliary_loss():
    attn = memory_of("predictor")
    x, s = random_xs(attn.o_proj.out_features)
    mask = torch.ones(2, SEQ, dtype=torch.bool)
    mask[1, 20:] = False  # trailing padding (the model moves left padding behind the real tokens)
    _, _, aux = run(attn, x, s, mask)
    x2, s2 = x.clone(), s.clone()
    x2[1, 20:] = 100.0
    s2[1, 20:] = -100.0
    _, _, aux2 = run(attn, x2, s2, mask)
    torch.testing.assert_close(aux2, aux, rtol=0, atol=0)
    per_token = hand_innovation(attn, "predictor", x, s)
    torch.testing.assert_close(aux, per_token[mask].mean(), rtol=1e-12, atol=1e-12)
