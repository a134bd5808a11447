"""Tile sizes derived from the hardware limits (NKI_REFERENCE.md §3), and small helpers shared by kernels.

Helpers are plain (undecorated) functions: NKI inlines them into the calling kernel.
"""

from __future__ import annotations

from nki_kernels._nki import nisa, nl

PMAX = 128  # SBUF/PSUM partitions (nl.tile_size.pmax)
GEMM_K_MAX = 128  # nc_matmul contraction, on partitions
GEMM_STATIONARY_FMAX = 128  # nc_matmul stationary free size
GEMM_MOVING_FMAX = 512  # nc_matmul moving free size = one 2 KiB PSUM bank of fp32

# The SSD scan puts a chunk's time steps on partitions and contracts over them, over the state and (in the
# backward) over the head dim, so all three are bounded by the partition / matmul-K limit.
MAX_CHUNK = min(PMAX, GEMM_K_MAX, GEMM_STATIONARY_FMAX)
MAX_STATE = min(PMAX, GEMM_K_MAX, GEMM_STATIONARY_FMAX)
MAX_HEAD_DIM = min(PMAX, GEMM_K_MAX, GEMM_STATIONARY_FMAX)
# Per-chunk scalars (decays, cumulative sums) are computed for a group of chunks at once, one column per
# chunk; a group is as wide as a matmul's moving operand (one fp32 PSUM bank).
CHUNK_GROUP = GEMM_MOVING_FMAX


def constant_tiles(n: int, width: int, dtype):
    """SBUF constants for an ``n``-row chunk: ``tri[s, t] = 1 if s <= t`` (cumulative sums), ``ones [n, width]``,
    ``ident [n, n]`` in ``dtype``. Built on GpSimd with affine_select (value = t - s)."""
    ones = nl.ones((n, max(n, width)), nl.float32, name="ones")
    tri = nl.ndarray((n, n), nl.float32, name="tri")
    nisa.affine_select(
        dst=tri,
        pattern=[[1, n]],
        channel_multiplier=-1,
        on_true_tile=ones[:, :n],
        on_false_value=0.0,
        cmp_op=nl.greater_equal,
    )
    ident32 = nl.ndarray((n, n), nl.float32, name="ident32")
    nisa.affine_select(
        dst=ident32,
        pattern=[[1, n]],
        channel_multiplier=-1,
        on_true_tile=ones[:, :n],
        on_false_value=0.0,
        cmp_op=nl.equal,
    )
    ident = ident32
    if dtype != nl.float32:
        ident = nl.ndarray((n, n), dtype, name="ident")
        nisa.tensor_copy(dst=ident, src=ident32)
    return tri, ones, ident


def broadcast_scalar(vec, index: int, rows: int, name: str):
    """``[rows, 1]`` fp32 tile holding ``vec[index]`` (an HBM vector) on every partition: one DMA whose
    partition stride is 0."""
    tile = nl.ndarray((rows, 1), nl.float32, name=name)
    nisa.dma_copy(dst=tile, src=vec.ap([[0, rows], [1, 1]], offset=index))
    return tile
