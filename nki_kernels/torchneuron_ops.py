"""The kernels as PyTorch custom ops: schemas, fake (meta) kernels and autograd, in one place for every route.

:func:`build_ops` defines ``<namespace>::ssd_scan_fwd``, ``ssd_scan_bwd``, ``gather_rows``, ``scatter_add_rows``
and ``eidetic_select`` with a given op decorator and kernel launcher:

* on a Neuron device (SDK >= 2.33, TorchNeuron) the decorator is ``torch_neuronx.nki_op`` and the launcher
  calls the ``@nki.jit`` kernel with its LNC grid (the model's device bridge, ``bmojo_neuron.ops.nki.device``,
  builds them so; this package imports nothing from the model);
* on the CPU (tests) the decorator is ``torch.library.custom_op`` - the machinery ``nki_op`` registers
  through - and the launcher runs the same kernel source in the interpreter.

Schemas come from the annotations (``torch.library.infer_schema``): fixed-arity tuple returns and
``torch.Tensor | None`` for optional inputs (schema ``Tensor?``); a variadic ``tuple[torch.Tensor, ...]`` return
cannot be inferred. This module must not use ``from __future__ import annotations``: schema inference reads the
annotation objects.
"""

import os

import torch

from nki_kernels.host_checks import check_gather_args, check_scan_args, check_select_args
from nki_kernels.kernels.eidetic_select import eidetic_select_kernel
from nki_kernels.kernels.gather_rows import ROUTES, gather_rows_kernel, scatter_add_rows_kernel
from nki_kernels.kernels.ssd_scan_bwd import ssd_scan_bwd_kernel
from nki_kernels.kernels.ssd_scan_fwd import ssd_scan_fwd_kernel

Tensor = torch.Tensor
KERNEL_DTYPES = (torch.float32, torch.bfloat16)
GATHER_ROUTE_ENV = "BMOJO_NKI_GATHER_ROUTE"  # "indirect" (default, trn2/trn3) or "onehot" (explicit fallback)


def kernel_dtype(dtype: torch.dtype) -> torch.dtype:
    """Matmul operand dtype of the kernels for an input dtype: bf16 stays bf16, everything else runs in fp32."""
    return dtype if dtype in KERNEL_DTYPES else torch.float32


def gather_route() -> str:
    """Device gather route: indirect DMA (SWDGE, NeuronCore-v3+) unless the one-hot fallback is asked for."""
    route = os.environ.get(GATHER_ROUTE_ENV, "indirect").strip().lower()
    if route not in ROUTES:
        raise ValueError(f"{GATHER_ROUTE_ENV}={route!r}: expected one of {ROUTES}")
    return route


def scan_operands(x, dt, A, B, C, D, initial_state):
    """Host-side dtype normalisation (nc_matmul pairs fp32 only with fp32): x, B, C in one matmul dtype,
    the decay inputs and the state in fp32."""
    mm = kernel_dtype(x.dtype)
    f32 = torch.float32

    def cast(t, dtype):
        return None if t is None else t.contiguous().to(dtype)

    return cast(x, mm), cast(dt, f32), cast(A, f32), cast(B, mm), cast(C, mm), cast(D, f32), cast(initial_state, f32)


def scan_input_grads(grads, inputs):
    """The scan backward kernel's seven gradients in the dtypes of ``inputs`` (x, dt, A, B, C, D,
    initial_state), None for an input that was None, then None for ``chunk_size``: what both device routes'
    autograd returns."""
    return (*(None if t is None else g.to(t.dtype) for g, t in zip(grads, inputs)), None)


def _cdiv(a, b):
    return (a + b - 1) // b  # works on SymInts too (fake tensors with dynamic shapes)


def build_ops(namespace: str, op_decorator, run):
    """Define the five ops under ``namespace`` and return them as a dict name -> op.

    ``op_decorator(qualname, mutates_args=())`` registers a typed Python function as a custom op
    (``torch.library.custom_op`` or ``torch_neuronx.nki_op``); ``run(kernel, *args)`` launches a kernel and
    returns its outputs as tensors.
    """
    return {
        **_build_scan_ops(namespace, op_decorator, run),
        **_build_gather_ops(namespace, op_decorator, run),
        **_build_select_op(namespace, op_decorator, run),
    }


