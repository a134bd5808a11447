"""B'MOJO ops. Each public function here dispatches to one implementation (see :mod:`.dispatch`)."""

from __future__ import annotations

import torch

from .attention.blocked import bmojo_attention_torch
from .attention.incremental import KeyBlock, cached_attention_torch
from .attention.reference import bmojo_attention_reference
from .dispatch import KernelUnavailableError, available, kernel_mode, register, resolve, use_kernels
from .eidetic.custom_op import eidetic_select_torch, gather_rows_torch
from .eidetic.reference import eidetic_select_reference, gather_rows_reference
from .ssd.custom_op import ssd_scan_torch
from .ssd.recurrent import ssd_step
from .ssd.reference import ssd_scan_reference

# Naming: `<op>_reference` (readable, the ground truth), `<op>_torch` (what the `torch` mode runs: the bmojo::
# custom op where there is one), `<op>_sim` and `<op>_nki` (the kernels, in .nki, registered lazily).
register("ssd_scan", "reference")(ssd_scan_reference)
register("eidetic_select", "reference")(eidetic_select_reference)
register("gather_rows", "reference")(gather_rows_reference)
register("bmojo_attention", "reference")(bmojo_attention_reference)
# The torch paths of ssd_scan, eidetic_select and gather_rows are the bmojo:: custom ops (opaque, static
# shapes under torch.compile); the blocked attention is plain torch that compiles as is.
register("ssd_scan", "torch")(ssd_scan_torch)
register("eidetic_select", "torch")(eidetic_select_torch)
register("gather_rows", "torch")(gather_rows_torch)
register("bmojo_attention", "torch")(bmojo_attention_torch)
# The attention has no NKI kernel yet (docs/ops.md: on Trainium an NKI kernel or SDPA): in `sim` and `nki` modes its
# torch path runs, so that a whole model runs in every mode while the scan, the selection and the gather go
# through the kernels.
register("bmojo_attention", "sim")(bmojo_attention_torch)
register("bmojo_attention", "nki")(bmojo_attention_torch)
# The incremental form (queries after a state) is small per step and has one implementation in every mode.
for _mode in ("reference", "torch", "sim", "nki"):
    register("cached_attention", _mode)(cached_attention_torch)


def ssd_scan(x, dt, A, B, C, D=None, initial_state=None, chunk_size: int = 64):
    """Selective scan; see :func:`.ssd.reference.ssd_scan_reference` for shapes. Returns ``(y, final_state)``."""
    return resolve("ssd_scan", x)(x, dt, A, B, C, D, initial_state, chunk_size)


def eidetic_select(scores: torch.Tensor, chunk_size: int, topk: int, slots: int, policy: str, lag: int):
    """Memory visible to each query chunk; see :func:`.eidetic.reference.eidetic_select_reference`."""
    return resolve("eidetic_select", scores)(scores, chunk_size, topk, slots, policy, lag)


def gather_rows(src: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``out[b, i] = src[b, idx[b, i]]``; see :func:`.eidetic.reference.gather_rows_reference`."""
    return resolve("gather_rows", src)(src, idx)


def bmojo_attention(
    q,
    k,
    v,
    window=None,
    fade_k=None,
    fade_v=None,
    mem_k=None,
    mem_v=None,
    mem_bias=None,
    key_padding_mask=None,
    chunk_size: int = 64,
    scale=None,
):
    """Attention over [eidetic slots | fading window | raw window]; see the reference for shapes."""
    return resolve("bmojo_attention", q)(
        q, k, v, window, fade_k, fade_v, mem_k, mem_v, mem_bias, key_padding_mask, chunk_size, scale
    )


def cached_attention(q: torch.Tensor, blocks: list[KeyBlock], positions: torch.Tensor) -> torch.Tensor:
    """New queries (B, T, heads, D) at ``positions`` (B, T) against blocks of keys; see
    :func:`.attention.incremental.cached_attention_torch`."""
    return resolve("cached_attention", q)(q, blocks, positions)


__all__ = [
    "KernelUnavailableError",
    "KeyBlock",
    "cached_attention",
    "available",
    "bmojo_attention",
    "eidetic_select",
    "gather_rows",
    "kernel_mode",
    "register",
    "resolve",
    "ssd_scan",
    "ssd_step",
    "use_kernels",
]
