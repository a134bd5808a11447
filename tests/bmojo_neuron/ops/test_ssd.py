"""Chunked SSD scan (the ``torch`` path, through the ``bmojo::ssd_scan`` custom op) against the sequential
reference: outputs, final states and input gradients; and the single-step update used by decoding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bmojo_neuron.ops import ssd_step
from bmojo_neuron.ops.ssd.chunked import ssd_scan_chunked
from bmojo_neuron.ops.ssd.custom_op import ssd_scan_backward_op, ssd_scan_op, ssd_scan_torch
from bmojo_neuron.ops.ssd.reference import ssd_scan_reference
from tests.helpers.ops import assert_close, grads, rtol_for

SEQS = (1, 7, 63, 64, 65, 257)


def scan_inputs(batch, seq, heads, head_dim, state, dtype=torch.float32, pad_last_row=0, with_d=True, with_h0=True):
    """Random scan inputs shaped as the model makes them; the last row's ``pad_last_row`` trailing positions are
    padding (x = 0, dt = 0, as :class:`BMojoSSM` masks them)."""
    x = torch.randn(batch, seq, heads, head_dim)
    dt = F.softplus(torch.randn(batch, seq, heads) - 1.0)
    if pad_last_row:
        x[-1, seq - pad_last_row :] = 0
        dt[-1, seq - pad_last_row :] = 0
    A = -torch.linspace(0.5, 8.0, heads)  # slow and fast decays: exercises the log-space decay floor
    B, C = torch.randn(batch, seq, heads, state), torch.randn(batch, seq, heads, state)
    D = torch.randn(heads) if with_d else None
    h0 = torch.randn(batch, heads, head_dim, state) if with_h0 else None
    tensors = [x.to(dtype), dt.to(dtype), A, B.to(dtype), C.to(dtype), D, h0]
    return [t.requires_grad_() if t is not None else None for t in tensors]


@pytest.mark.parametrize("seq", SEQS)
@pytest.mark.parametrize("chunk", [1, 16, 64])
def test_chunked_scan_matches_reference(seq, chunk):
    inputs = scan_inputs(2, seq, 3, 8, 4, pad_last_row=seq // 3)
    y_ref, h_ref = ssd_scan_reference(*inputs, chunk_size=chunk)
    y, h = ssd_scan_torch(*inputs, chunk_size=chunk)
    assert_close(y, y_ref, 1e-4, "y")
    assert_close(h, h_ref, 1e-4, "final state")
    weights = (torch.randn_like(y_ref), torch.randn_like(h_ref))
    names = ("x", "dt", "A", "B", "C", "D", "initial_state")
    expected = grads((y_ref, h_ref), inputs, weights)
    for name, g, g_ref in zip(names, grads((y, h), inputs, weights), expected):
        assert_close(g, g_ref, 1e-4, f"grad {name}")


@pytest.mark.parametrize("with_d,with_h0", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("seq,chunk", [(7, 4), (65, 32), (100, 100)])
def test_chunked_scan_optional_inputs(seq, chunk, with_d, with_h0):
    inputs = scan_inputs(1, seq, 2, 4, 3, with_d=with_d, with_h0=with_h0)
    y_ref, h_ref = ssd_scan_reference(*inputs)
    y, h = ssd_scan_torch(*inputs, chunk_size=chunk)
    assert_close(y, y_ref, 1e-4, "y")
    assert_close(h, h_ref, 1e-4, "final state")
    present = [t for t in inputs if t is not None]
    weights = (torch.randn_like(y_ref), torch.randn_like(h_ref))
    for g, g_ref in zip(grads((y, h), present, weights), grads((y_ref, h_ref), present, weights)):
        assert_close(g, g_ref, 1e-4)


@pytest.mark.parametrize("seq", [63, 257])
def test_chunked_scan_bf16(seq):
    """bf16 inputs: fp32 inside both paths, bf16 output; tolerance BF16_RTOL (see helpers)."""
    inputs = scan_inputs(2, seq, 2, 8, 4, dtype=torch.bfloat16, pad_last_row=5)
    y_ref, h_ref = ssd_scan_reference(*inputs)
    y, h = ssd_scan_torch(*inputs, chunk_size=32)
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32
    assert_close(y, y_ref, rtol_for(torch.bfloat16), "y")
    assert_close(h, h_ref, rtol_for(torch.bfloat16), "final state")
    weights = (torch.randn_like(y_ref, dtype=torch.float32), torch.randn_like(h_ref))
    for g, g_ref in zip(grads((y, h), inputs, weights), grads((y_ref, h_ref), inputs, weights)):
        assert_close(g, g_ref, rtol_for(torch.bfloat16))


def test_long_sequence_decays_stay_accurate():
    """Many chunks with strong decay: the across-chunk decays are summed segment by segment, so they do not
    lose precision as the cumulative log-decay grows (|sum| ~ 1e4 here)."""
    x, dt, A, B, C, D, h0 = scan_inputs(1, 2048, 2, 4, 4, with_h0=True)
    with torch.no_grad():
        dt.fill_(1.0)
        A.copy_(torch.tensor([-0.01, -5.0]))
    y_ref, h_ref = ssd_scan_reference(x, dt, A, B, C, D, h0)
    y, h = ssd_scan_chunked(x, dt, A, B, C, D, h0, chunk_size=8)
    assert_close(y, y_ref, 1e-4, "y")
    assert_close(h, h_ref, 1e-4, "final state")


def test_chunked_scan_rejects_bad_chunk():
    with pytest.raises(ValueError, match="chunk_size"):
        ssd_scan_torch(*scan_inputs(1, 4, 1, 2, 2), chunk_size=0)


def test_ssd_step_continues_a_scan():
    """A prefix through the chunked scan, then token-by-token ``ssd_step`` = the reference on the whole."""
    x, dt, A, B, C, D, h0 = (t.detach() if t is not None else None for t in scan_inputs(2, 20, 3, 4, 5))
    y_ref, h_ref = ssd_scan_reference(x, dt, A, B, C, D, h0)
    y_prefix, state = ssd_scan_chunked(x[:, :13], dt[:, :13], A, B[:, :13], C[:, :13], D, h0, chunk_size=4)
    ys = [y_prefix]
    for t in range(13, 20):
        y_t, state = ssd_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], D, state)
        ys.append(y_t[:, None])
    assert_close(torch.cat(ys, dim=1), y_ref, 1e-4, "y")
    assert_close(state, h_ref, 1e-4, "state")


def test_ssd_step_shapes_and_no_skip():
    x, dt, B, C = torch.randn(2, 3, 4), torch.rand(2, 3), torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    A, state = -torch.rand(3), torch.randn(2, 3, 4, 5)
    y, new_state = ssd_step(x.bfloat16(), dt, A, B, C, None, state)
    assert y.shape == (2, 3, 4) and y.dtype == torch.bfloat16
    assert new_state.shape == (2, 3, 4, 5) and new_state.dtype == torch.float32
    y_ref, _ = ssd_scan_reference(x.bfloat16()[:, None], dt[:, None], A, B[:, None], C[:, None], None, state)
    assert_close(y, y_ref[:, 0], 1e-2)


def test_ssd_step_groups_share_b_and_c():
    """B and C given once per group (heads 0-1 read group 0, heads 2-3 group 1) = the same values per head."""
    torch.manual_seed(1)
    x, dt, D = torch.randn(2, 4, 3), torch.rand(2, 4), torch.randn(4)
    A, state = -torch.rand(4), torch.randn(2, 4, 3, 5)
    B, C = torch.randn(2, 2, 5), torch.randn(2, 2, 5)
    y, h = ssd_step(x, dt, A, B, C, D, state)
    y_ref, h_ref = ssd_step(x, dt, A, B.repeat_interleave(2, 1), C.repeat_interleave(2, 1), D, state)
    assert_close(y, y_ref, 1e-6, "y")
    assert_close(h, h_ref, 1e-6, "state")


def test_opcheck_ssd_scan():
    inputs = scan_inputs(2, 9, 2, 4, 3)
    torch.library.opcheck(ssd_scan_op, (*inputs, 4))
    torch.library.opcheck(ssd_scan_op, (*scan_inputs(1, 5, 2, 4, 3, with_d=False, with_h0=False), 8))
    detached = [t.detach() for t in inputs]
    grad_y, grad_h = torch.randn_like(detached[0]), torch.randn_like(detached[-1])
    torch.library.opcheck(ssd_scan_backward_op, (grad_y, grad_h, *detached, 4))
    torch.library.opcheck(ssd_scan_backward_op, (grad_y, grad_h, *detached[:5], None, None, 4))
