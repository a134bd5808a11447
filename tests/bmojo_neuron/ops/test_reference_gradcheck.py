"""float64 gradcheck of the reference ops on tiny inputs."""

from __future__ import annotations

import torch
from torch.autograd import gradcheck

from bmojo_neuron.ops.attention.reference import bmojo_attention_reference
from bmojo_neuron.ops.eidetic.reference import gather_rows_reference
from bmojo_neuron.ops.ssd.reference import ssd_scan_reference


def _randn(*shape):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


def test_ssd_scan_gradcheck():
    batch, seq, heads, dim, n = 2, 5, 2, 3, 4
    x, B, C = _randn(batch, seq, heads, dim), _randn(batch, seq, heads, n), _randn(batch, seq, heads, n)
    dt = (torch.rand(batch, seq, heads, dtype=torch.float64) * 0.5 + 0.1).requires_grad_()
    A = (-torch.rand(heads, dtype=torch.float64) - 0.5).requires_grad_()
    D = _randn(heads)
    h0 = _randn(batch, heads, dim, n)

    def fn(*args):
        y, state = ssd_scan_reference(*args)
        return y, state

    assert gradcheck(fn, (x, dt, A, B, C, D, h0))


def test_window_attention_gradcheck():
    batch, seq, heads, kv_heads, dim, chunk, slots, window = 1, 7, 2, 1, 4, 3, 2, 2
    n_chunks = -(-seq // chunk)
    q, k, v = (
        _randn(batch, seq, heads, dim),
        _randn(batch, seq, kv_heads, dim),
        _randn(batch, seq, kv_heads, dim),
    )
    fk, fv = _randn(batch, seq, kv_heads, dim), _randn(batch, seq, kv_heads, dim)
    mk, mv = _randn(batch, n_chunks, slots, kv_heads, dim), _randn(batch, n_chunks, slots, kv_heads, dim)
    bias = _randn(batch, n_chunks, slots)

    def fn(q, k, v, fk, fv, mk, mv, bias):
        return bmojo_attention_reference(q, k, v, window, fk, fv, mk, mv, bias, None, chunk)

    assert gradcheck(fn, (q, k, v, fk, fv, mk, mv, bias))


def test_gathered_rows_gradcheck():
    src = _randn(2, 6, 3)
    idx = torch.tensor([[0, 5, 5, 2], [1, 1, 1, 4]])  # duplicates: the backward must accumulate
    assert gradcheck(lambda s: gather_rows_reference(s, idx), (src,))
