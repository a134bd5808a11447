"""Blocked B'MOJO attention against the dense reference: outputs and the gradients of every input, at real
(non-padded) query positions; padded queries see no key and their output is unspecified in both paths."""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron.ops.attention.blocked import bmojo_attention_torch
from bmojo_neuron.ops.attention.reference import bmojo_attention_reference
from tests.helpers.ops import assert_close, rtol_for

SEQS = (1, 7, 63, 64, 65, 257)
NAMES = ("q", "k", "v", "fade_k", "fade_v", "mem_k", "mem_v", "mem_bias")


def attention_inputs(seq, window, chunk, kind, heads=4, kv_heads=2, dim=8, slots=5, batch=2, dtype=torch.float32):
    """Inputs of one layer kind: "window" (sliding_attention), "fade" (bmojo_f), "mem" (bmojo) or "full".
    The last row has trailing padding; a third of the slots are empty (-inf bias)."""
    n_chunks = -(-seq // chunk)

    def randn(*shape):
        return torch.randn(*shape).to(dtype).requires_grad_()

    q, k, v = randn(batch, seq, heads, dim), randn(batch, seq, kv_heads, dim), randn(batch, seq, kv_heads, dim)
    fade_k = fade_v = mem_k = mem_v = mem_bias = None
    if kind in ("fade", "mem"):
        fade_k, fade_v = randn(batch, seq, kv_heads, dim), randn(batch, seq, kv_heads, dim)
    if kind == "mem":
        mem_k, mem_v = randn(batch, n_chunks, slots, kv_heads, dim), randn(batch, n_chunks, slots, kv_heads, dim)
        bias = torch.randn(batch, n_chunks, slots).masked_fill(torch.rand(batch, n_chunks, slots) < 0.3, float("-inf"))
        mem_bias = bias.requires_grad_()
    mask = torch.ones(batch, seq, dtype=torch.bool)
    mask[-1, seq - seq // 4 :] = False
    tensors = (q, k, v, fade_k, fade_v, mem_k, mem_v, mem_bias)
    return tensors, dict(window=None if kind == "full" else window, key_padding_mask=mask, chunk_size=chunk)


def run(fn, tensors, kwargs):
    q, k, v, fade_k, fade_v, mem_k, mem_v, mem_bias = tensors
    return fn(q, k, v, kwargs["window"], fade_k, fade_v, mem_k, mem_v, mem_bias, kwargs["key_padding_mask"],
              kwargs["chunk_size"])  # fmt: skip


def check(tensors, kwargs, rtol):
    expected = run(bmojo_attention_reference, tensors, kwargs)
    actual = run(bmojo_attention_torch, tensors, kwargs)
    real = kwargs["key_padding_mask"][..., None, None]
    assert actual.dtype == expected.dtype
    assert_close(actual * real, expected * real, rtol, "output")
    present = [(n, t) for n, t in zip(NAMES, tensors) if t is not None]
    weight = torch.randn(expected.shape) * real
    inputs = [t for _, t in present]
    g_ref = torch.autograd.grad((expected.float() * weight).sum(), inputs, allow_unused=True)
    g = torch.autograd.grad((actual.float() * weight).sum(), inputs, allow_unused=True)
    for (name, t), a, e in zip(present, g, g_ref):
        # Unused inputs (fading keys when the window covers the sequence) have zero gradient.
        a, e = (torch.zeros_like(t) if x is None else x for x in (a, e))
        if name == "mem_bias":  # empty slots (-inf) get no gradient in either path
            a, e = a.masked_fill(torch.isinf(t), 0), e.masked_fill(torch.isinf(t), 0)
        assert_close(a, e, rtol, f"grad {name}")


@pytest.mark.parametrize("seq", SEQS)
@pytest.mark.parametrize("kind", ["window", "fade", "mem"])
@pytest.mark.parametrize("window,chunk", [(4, 4), (8, 16), (16, 8), (100, 32)])
def test_blocked_matches_reference(seq, kind, window, chunk):
    check(*attention_inputs(seq, window, chunk, kind), 1e-4)


@pytest.mark.parametrize("seq", [1, 7, 65])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 1), (6, 2)])
def test_full_causal_and_gqa(seq, heads, kv_heads):
    check(*attention_inputs(seq, None, 16, "full", heads=heads, kv_heads=kv_heads), 1e-4)
    check(*attention_inputs(seq, 8, 4, "mem", heads=heads, kv_heads=kv_heads), 1e-4)


def test_slots_without_window():
    """``window=None`` with eidetic slots: full causal attention plus the slots (no fading band)."""
    tensors, kwargs = attention_inputs(33, 8, 8, "mem")
    tensors = (*tensors[:3], None, None, *tensors[5:])
    check(tensors, {**kwargs, "window": None}, 1e-4)


def test_no_padding_mask():
    tensors, kwargs = attention_inputs(40, 8, 8, "mem")
    check(tensors, {**kwargs, "key_padding_mask": torch.ones(2, 40, dtype=torch.bool)}, 1e-4)
    expected = run(bmojo_attention_reference, tensors, {**kwargs, "key_padding_mask": None})
    actual = run(bmojo_attention_torch, tensors, {**kwargs, "key_padding_mask": None})
    assert_close(actual, expected, 1e-4, "no mask")


@pytest.mark.parametrize("kind", ["full", "mem"])
def test_bf16(kind):
    """bf16 inputs: fp32 inside both paths, bf16 output; tolerance BF16_RTOL (see helpers)."""
    check(*attention_inputs(65, 16, 16, kind, dtype=torch.bfloat16), rtol_for(torch.bfloat16))


def test_padded_queries_stay_finite():
    """A padded query whose window holds only padding has no visible key: its output and the gradients
    stay finite (no NaN from an all-masked softmax)."""
    tensors, kwargs = attention_inputs(40, 4, 4, "mem")
    out = run(bmojo_attention_torch, tensors, kwargs)
    assert torch.isfinite(out).all()
    grads = torch.autograd.grad(out.sum(), [t for t in tensors[:3]])
    assert all(torch.isfinite(g).all() for g in grads)


def test_fading_keys_need_a_window():
    tensors, kwargs = attention_inputs(8, 4, 4, "fade")
    with pytest.raises(ValueError, match="window"):
        run(bmojo_attention_torch, tensors, {**kwargs, "window": None})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group_elements", [1, 3000])
@pytest.mark.parametrize("kind,seq,window,chunk", [("mem", 65, 8, 8), ("fade", 63, 16, 8), ("window", 40, 4, 4),
                                                   ("mem", 57, 13, 4), ("mem", 33, 100, 8)])  # fmt: skip
def test_blocked_backward_tiles(monkeypatch, dtype, group_elements, kind, seq, window, chunk):
    """The explicit backward recomputes the probabilities group by group of query blocks: with one block per
    group (1) or uneven groups (3000 logits), the outputs and every input gradient (with trailing padding in
    the last row, a window that is not a multiple of the chunk, bands reaching several blocks back, a window
    longer than the sequence) still match the reference."""
    import bmojo_neuron.ops.attention.blocked as blocked

    monkeypatch.setattr(blocked, "_GROUP_ELEMENTS", group_elements)
    assert len(blocked._groups(blocked._Geometry(seq, min(window, seq), chunk, 4, 2, 8, 5, 2), 2)) > 1
    check(*attention_inputs(seq, window, chunk, kind, dtype=dtype), rtol_for(dtype))
