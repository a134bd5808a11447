"""The fused output layer + cross-entropy equals the plain loss: value and gradients, at chunk edges, with
ignored labels, in fp32, bf16 and fp64 (gradcheck); and the model uses it only in a training step."""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron import BMojoForCausalLM
from bmojo_neuron.ops import cross_entropy as ce
from bmojo_neuron.ops.cross_entropy import (
    IGNORE_INDEX,
    linear_cross_entropy,
    linear_cross_entropy_reference,
    next_token_labels,
)
from bmojo_neuron.testing import tiny_config

VOCAB, HIDDEN = 50, 12


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 16 tokens for a 50-token vocabulary, so that a few dozen tokens cross several chunk edges."""
    monkeypatch.setattr(ce, "CHUNK_ELEMENTS", 16 * VOCAB)
    assert ce.chunk_rows(VOCAB) == 16


def _inputs(tokens: int, dtype: torch.dtype, ignored: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(tokens, HIDDEN, generator=g).to(dtype)
    weight = (torch.randn(VOCAB, HIDDEN, generator=g) * 0.5).to(dtype)
    labels = torch.randint(0, VOCAB, (tokens,), generator=g)
    labels[torch.randperm(tokens, generator=g)[:ignored]] = IGNORE_INDEX
    return hidden, weight, labels


def _loss_and_grads(fn, hidden, weight, labels, scale: float = 1.0):
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = fn(h, w, labels)
    (loss * scale).backward()
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("tokens", [1, 15, 16, 17, 47])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_matches_reference(small_chunks, tokens, dtype, tol):
    hidden, weight, labels = _inputs(tokens, dtype, ignored=min(3, tokens - 1))
    want = _loss_and_grads(linear_cross_entropy_reference, hidden, weight, labels, scale=3.0)
    got = _loss_and_grads(linear_cross_entropy, hidden, weight, labels, scale=3.0)
    for name, g, w in zip(("loss", "grad hidden", "grad weight"), got, want):
        assert g.dtype == w.dtype, name
        torch.testing.assert_close(g.float(), w.float(), rtol=tol, atol=tol, msg=lambda m, name=name: f"{name}: {m}")


def test_gradcheck_fp64(small_chunks):
    hidden, weight, labels = _inputs(21, torch.float64)
    h, w = hidden.requires_grad_(), weight.requires_grad_()
    assert torch.autograd.gradcheck(lambda h, w: linear_cross_entropy(h, w, labels), (h, w))


def test_every_label_ignored_is_nan_like_the_plain_loss(small_chunks):
    hidden, weight, labels = _inputs(5, torch.float32)
    labels[:] = IGNORE_INDEX
    assert torch.isnan(linear_cross_entropy(hidden, weight, labels))
    assert torch.isnan(linear_cross_entropy_reference(hidden, weight, labels))


def test_frozen_weight_gets_no_gradient(small_chunks):
    hidden, weight, labels = _inputs(20, torch.float32)
    h = hidden.clone().requires_grad_()
    linear_cross_entropy(h, weight, labels).backward()
    ref = hidden.clone().requires_grad_()
    linear_cross_entropy_reference(ref, weight, labels).backward()
    assert weight.grad is None
    torch.testing.assert_close(h.grad, ref.grad)


def test_shape_errors_name_the_shapes():
    hidden, weight, labels = _inputs(6, torch.float32)
    with pytest.raises(ValueError, match="labels"):
        linear_cross_entropy(hidden, weight, labels[:5])


def test_next_token_labels_shift_and_pad():
    labels = torch.tensor([[5, 6, 7], [1, -100, 2]])
    assert next_token_labels(labels).tolist() == [[6, 7, -100], [-100, 2, -100]]


def _model_step(model, ids, labels):
    model.zero_grad()
    out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("tie", [False, True])
def test_model_training_step_fused_equals_plain(small_chunks, tie):
    torch.manual_seed(0)
    fused = BMojoForCausalLM(tiny_config(["bmojo", "ssm"], tie_word_embeddings=tie))
    plain = BMojoForCausalLM(tiny_config(["bmojo", "ssm"], tie_word_embeddings=tie, fuse_linear_cross_entropy=False))
    plain.load_state_dict(fused.state_dict())
    ids = torch.randint(0, fused.config.vocab_size, (2, 37))
    labels = ids.clone()
    labels[0, :5] = IGNORE_INDEX
    out_f, grads_f = _model_step(fused.train(), ids, labels)
    out_p, grads_p = _model_step(plain.train(), ids, labels)
    assert out_f.logits is None and out_p.logits is not None  # the fused step never builds the logits
    torch.testing.assert_close(out_f.loss, out_p.loss, rtol=1e-5, atol=1e-6)
    assert grads_f.keys() == grads_p.keys()
    for name in grads_p:
        torch.testing.assert_close(
            grads_f[name], grads_p[name], rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}"
        )


def test_model_returns_logits_outside_training_steps():
    model = BMojoForCausalLM(tiny_config(["ssm"]))
    ids = torch.randint(0, model.config.vocab_size, (1, 9))
    assert model.eval()(input_ids=ids, labels=ids).logits is not None  # evaluation
    with torch.no_grad():
        assert model.train()(input_ids=ids, labels=ids).logits is not None  # no autograd
    assert model.train()(input_ids=ids).logits is not None  # no labels


def test_config_field_must_be_boolean():
    with pytest.raises(ValueError, match="fuse_linear_cross_entropy"):
        tiny_config(["ssm"], fuse_linear_cross_entropy="yes")
