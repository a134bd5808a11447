"""Eidetic select and the row gather / scatter-add kernels against the torch references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bmojo_neuron.ops.eidetic.reference import eidetic_select_reference, gather_rows_reference
from bmojo_neuron.ops.nki.sim import eidetic_select_sim, gather_rows_sim
from nki_kernels.interp import run_kernel
from nki_kernels.interp.torch_io import to_numpy
from nki_kernels.kernels.eidetic_select import eidetic_select_kernel
from nki_kernels.kernels.gather_rows import gather_route, gather_rows_kernel, scatter_add_rows_kernel


def _scores(batch, seq, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(batch, seq, generator=g)
    s[0, : min(5, seq)] = float("-inf")  # padding at the start of one row
    if batch > 1:
        s[1, -7:] = float("-inf")
    return s


# (batch, seq, chunk, topk, slots, policy, lag): partial chunks, k > 8 (several max8 rounds), slots not a
# multiple of 8, chunk < 8 (max8 minimum width), slots > all candidates, fifo, lag 1..3
SELECT_CASES = [
    (3, 50, 16, 4, 6, "topk", 2),
    (2, 100, 32, 12, 20, "topk", 2),
    (2, 33, 4, 3, 5, "topk", 3),
    (2, 64, 8, 8, 40, "topk", 1),
    (2, 64, 8, 8, 20, "fifo", 1),
    (2, 40, 10, 3, 7, "fifo", 2),
    (1, 16, 16, 4, 4, "topk", 2),  # one chunk: only the empty memory is visible
]


@pytest.mark.parametrize("case", SELECT_CASES)
def test_select_matches_reference_including_slot_order(case):
    b, t, C, k, M, policy, lag = case
    s = _scores(b, t)
    (idx, valid), _ = run_kernel(eidetic_select_kernel, to_numpy(s), C, k, M, policy, lag)
    ref_idx, ref_valid = eidetic_select_reference(s, C, k, M, policy, lag)
    np.testing.assert_array_equal(valid.astype(bool), ref_valid.numpy())
    np.testing.assert_array_equal(idx, ref_idx.numpy())


def test_select_more_than_128_batch_rows_and_bridge_dtypes():
    s = _scores(130, 24, seed=5)
    idx, valid = eidetic_select_sim(s, 8, 2, 3, "topk", 2)
    ref_idx, ref_valid = eidetic_select_reference(s, 8, 2, 3, "topk", 2)
    assert idx.dtype == torch.int64 and valid.dtype == torch.bool
    assert torch.equal(idx, ref_idx) and torch.equal(valid, ref_valid)


def test_select_ties_prefer_earlier_tokens():
    s = torch.zeros(1, 16)  # every score ties
    idx, valid = eidetic_select_sim(s, 4, 2, 3, "topk", 1)
    assert valid[0].tolist() == [[False] * 3, [True, True, False], [True] * 3, [True] * 3]
    # chunk 0 offers tokens 0, 1; chunk 1 offers 4, 5: on equal scores the memory keeps the earlier ones
    assert idx[0].tolist() == [[0, 0, 0], [0, 1, 0], [0, 1, 4], [0, 1, 4]]


@pytest.mark.parametrize("route, target", [("indirect", "trn2"), ("onehot", "trn1"), ("onehot", "trn2")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gather_routes_match_reference(route, target, dtype):
    g = torch.Generator().manual_seed(0)
    src = torch.randn(2, 300, 40, generator=g).to(dtype)  # seq > 128 (several K tiles), n > 128 rows
    idx = torch.randint(0, 300, (2, 150), generator=g)
    out, rep = run_kernel(gather_rows_kernel, to_numpy(src), to_numpy(idx).astype(np.int32), route, target=target)
    np.testing.assert_array_equal(out.astype(np.float32), gather_rows_reference(src, idx).float().numpy())
    assert rep.target == target


def test_gather_route_per_target():
    assert gather_route("trn2") == "indirect"
    assert gather_route("trn1") == "onehot"


def test_gather_feature_dim_above_one_psum_bank():
    g = torch.Generator().manual_seed(1)
    src, idx = torch.randn(1, 20, 600, generator=g), torch.randint(0, 20, (1, 9), generator=g)
    out, _ = run_kernel(gather_rows_kernel, to_numpy(src), to_numpy(idx).astype(np.int32), "onehot")
    np.testing.assert_array_equal(out, gather_rows_reference(src, idx).numpy())


def test_scatter_add_accumulates_duplicates():
    g = torch.Generator().manual_seed(2)
    grad = torch.randn(2, 150, 24, generator=g)
    idx = torch.randint(0, 40, (2, 150), generator=g)  # many duplicates
    out, _ = run_kernel(scatter_add_rows_kernel, to_numpy(grad), to_numpy(idx).astype(np.int32), 140)
    ref = torch.zeros(2, 140, 24)
    for b in range(2):
        ref[b].index_add_(0, idx[b], grad[b])
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", ["trn1", "trn2"])
def test_gather_bridge_autograd(target, monkeypatch):
    monkeypatch.setenv("BMOJO_NKI_TARGET", target)
    g = torch.Generator().manual_seed(3)
    src = torch.randn(2, 30, 8, generator=g, requires_grad=True)
    src_ref = src.detach().clone().requires_grad_()
    idx = torch.randint(0, 30, (2, 12), generator=g)
    out = gather_rows_sim(src, idx)
    ref = gather_rows_reference(src_ref, idx)
    assert torch.equal(out, ref)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(src.grad, src_ref.grad, rtol=1e-5, atol=1e-5)
