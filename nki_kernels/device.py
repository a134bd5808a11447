"""Calling the kernels on a Neuron device - NOT RUN in this repository (no Neuron SDK or hardware here).

Two routes, as the Neuron SDK documents them (NKI_REFERENCE.md §5):

* PyTorch/XLA (torch-neuronx, SDK <= 2.31): tensors on ``torch_xla.device()``; a ``@nki.jit`` kernel called
  with XLA tensors becomes a custom call in the graph. :class:`XlaSsdScan` / :class:`XlaGatherRows` wrap
  forward and backward kernels in ``torch.autograd.Function``.
* Native PyTorch backend (TorchNeuron, ``device="neuron"``): kernels registered as custom ops with
  ``torch_neuronx.nki_op`` and their backward with ``torch.library.register_autograd``
  (:func:`register_torchneuron_ops`).

Everything here imports the SDK lazily and is written from the docs; it has not been executed.
"""

from __future__ import annotations

import torch

from nki_kernels._nki import HAVE_REAL_NKI
from nki_kernels.kernels.eidetic_select import eidetic_select_kernel
from nki_kernels.kernels.gather_rows import gather_rows_kernel, scatter_add_rows_kernel
from nki_kernels.kernels.ssd_scan_bwd import ssd_scan_bwd_kernel
from nki_kernels.kernels.ssd_scan_fwd import ssd_scan_fwd_kernel

# trn1 has no confirmed indirect DMA in the new API; the device route uses the one-hot route unless told
# otherwise (NEURON_PLATFORM_TARGET_OVERRIDE / BMOJO_NKI_TARGET = trn2 selects "indirect").
_DEVICE_ROUTE_ENV = "BMOJO_NKI_TARGET"


def _device_gather_route() -> str:
    import os

    from nki_kernels.kernels.gather_rows import gather_route

    return gather_route(os.environ.get(_DEVICE_ROUTE_ENV, "trn1"))


class XlaSsdScan(torch.autograd.Function):
    """PyTorch/XLA: forward and backward NKI kernels inside one autograd Function."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, initial_state, chunk_size):
        y, final = ssd_scan_fwd_kernel(x, dt, A, B, C, D, initial_state, chunk_size)
        ctx.save_for_backward(x, dt, A, B, C, D, initial_state)
        ctx.chunk_size = chunk_size
        return y, final

    @staticmethod
    def backward(ctx, grad_y, grad_final):
        x, dt, A, B, C, D, h0 = ctx.saved_tensors
        dx, ddt, dA, dB, dC, dD, dh0 = ssd_scan_bwd_kernel(x, dt, A, B, C, D, h0, grad_y, grad_final, ctx.chunk_size)
        return (
            dx.to(x.dtype),
            ddt.to(dt.dtype),
            dA.to(A.dtype),
            dB.to(B.dtype),
            dC.to(C.dtype),
            None if D is None else dD.to(D.dtype),
            None if h0 is None else dh0,
            None,
        )


class XlaGatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src, idx):
        idx32 = idx.to(torch.int32)
        ctx.save_for_backward(idx32)
        ctx.seq, ctx.dtype = src.shape[1], src.dtype
        return gather_rows_kernel(src, idx32, _device_gather_route())

    @staticmethod
    def backward(ctx, grad_out):
        (idx32,) = ctx.saved_tensors
        return scatter_add_rows_kernel(grad_out, idx32, ctx.seq).to(ctx.dtype), None


def ssd_scan_nki(x, dt, A, B, C, D=None, initial_state=None, chunk_size=64):
    return XlaSsdScan.apply(x, dt, A, B, C, D, initial_state, chunk_size)


def eidetic_select_nki(scores, chunk_size, topk, slots, policy, lag):
    idx, valid = eidetic_select_kernel(scores.float(), chunk_size, topk, slots, policy, lag)
    return idx.to(torch.int64), valid.to(torch.bool)


def gather_rows_nki(src, idx):
    return XlaGatherRows.apply(src, idx)


def register_nki_impls(register) -> None:
    """Register the PyTorch/XLA routes as the dispatcher's ``nki`` implementations (needs the SDK)."""
    if not HAVE_REAL_NKI:
        raise RuntimeError("the Neuron SDK is not importable; the 'nki' implementations cannot run here")
    register("ssd_scan", "nki")(ssd_scan_nki)
    register("eidetic_select", "nki")(eidetic_select_nki)
    register("gather_rows", "nki")(gather_rows_nki)


def register_torchneuron_ops():
    """TorchNeuron route: ``bmojo::ssd_scan`` and ``bmojo::gather_rows`` as custom ops with autograd.

    Returns the two op callables. Requires ``torch_neuronx`` with ``nki_op`` (TorchNeuron beta).
    """
    from torch_neuronx import nki_op  # noqa: PLC0415 - SDK only

    @nki_op("bmojo::ssd_scan_fwd", mutates_args={})
    def ssd_scan_fwd(
        x: torch.Tensor,
        dt: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        D: torch.Tensor,
        initial_state: torch.Tensor,
        chunk_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return ssd_scan_fwd_kernel(x, dt, A, B, C, D, initial_state, chunk_size)

    @nki_op("bmojo::ssd_scan_bwd", mutates_args={})
    def ssd_scan_bwd(
        x: torch.Tensor,
        dt: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: torch.Tensor,
        D: torch.Tensor,
        initial_state: torch.Tensor,
        grad_y: torch.Tensor,
        grad_final: torch.Tensor,
        chunk_size: int,
    ) -> tuple[torch.Tensor, ...]:
        return ssd_scan_bwd_kernel(x, dt, A, B, C, D, initial_state, grad_y, grad_final, chunk_size)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:7])
        ctx.chunk_size = inputs[7]

    def backward(ctx, grad_y, grad_final):
        x, dt, A, B, C, D, h0 = ctx.saved_tensors
        dx, ddt, dA, dB, dC, dD, dh0 = ssd_scan_bwd(x, dt, A, B, C, D, h0, grad_y, grad_final, ctx.chunk_size)
        return dx, ddt, dA, dB, dC, dD, dh0, None

    torch.library.register_autograd("bmojo::ssd_scan_fwd", backward, setup_context=setup_context)

    @nki_op("bmojo::gather_rows", mutates_args={})
    def gather_rows(src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return gather_rows_kernel(src, idx, _device_gather_route())

    @nki_op("bmojo::scatter_add_rows", mutates_args={})
    def scatter_add_rows(grad_out: torch.Tensor, idx: torch.Tensor, seq: int) -> torch.Tensor:
        return scatter_add_rows_kernel(grad_out, idx, seq)

    def gather_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[1])
        ctx.seq = inputs[0].shape[1]

    def gather_backward(ctx, grad_out):
        (idx,) = ctx.saved_tensors
        return scatter_add_rows(grad_out, idx, ctx.seq), None

    torch.library.register_autograd("bmojo::gather_rows", gather_backward, setup_context=gather_setup)
    return ssd_scan_fwd, gather_rows
