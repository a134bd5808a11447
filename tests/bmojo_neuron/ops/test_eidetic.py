"""Eidetic selection (vectorised prefix scan of top-k merges) and the row gather against the references."""

from __future__ import annotations

import pytest
import torch

from bmojo_neuron.ops.eidetic.custom_op import (
    eidetic_select_op,
    eidetic_select_torch,
    gather_rows_backward_op,
    gather_rows_op,
)
from bmojo_neuron.ops.eidetic.reference import eidetic_select_reference, gather_rows_reference
from bmojo_neuron.ops.eidetic.vectorized import gather_rows_backward_vectorized
from tests.helpers.ops import assert_close


def scores_with_padding(batch: int, seq: int) -> torch.Tensor:
    """Continuous random scores (no exact ties); the last row's trailing third is padding (-inf)."""
    scores = torch.randn(batch, seq)
    scores[-1, seq - seq // 3 :] = float("-inf")
    return scores


@pytest.mark.parametrize("policy", ["topk", "fifo"])
@pytest.mark.parametrize("seq", [1, 7, 63, 64, 65, 257])
@pytest.mark.parametrize("chunk,topk,slots,lag", [(4, 2, 6, 2), (8, 3, 3, 1), (16, 8, 4, 3), (32, 4, 32, 2)])
def test_select_matches_reference(seq, chunk, topk, slots, lag, policy):
    scores = scores_with_padding(3, seq)
    idx_ref, valid_ref = eidetic_select_reference(scores, chunk, topk, slots, policy, lag)
    idx, valid = eidetic_select_torch(scores, chunk, topk, slots, policy, lag)
    assert idx.dtype == torch.long and valid.dtype == torch.bool
    assert torch.equal(valid, valid_ref)
    # The reference returns each memory's slots in top-k order; compare them as sets per (row, chunk).
    assert torch.equal(idx.sort(-1).values, idx_ref.sort(-1).values)
    assert torch.equal(torch.where(valid, idx, -1).sort(-1).values, torch.where(valid_ref, idx_ref, -1).sort(-1).values)


def test_select_memory_is_nonempty_and_lagged():
    """The test above could pass on all-empty memories: check that memories fill up, after ``lag`` chunks."""
    idx, valid = eidetic_select_torch(torch.randn(2, 64), 8, 2, 4, "topk", 2)
    assert not valid[:, :2].any() and valid[:, 3:].all()
    assert (idx[:, 2] < 8).all() and valid[:, 2].sum(-1).eq(2).all()  # after chunk 0: its 2 candidates
    assert (idx[:, 7] >= 8).any()  # later memories hold later tokens too


def test_select_rejects_bad_arguments():
    with pytest.raises(ValueError, match="policy"):
        eidetic_select_torch(torch.randn(1, 8), 4, 2, 2, "lru", 2)
    with pytest.raises(ValueError, match="lag"):
        eidetic_select_torch(torch.randn(1, 8), 4, 2, 2, "topk", -1)


def test_gather_rows_forward_and_scatter_add_backward():
    src = torch.randn(2, 9, 5, requires_grad=True)
    idx = torch.tensor([[0, 8, 8, 3, 3, 3], [1, 1, 2, 7, 0, 5]])  # duplicates: gradients must add up
    out = gather_rows_op(src, idx)
    expected = gather_rows_reference(src, idx)
    assert torch.equal(out, expected)
    weight = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * weight).sum(), src)
    (grad_ref,) = torch.autograd.grad((expected * weight).sum(), src)
    assert_close(grad, grad_ref, 1e-6, "grad src")
    assert_close(gather_rows_backward_vectorized(weight, idx, 9), grad_ref, 1e-6, "explicit backward")


def test_opcheck_eidetic_ops():
    torch.library.opcheck(eidetic_select_op, (scores_with_padding(2, 37), 8, 3, 5, "topk", 2))
    torch.library.opcheck(eidetic_select_op, (torch.randn(1, 20), 4, 2, 3, "fifo", 1))
    src, idx = torch.randn(2, 9, 4, requires_grad=True), torch.randint(0, 9, (2, 7))
    torch.library.opcheck(gather_rows_op, (src, idx))
    torch.library.opcheck(gather_rows_backward_op, (torch.randn(2, 7, 4), idx, 9))


def test_fifo_priority_orders_chunks_then_scores_and_keeps_empty_entries_last():
    from bmojo_neuron.ops.eidetic import fifo_priority

    score = torch.tensor([[5.0, -5.0, float("-inf")], [-30.0, 0.0, float("-inf")]])
    chunk = torch.tensor([[0], [1]])
    prio = fifo_priority(score, chunk)
    assert prio[1, 0] > prio[0, 0]  # any token of a later chunk outranks every token of an earlier one
    assert prio[0, 0] > prio[0, 1] and prio[1, 1] > prio[1, 0]  # inside a chunk, the higher score first
    assert torch.isneginf(prio[:, 2]).all()  # never-selectable entries stay below every real priority
    assert torch.equal(fifo_priority(score[0], 3), fifo_priority(score[:1], torch.tensor([[3]]))[0])  # int chunk
