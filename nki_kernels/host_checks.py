"""Host-side argument checks for the kernel wrappers: clear ValueErrors naming the field, before a kernel runs.

Kernels themselves cannot raise (the parsing NKI front end of SDK 2.27-2.32 rejects ``raise``); they keep
``assert``s for the same bounds, which these checks make unreachable from the wrappers.
"""

from __future__ import annotations

from nki_kernels.kernels._tiles import MAX8_MAX, MAX8_MIN, MAX_CHUNK, MAX_HEAD_DIM, MAX_STATE

POLICIES = ("topk", "fifo")
FP32_EXACT_INT = 2**24  # the gather adds b * seq to int32 indices on VectorE, whose arithmetic is fp32


def check_scan_args(x, B, chunk_size) -> None:
    """``x`` (batch, seq, heads, head_dim), ``B`` (..., state), ``chunk_size``: within the scan kernels' tiles."""
    if x.dim() != 4 or B.dim() != 4:
        raise ValueError(
            f"ssd scan: x and B must be 4-D (batch, seq, heads, dim), got {tuple(x.shape)}, {tuple(B.shape)}"
        )
    if not isinstance(chunk_size, int) or not 1 <= chunk_size <= MAX_CHUNK:
        raise ValueError(
            f"ssd scan: chunk_size must be an int in 1..{MAX_CHUNK} (a chunk lies on partitions), got {chunk_size!r}"
        )
    if x.shape[3] > MAX_HEAD_DIM:
        raise ValueError(f"ssd scan: head_dim {x.shape[3]} exceeds {MAX_HEAD_DIM}")
    if B.shape[3] > MAX_STATE:
        raise ValueError(f"ssd scan: state size {B.shape[3]} exceeds {MAX_STATE}")


def check_select_args(chunk_size, topk, slots, policy, lag) -> None:
    if policy not in POLICIES:
        raise ValueError(f"eidetic_select: policy must be one of {POLICIES}, got {policy!r}")
    if not 1 <= topk <= chunk_size:
        raise ValueError(f"eidetic_select: topk must be in 1..chunk_size ({chunk_size}), got {topk}")
    if slots < 1:
        raise ValueError(f"eidetic_select: slots must be >= 1, got {slots}")
    if lag < 1:
        raise ValueError(f"eidetic_select: lag must be >= 1, got {lag}")
    if max(chunk_size, MAX8_MIN) > MAX8_MAX:
        raise ValueError(f"eidetic_select: chunk_size {chunk_size} exceeds max8's {MAX8_MAX} elements per partition")
    if max(slots + topk, MAX8_MIN) > MAX8_MAX:
        raise ValueError(f"eidetic_select: slots + topk = {slots + topk} exceeds max8's {MAX8_MAX} elements")


def check_gather_args(src, idx) -> None:
    if src.dim() != 3 or idx.dim() != 2 or idx.shape[0] != src.shape[0]:
        raise ValueError(
            f"gather_rows: need src (batch, seq, F) and idx (batch, n), got {tuple(src.shape)}, {tuple(idx.shape)}"
        )
    if src.shape[0] * src.shape[1] >= FP32_EXACT_INT:
        raise ValueError(
            f"gather_rows: batch * seq = {src.shape[0] * src.shape[1]} must stay below 2^24 (fp32-exact row ids)"
        )
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= src.shape[1]):
        raise ValueError(f"gather_rows: idx must be in [0, seq={src.shape[1]})")