def _build_scan_ops(ns: str, op_decorator, run) -> dict:
    """``ssd_scan_fwd`` (differentiable) and ``ssd_scan_bwd``."""

    @op_decorator(f"{ns}::ssd_scan_fwd", mutates_args=())
    def ssd_scan_fwd(
        x: Tensor,
        dt: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor | None,
        initial_state: Tensor | None,
        chunk_size: int,
    ) -> tuple[Tensor, Tensor]:
        check_scan_args(x, B, chunk_size)
        y, final = run(ssd_scan_fwd_kernel, *scan_operands(x, dt, A, B, C, D, initial_state), chunk_size)
        return y, final

    @torch.library.register_fake(f"{ns}::ssd_scan_fwd")
    def _(x, dt, A, B, C, D, initial_state, chunk_size):
        b, _, h, p = x.shape
        y = x.new_empty(x.shape, dtype=kernel_dtype(x.dtype))
        return y, x.new_empty((b, h, p, B.shape[3]), dtype=torch.float32)

    @op_decorator(f"{ns}::ssd_scan_bwd", mutates_args=())
    def ssd_scan_bwd(
        x: Tensor,
        dt: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor | None,
        initial_state: Tensor | None,
        grad_y: Tensor,
        grad_final_state: Tensor | None,
        chunk_size: int,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        check_scan_args(x, B, chunk_size)
        f32 = torch.float32
        args = [None if t is None else t.contiguous().to(f32) for t in (x, dt, A, B, C, D, initial_state)]
        g_final = None if grad_final_state is None else grad_final_state.contiguous().to(f32)
        dx, ddt, dA, dB, dC, dD, dh0 = run(ssd_scan_bwd_kernel, *args, grad_y.contiguous().to(f32), g_final, chunk_size)
        return dx, ddt, dA, dB, dC, dD, dh0

    @torch.library.register_fake(f"{ns}::ssd_scan_bwd")
    def _(x, dt, A, B, C, D, initial_state, grad_y, grad_final_state, chunk_size):
        b, _, h, p = x.shape
        f32 = torch.float32

        def like(shape):
            return x.new_empty(shape, dtype=f32)

        return (
            like(x.shape),
            like(dt.shape),
            like(A.shape),
            like(B.shape),
            like(C.shape),
            like(A.shape),
            like((b, h, p, B.shape[3])),
        )

    def scan_setup(ctx, inputs, output):
        x, dt, A, B, C, D, h0, chunk_size = inputs
        ctx.save_for_backward(x, dt, A, B, C, D, h0)
        ctx.chunk_size = chunk_size

    def scan_backward(ctx, grad_y, grad_final):
        x, dt, A, B, C, D, h0 = ctx.saved_tensors
        if grad_y is None:
            grad_y = torch.zeros_like(x, dtype=torch.float32)
        grads = ssd_scan_bwd(x, dt, A, B, C, D, h0, grad_y, grad_final, ctx.chunk_size)
        return scan_input_grads(grads, (x, dt, A, B, C, D, h0))

    torch.library.register_autograd(f"{ns}::ssd_scan_fwd", scan_backward, setup_context=scan_setup)
    return {"ssd_scan_fwd": ssd_scan_fwd, "ssd_scan_bwd": ssd_scan_bwd}


def _build_gather_ops(ns: str, op_decorator, run) -> dict:
    """``gather_rows`` (differentiable) and its backward ``scatter_add_rows``."""

    @op_decorator(f"{ns}::gather_rows", mutates_args=())
    def gather_rows(src: Tensor, idx: Tensor) -> Tensor:
        check_gather_args(src, idx)
        src_k = src.contiguous().to(kernel_dtype(src.dtype))
        return run(gather_rows_kernel, src_k, idx.contiguous().to(torch.int32), gather_route())

    @torch.library.register_fake(f"{ns}::gather_rows")
    def _(src, idx):
        return src.new_empty((src.shape[0], idx.shape[1], src.shape[2]), dtype=kernel_dtype(src.dtype))

    @op_decorator(f"{ns}::scatter_add_rows", mutates_args=())
    def scatter_add_rows(grad_out: Tensor, idx: Tensor, seq: int) -> Tensor:
        g = grad_out.contiguous().to(kernel_dtype(grad_out.dtype))
        return run(scatter_add_rows_kernel, g, idx.contiguous().to(torch.int32), seq)

    @torch.library.register_fake(f"{ns}::scatter_add_rows")
    def _(grad_out, idx, seq):
        return grad_out.new_empty((grad_out.shape[0], seq, grad_out.shape[2]), dtype=torch.float32)

    def gather_setup(ctx, inputs, output):
        src, idx = inputs
        ctx.save_for_backward(idx)
        ctx.seq, ctx.dtype = src.shape[1], src.dtype

    def gather_backward(ctx, grad_out):
        (idx,) = ctx.saved_tensors
        return scatter_add_rows(grad_out, idx, ctx.seq).to(ctx.dtype), None

    torch.library.register_autograd(f"{ns}::gather_rows", gather_backward, setup_context=gather_setup)
    return {"gather_rows": gather_rows, "scatter_add_rows": scatter_add_rows}


def _build_select_op(ns: str, op_decorator, run) -> dict:
    """``eidetic_select`` (not differentiable)."""

    @op_decorator(f"{ns}::eidetic_select", mutates_args=())
    def eidetic_select(
        scores: Tensor, chunk_size: int, topk: int, slots: int, policy: str, lag: int
    ) -> tuple[Tensor, Tensor]:
        check_select_args(chunk_size, topk, slots, policy, lag)
        idx, valid = run(eidetic_select_kernel, scores.contiguous().float(), chunk_size, topk, slots, policy, lag)
        return idx, valid

    @torch.library.register_fake(f"{ns}::eidetic_select")
    def _(scores, chunk_size, topk, slots, policy, lag):
        shape = (scores.shape[0], _cdiv(scores.shape[1], chunk_size), slots)
        return scores.new_empty(shape, dtype=torch.int32), scores.new_empty(shape, dtype=torch.uint8)

    return {"eidetic_select": eidetic_select}
