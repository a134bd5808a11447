"""``bmojo::ssd_scan``: the chunked scan as a torch custom op, so that tracing and ``torch.compile`` see one
opaque node with static output shapes (the NKI kernel plugs in behind the same op on Neuron), over the math of
:mod:`.chunked`. :func:`ssd_scan_torch` is what the dispatcher's ``torch`` mode calls.

The backward is a second op, ``bmojo::ssd_scan_backward`` (the explicit chunked backward, which recomputes
the forward's intermediates): between forward and backward only the inputs are kept, not the
(batch, heads, chunks, L, L) intermediates.
"""

from __future__ import annotations

import torch

from .chunked import ssd_scan_chunked, ssd_scan_chunked_backward


def _state_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


@torch.library.custom_op("bmojo::ssd_scan", mutates_args=())
def ssd_scan_op(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shapes as :func:`.reference.ssd_scan_reference`; returns ``(y, final_state)``."""
    y, state = ssd_scan_chunked(x, dt, A, B, C, D, initial_state, chunk_size)
    return y.contiguous(), state.contiguous()


@ssd_scan_op.register_fake
def _(x, dt, A, B, C, D, initial_state, chunk_size):
    batch, _, heads, head_dim = x.shape
    return x.new_empty(x.shape), x.new_empty(batch, heads, head_dim, B.shape[-1], dtype=_state_dtype(x))


@torch.library.custom_op("bmojo::ssd_scan_backward", mutates_args=())
def ssd_scan_backward_op(
    grad_y: torch.Tensor,
    grad_state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    initial_state: torch.Tensor | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of ``(x, dt, A, B, C, D, initial_state)``; zeros for an absent ``D``/``initial_state``."""
    grads = ssd_scan_chunked_backward(grad_y, grad_state, x, dt, A, B, C, D, initial_state, chunk_size)
    absent = _absent_gradients(x, B)
    return tuple((a if g is None else g).contiguous() for g, a in zip(grads, (None,) * 5 + absent))


def _absent_gradients(x: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Placeholders returned for the gradients of an absent ``D`` and ``initial_state``."""
    batch, _, heads, head_dim = x.shape
    state = _state_dtype(x)
    return x.new_zeros(heads, dtype=state), x.new_zeros(batch, heads, head_dim, B.shape[-1], dtype=state)


@ssd_scan_backward_op.register_fake
def _(grad_y, grad_state, x, dt, A, B, C, D, initial_state, chunk_size):
    like = (x, dt, A, B, C, D, initial_state)
    like = like[:5] + tuple(a if t is None else t for t, a in zip(like[5:], _absent_gradients(x, B)))
    return tuple(t.new_empty(t.shape) for t in like)


def _setup_context(ctx, inputs, output):
    x, dt, A, B, C, D, initial_state, chunk_size = inputs
    ctx.chunk_size = chunk_size
    ctx.save_for_backward(x, dt, A, B, C, D, initial_state)


def _backward(ctx, grad_y, grad_state):
    x, dt, A, B, C, D, initial_state = ctx.saved_tensors
    if grad_y is None:
        grad_y = torch.zeros_like(x)
    if grad_state is None:
        grad_state = torch.zeros(_absent_gradients(x, B)[1].shape, dtype=_state_dtype(x), device=x.device)
    grads = ssd_scan_backward_op(grad_y, grad_state, x, dt, A, B, C, D, initial_state, ctx.chunk_size)
    gx, gdt, gA, gB, gC, gD, ginit = grads
    return gx, gdt, gA, gB, gC, None if D is None else gD, None if initial_state is None else ginit, None


ssd_scan_op.register_autograd(_backward, setup_context=_setup_context)


def ssd_scan_torch(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``torch`` implementation of ``ssd_scan``: same contract as :func:`.reference.ssd_scan_reference`."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if x.device.type == "xla":
        # On PyTorch/XLA 2.9 the op's backward kernel (torch.func.vjp inside a custom-op kernel) returns wrong
        # gradients for dt and A (130% off on the CPU PJRT device; x, B, C, D are right); plain autograd
        # through the same chunked scan is exact there. Found by `make xla-check` (tools/xla_check).
        return ssd_scan_chunked(x, dt, A, B, C, D, initial_state, int(chunk_size))
    return ssd_scan_op(x, dt, A, B, C, D, initial_state, int(chunk_size))
