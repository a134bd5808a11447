"""The ``sim`` implementations of the dispatcher: the NKI kernels run on the CPU, as torch ops with the dispatcher's
signatures (those of the references in :mod:`bmojo_neuron.ops`).

``ssd_scan_sim``, ``eidetic_select_sim`` and ``gather_rows_sim`` convert tensors to NumPy, run the kernel
source of :mod:`nki_kernels.kernels` through the CPU interpreter (or through the official ``nki.simulate`` when
the Neuron SDK is installed), and convert back; ``torch.autograd.Function`` wrappers route the backward
through the backward kernels. The dispatcher imports this module when ``sim`` is first asked for and
registers :func:`implementations` (:mod:`.device` provides the ``nki`` ones). Imports run one way: this
module uses ``nki_kernels``, which knows nothing of ``bmojo_neuron``.

The interpreter target comes from ``BMOJO_NKI_TARGET`` (default trn2); the gather uses indirect DMA unless
``BMOJO_NKI_GATHER_ROUTE=onehot`` (or the legacy trn1 model, which has no indirect DMA) selects the fallback.
"""

from __future__ import annotations

import numpy as np
import torch

from nki_kernels._nki import HAVE_REAL_NKI, nki
from nki_kernels.host_checks import check_gather_args, check_scan_args, check_select_args
from nki_kernels.interp import run_kernel
from nki_kernels.interp.targets import resolve_target
from nki_kernels.interp.torch_io import to_numpy, to_torch
from nki_kernels.kernels.eidetic_select import eidetic_select_kernel
from nki_kernels.kernels.gather_rows import gather_route, gather_rows_kernel, scatter_add_rows_kernel
from nki_kernels.kernels.ssd_scan_bwd import ssd_scan_bwd_kernel
from nki_kernels.kernels.ssd_scan_fwd import ssd_scan_fwd_kernel
from nki_kernels.launch import grid
from nki_kernels.torchneuron_ops import gather_route as requested_gather_route

_KERNEL_DTYPES = (torch.float32, torch.bfloat16)


def run(kernel, *args):
    """Run a kernel on NumPy arguments with the process's launch grid (:mod:`nki_kernels.launch`): official
    simulator if the SDK is present, else our interpreter (which also checks the shards cover the work once)."""
    if HAVE_REAL_NKI:
        return nki.simulate(grid(kernel))(*args)
    out, _ = run_kernel(grid(kernel), *args, target=resolve_target())
    return out


def _np(t: torch.Tensor | None, dtype: torch.dtype | None = None):
    """Tensor -> NumPy in ``dtype`` (default: keep fp32/bf16, else fp32); None stays None."""
    if t is None:
        return None
    if dtype is None:
        dtype = t.dtype if t.dtype in _KERNEL_DTYPES else torch.float32
    return to_numpy(t.detach().to(dtype))


def _like(a: np.ndarray, ref: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return to_torch(a).to(device=ref.device, dtype=dtype or ref.dtype)


class _SsdScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, initial_state, chunk_size):
        mm = x.dtype if x.dtype in _KERNEL_DTYPES else torch.float32
        y, final = run(
            ssd_scan_fwd_kernel,
            _np(x, mm),
            _np(dt, torch.float32),
            _np(A, torch.float32),
            _np(B, mm),
            _np(C, mm),
            _np(D, torch.float32),
            _np(initial_state, torch.float32),
            chunk_size,
        )
        ctx.save_for_backward(x, dt, A, B, C, D, initial_state)
        ctx.chunk_size = chunk_size
        return _like(y, x), _like(final, x, torch.float32)

    @staticmethod
    def backward(ctx, grad_y, grad_final):
        x, dt, A, B, C, D, h0 = ctx.saved_tensors
        if grad_y is None:
            grad_y = torch.zeros_like(x)
        f32 = torch.float32
        dx, ddt, dA, dB, dC, dD, dh0 = run(
            ssd_scan_bwd_kernel,
            _np(x, f32),
            _np(dt, f32),
            _np(A, f32),
            _np(B, f32),
            _np(C, f32),
            _np(D, f32),
            _np(h0, f32),
            _np(grad_y, f32),
            _np(grad_final, f32),
            ctx.chunk_size,
        )
        return (
            _like(dx, x),
            _like(ddt, dt),
            _like(dA, A),
            _like(dB, B),
            _like(dC, C),
            None if D is None else _like(dD, D),
            None if h0 is None else _like(dh0, h0),
            None,
        )


def ssd_scan_sim(x, dt, A, B, C, D=None, initial_state=None, chunk_size=64):
    """Chunked SSD scan through the NKI kernels; shapes as :func:`..ssd.reference.ssd_scan_reference`.

    Returns ``(y, final_state)``; y in ``x.dtype`` (the kernel computes in bf16 for bf16 x, else fp32),
    final_state fp32. Differentiable w.r.t. every tensor argument (backward kernel, fp32).
    """
    check_scan_args(x, B, chunk_size)
    return _SsdScan.apply(x, dt, A, B, C, D, initial_state, chunk_size)


def eidetic_select_sim(scores, chunk_size, topk, slots, policy, lag):
    """Eidetic memory per query chunk through the select kernel; see :func:`..eidetic.reference.eidetic_select_reference`.

    Returns ``idx`` (batch, n_chunks, slots) int64 and ``valid`` bool; not differentiable.
    """
    check_select_args(int(chunk_size), int(topk), int(slots), policy, int(lag))
    idx, valid = run(
        eidetic_select_kernel, _np(scores, torch.float32), int(chunk_size), int(topk), int(slots), policy, int(lag)
    )
    dev = scores.device
    return to_torch(idx).to(dev, torch.int64), to_torch(valid).to(dev, torch.bool)


def _idx32(idx: torch.Tensor) -> np.ndarray:
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= 2**31):
        raise ValueError("gather_rows: indices must be in [0, 2^31)")
    return to_numpy(idx.detach().to(torch.int32))


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src, idx):
        mm = src.dtype if src.dtype in _KERNEL_DTYPES else torch.float32
        route = gather_route(resolve_target().name)
        if route == "indirect":
            route = requested_gather_route()
        out = run(gather_rows_kernel, _np(src, mm), _idx32(idx), route)
        ctx.save_for_backward(idx)
        ctx.src_shape, ctx.src_dtype = src.shape, src.dtype
        return _like(out, src)

    @staticmethod
    def backward(ctx, grad_out):
        (idx,) = ctx.saved_tensors
        mm = grad_out.dtype if grad_out.dtype in _KERNEL_DTYPES else torch.float32
        g = run(scatter_add_rows_kernel, _np(grad_out, mm), _idx32(idx), int(ctx.src_shape[1]))
        return _like(g, grad_out, ctx.src_dtype), None


def gather_rows_sim(src, idx):
    """``out[b, i] = src[b, idx[b, i]]`` through the gather kernel; backward = scatter-add kernel."""
    check_gather_args(src, idx)
    return _GatherRows.apply(src, idx)


def implementations() -> dict:
    """The ``sim`` implementation of each op, for the dispatcher to register."""
    return {"ssd_scan": ssd_scan_sim, "eidetic_select": eidetic_select_sim, "gather_rows": gather_rows_sim}
