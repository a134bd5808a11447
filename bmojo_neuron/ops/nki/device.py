"""The ``nki`` implementations of the dispatcher on a Neuron device - NOT RUN in this repository (no SDK here).

The dispatcher imports this module when ``nki`` is first asked for and registers :func:`implementations`.
Imports run one way: this module uses ``nki_kernels`` (kernels, launch grid, custom-op builder), which knows
nothing of ``bmojo_neuron``.

One dispatcher, two device stacks (:mod:`nki_kernels.sdk` detects which; versions in its table):

* TorchNeuron (SDK >= 2.33, PyTorch 2.14, device ``"neuron"``) - the primary route: the kernels are
  ``torch_neuronx.nki_op`` custom ops with fake kernels and ``torch.library.register_autograd``
  (:mod:`nki_kernels.torchneuron_ops`, whose schemas and opcheck run on the CPU in the tests).
* PyTorch/XLA + torch-neuronx (SDK <= 2.31, PyTorch <= 2.9) - the legacy route: ``@nki.jit`` kernels called
  with XLA tensors inside ``torch.autograd.Function`` (:class:`XlaSsdScan`, :class:`XlaGatherRows`).

Every launch is ``kernel[lnc]`` with the LNC degree of :mod:`nki_kernels.launch` (NEURON_LOGICAL_NC_CONFIG,
default 2 = neuronx-cc's default on Trn2/Trn3). Kernel targets are trn2 and trn3 (NeuronCore-v3/v4); the
gather uses indirect DMA unless ``BMOJO_NKI_GATHER_ROUTE=onehot`` asks for the tensor-engine fallback.
Inferentia2 / trn1 (NeuronCore-v2) are not kernel targets: current NKI supports Trn2/Trn3 only, so the
serving export runs torch ops alone.
"""

from __future__ import annotations

import torch

from nki_kernels.host_checks import check_gather_args, check_scan_args, check_select_args
from nki_kernels.kernels.eidetic_select import eidetic_select_kernel
from nki_kernels.kernels.gather_rows import gather_rows_kernel, scatter_add_rows_kernel
from nki_kernels.kernels.ssd_scan_bwd import ssd_scan_bwd_kernel
from nki_kernels.kernels.ssd_scan_fwd import ssd_scan_fwd_kernel
from nki_kernels.launch import grid
from nki_kernels.sdk import detect_stack
from nki_kernels.torchneuron_ops import build_ops, gather_route, kernel_dtype, scan_input_grads, scan_operands

OP_NAMESPACE = "bmojo_nki"  # "bmojo::*" are the torch path's own custom ops (bmojo_neuron.ops)


def _launch(kernel, *args):
    return grid(kernel)(*args)


# ---- legacy route: PyTorch/XLA (SDK <= 2.31) -----------------------------------------------------------------
class XlaSsdScan(torch.autograd.Function):
    """PyTorch/XLA: forward and backward NKI kernels inside one autograd Function."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, initial_state, chunk_size):
        y, final = _launch(ssd_scan_fwd_kernel, *scan_operands(x, dt, A, B, C, D, initial_state), chunk_size)
        ctx.save_for_backward(x, dt, A, B, C, D, initial_state)
        ctx.chunk_size = chunk_size
        return y.to(x.dtype), final

    @staticmethod
    def backward(ctx, grad_y, grad_final):
        x, dt, A, B, C, D, h0 = ctx.saved_tensors
        f32 = [None if t is None else t.float() for t in (x, dt, A, B, C, D, h0)]
        gf = None if grad_final is None else grad_final.float()
        grads = _launch(ssd_scan_bwd_kernel, *f32, grad_y.float(), gf, ctx.chunk_size)
        return scan_input_grads(grads, (x, dt, A, B, C, D, h0))


class XlaGatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src, idx):
        idx32 = idx.to(torch.int32)
        ctx.save_for_backward(idx32)
        ctx.seq, ctx.dtype = src.shape[1], src.dtype
        return _launch(gather_rows_kernel, src.to(kernel_dtype(src.dtype)), idx32, gather_route()).to(src.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (idx32,) = ctx.saved_tensors
        g = grad_out.to(kernel_dtype(grad_out.dtype))
        return _launch(scatter_add_rows_kernel, g, idx32, ctx.seq).to(ctx.dtype), None


def xla_impls() -> dict:
    """The dispatcher's signatures on the legacy route."""

    def ssd_scan_nki(x, dt, A, B, C, D=None, initial_state=None, chunk_size=64):
        check_scan_args(x, B, chunk_size)
        return XlaSsdScan.apply(x, dt, A, B, C, D, initial_state, chunk_size)

    def eidetic_select_nki(scores, chunk_size, topk, slots, policy, lag):
        check_select_args(chunk_size, topk, slots, policy, lag)
        idx, valid = _launch(eidetic_select_kernel, scores.float(), chunk_size, topk, slots, policy, lag)
        return idx.to(torch.int64), valid.to(torch.bool)

    def gather_rows_nki(src, idx):
        check_gather_args(src, idx)
        return XlaGatherRows.apply(src, idx)

    return {"ssd_scan": ssd_scan_nki, "eidetic_select": eidetic_select_nki, "gather_rows": gather_rows_nki}


# ---- primary route: TorchNeuron (SDK >= 2.33) -----------------------------------------------------------------
_TORCHNEURON_OPS: dict | None = None


def register_torchneuron_ops() -> dict:
    """Register ``bmojo_nki::*`` through ``torch_neuronx.nki_op`` (once per process) and return the ops."""
    global _TORCHNEURON_OPS
    if _TORCHNEURON_OPS is None:
        from torch_neuronx import nki_op  # SDK >= 2.33 only

        _TORCHNEURON_OPS = build_ops(OP_NAMESPACE, nki_op, _launch)
    return _TORCHNEURON_OPS


def dispatcher_impls(ops: dict) -> dict:
    """The dispatcher's signatures on top of the custom ops of :func:`nki_kernels.torchneuron_ops.build_ops`."""

    def ssd_scan_nki(x, dt, A, B, C, D=None, initial_state=None, chunk_size=64):
        return ops["ssd_scan_fwd"](x, dt, A, B, C, D, initial_state, int(chunk_size))

    def eidetic_select_nki(scores, chunk_size, topk, slots, policy, lag):
        idx, valid = ops["eidetic_select"](scores, int(chunk_size), int(topk), int(slots), str(policy), int(lag))
        return idx.to(torch.int64), valid.to(torch.bool)

    def gather_rows_nki(src, idx):
        return ops["gather_rows"](src, idx).to(src.dtype)

    return {"ssd_scan": ssd_scan_nki, "eidetic_select": eidetic_select_nki, "gather_rows": gather_rows_nki}


def implementations(stack: str | None = None) -> dict:
    """The ``nki`` implementation of each op on ``stack`` (default: the detected one), for the dispatcher.

    Raises RuntimeError when no Neuron device stack imports here."""
    stack = stack or detect_stack()
    if stack == "torchneuron":
        return dispatcher_impls(register_torchneuron_ops())
    if stack == "xla":
        return xla_impls()
    raise RuntimeError(
        "no Neuron device stack imports here (need the SDK from the Neuron package index: TorchNeuron with "
        "SDK >= 2.33, or torch-neuronx + torch-xla with SDK <= 2.31); see nki_kernels.sdk.STACKS"
    )
