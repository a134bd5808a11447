"""The steps the Trainium gate runs contain no host syncs (checked on the CPU, no torch-xla needed).

On XLA a host read inside a step (``.item()``, ``if tensor:``, boolean indexing) splits the step's graph
and waits for the device; ``make xla-check`` measures that on PyTorch/XLA, and these tests catch it in
the main suite first, naming the op. The negative tests show the guard does fire.
"""

from __future__ import annotations

import pytest
import torch

from inference.export import StaticBMojo
from tools.xla_check import steps
from tools.xla_check.host_sync import HostSyncError, forbid_host_sync, optimizer_step_counters


@pytest.fixture(scope="module")
def hybrid():
    return steps.build_model(steps.TRAIN_LAYERS)


def test_train_step_has_no_host_sync():
    model = steps.build_model(steps.TRAIN_LAYERS)
    assert set(model.config.layer_types) == {"attention", "sliding_attention", "ssm", "bmojo_f", "bmojo"}
    optimizer = steps.make_optimizer(model)
    # Two steps: the first creates the optimizer state, the second is the steady state.
    for batch in steps.make_batches(2, model.config.vocab_size):
        with forbid_host_sync(allow=optimizer_step_counters(optimizer)):
            loss = steps.train_step(model, optimizer, batch)
        assert torch.isfinite(loss)


def test_decode_step_has_no_host_sync():
    model = steps.build_model(steps.DECODE_LAYERS).eval()
    prompt = torch.randint(0, model.config.vocab_size, (steps.BATCH, steps.PROMPT))
    with forbid_host_sync():
        logits = steps.greedy_decode(model, prompt, 3)
    assert len(logits) == 3 and logits[0].shape == (steps.BATCH, model.config.vocab_size)


def test_decode_state_shapes_are_fixed():
    """Same state shapes after every decode step of the export wrapper: one compiled graph serves them all."""
    model = steps.build_model(steps.DECODE_LAYERS).eval()
    static = StaticBMojo(model, batch_size=steps.BATCH)
    prompt = torch.randint(0, model.config.vocab_size, (steps.BATCH, steps.PROMPT))
    with torch.no_grad():
        logits, *state = static.prefill(prompt, torch.ones_like(prompt))
        shapes = [(t.shape, t.dtype) for t in state]
        for _ in range(3):
            logits, *state = static.decode(logits.argmax(-1, keepdim=True), *state)
            assert [(t.shape, t.dtype) for t in state] == shapes


# ----------------------------------------------------------------------------------------------- the guard fires


def _item(h):
    h.sum().item()


def _tolist(h):
    h[0, 0].tolist()


def _branch(h):
    if h.mean() > 0:
        pass


def _int(h):
    int(h[0, 0, 0])


def _nonzero(h):
    torch.nonzero(h > 0)


def _bool_index(h):
    h[h > 0]


def _bool_index_put(h):
    h.clone()[h > 0] = 0.0


@pytest.mark.parametrize("sync", [_item, _tolist, _branch, _int, _nonzero, _bool_index, _bool_index_put])
def test_guard_catches_a_host_sync_in_the_forward(hybrid, sync):
    """A hook that syncs on an activation in the middle of the model: the guard names it."""
    handle = hybrid.model.layers[2].register_forward_hook(lambda mod, inp, out: sync(out[0]))  # (hidden, aux)
    batch = steps.make_batches(1, hybrid.config.vocab_size)[0]
    try:
        with pytest.raises(HostSyncError), forbid_host_sync():
            hybrid(**batch)
    finally:
        handle.remove()


def test_guard_catches_a_host_sync_in_the_backward():
    x = torch.randn(4, requires_grad=True)

    class SyncingBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t * 2

        @staticmethod
        def backward(ctx, grad):
            grad.max().item()
            return grad * 2

    with pytest.raises(HostSyncError), forbid_host_sync():
        SyncingBackward.apply(x).sum().backward()


@torch.library.custom_op("bmojo_test::syncing_op", mutates_args=())
def _syncing_op(x: torch.Tensor) -> torch.Tensor:
    return x * x.abs().max().item()


@_syncing_op.register_fake
def _(x):
    return torch.empty_like(x)


def test_guard_looks_inside_custom_ops():
    with pytest.raises(HostSyncError), forbid_host_sync():
        _syncing_op(torch.randn(3))


def test_optimizer_allowance_is_narrow():
    """Without the allowance, AdamW's host-side step counter read is reported: the allowance covers only it."""
    model = torch.nn.Linear(4, 2)
    optimizer = steps.make_optimizer(model)
    model(torch.randn(3, 4)).sum().backward()
    with pytest.raises(HostSyncError), forbid_host_sync():
        optimizer.step()
    with forbid_host_sync(allow=optimizer_step_counters(optimizer)):
        optimizer.step()
        with pytest.raises(HostSyncError):
            model.weight.sum().item()


def test_guard_restores_tensor_methods():
    """The wrapped ``tolist``/``numpy`` come back after the block, also when custom ops re-entered the mode."""
    methods = (torch.Tensor.tolist, torch.Tensor.numpy)
    with pytest.raises(HostSyncError), forbid_host_sync():
        _syncing_op(torch.randn(3))
    model = steps.build_model(steps.TRAIN_LAYERS)
    with forbid_host_sync():
        model(**steps.make_batches(1, model.config.vocab_size)[0]).loss.backward()  # runs bmojo:: custom ops
    assert (torch.Tensor.tolist, torch.Tensor.numpy) == methods
    assert torch.ones(2).tolist() == [1.0, 1.0]


def test_meta_tensors_pass():
    """Shape-only tracing (meta tensors) reads no values, so the guard lets it through."""
    with forbid_host_sync():
        torch.ones(3, device="meta").sum()
