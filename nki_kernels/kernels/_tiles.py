"""Tile sizes read from ``nl.tile_size`` (the API's hardware limits), and small helpers shared by kernels.

Helpers are plain (undecorated) functions: NKI inlines them into the calling kernel. Everything in this
package's kernels stays inside the parsing front end's Python subset (checked by ``python -m nki_kernels.lint``).
"""

from __future__ import annotations

from nki_kernels._nki import nisa, nl

# Literals, so host-side code (wrappers, shape checks) can use them without an NKI backend: reading
# ``nl.tile_size`` outside a kernel trace is not safe on the SDK. Every kernel calls
# :func:`check_tile_limits` first, which checks them against ``nl.tile_size`` of the target it is traced for.
PMAX = 128  # SBUF/PSUM partitions = nc_matmul contraction (K) limit   (nl.tile_size.pmax)
GEMM_K_MAX = 128
GEMM_STATIONARY_FMAX = 128  # nc_matmul stationary free size        (nl.tile_size.gemm_stationary_fmax)
GEMM_MOVING_FMAX = 512  # nc_matmul moving free size                (nl.tile_size.gemm_moving_fmax)
PSUM_FMAX = 512  # fp32 elements per partition in one PSUM bank     (nl.tile_size.psum_bank_fmax, 2.32)
MAX8_MIN, MAX8_MAX = 8, 16384  # elements per partition that max8 / nc_find_index8 accept (nki.isa.max8)

# The SSD scan puts a chunk's time steps on partitions and contracts over them, over the state and (in the
# backward) over the head dim, so all three are bounded by the partition / matmul-K limit.
MAX_CHUNK = min(PMAX, GEMM_K_MAX, GEMM_STATIONARY_FMAX)
MAX_STATE = min(PMAX, GEMM_K_MAX, GEMM_STATIONARY_FMAX)
MAX_HEAD_DIM = min(PMAX, GEMM_K_MAX, GEMM_STATIONARY_FMAX)
# Per-chunk scalars (decays, cumulative sums) are computed for a group of chunks at once, one column per
# chunk; a group is as wide as a matmul's moving operand (one fp32 PSUM bank).
CHUNK_GROUP = min(GEMM_MOVING_FMAX, PSUM_FMAX)


def check_tile_limits(psum_banks_used: int):
    """Trace-time check that the literals above and the kernel's PSUM budget fit the target's ``nl.tile_size``
    (``psum_num_banks`` is 7, not 8, when bank 7 is reserved for PE transposes)."""
    assert PMAX <= nl.tile_size.pmax, "kernel tiles assume 128 partitions"
    assert GEMM_STATIONARY_FMAX <= nl.tile_size.gemm_stationary_fmax, "stationary free size above the target's"
    assert GEMM_MOVING_FMAX <= nl.tile_size.gemm_moving_fmax, "moving free size above the target's"
    assert PSUM_FMAX <= nl.tile_size.psum_bank_fmax, "PSUM bank width above the target's"
    assert psum_banks_used <= nl.tile_size.psum_num_banks, "kernel needs more PSUM banks than the target has"


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


PSUM_SLOT = PMAX  # columns of a PSUM slot: 4 slots of 128 fp32 fill one 2 KiB bank
SLOTS_PER_BANK = PSUM_FMAX // PSUM_SLOT


def psum_pool(n_banks: int, name: str):
    """``n_banks`` contiguous fp32 PSUM banks as one ``[128, n_banks, 512]`` tensor, cut into ``[rows, <= 128]``
    slots by :func:`psum_slot`: the small matmul results of a chunk share banks instead of taking one each."""
    return nl.ndarray((PMAX, n_banks, PSUM_FMAX), nl.float32, buffer=nl.psum, name=name)


def psum_slot(pool, k: int, rows: int, cols: int):
    """Slot ``k`` of a :func:`psum_pool` as a ``[rows, cols]`` view (``cols <= 128``; never crosses a bank)."""
    bank = k // SLOTS_PER_BANK
    c0 = (k % SLOTS_PER_BANK) * PSUM_SLOT
    return pool[:rows, bank, c0 : c0 + cols]


def work_range(n_work: int):
    """This program's share ``[lo, hi)`` of ``n_work`` independent work items under an LNC launch
    (``kernel[lnc]``): contiguous blocks, one per ``nl.program_id(0)`` of ``nl.num_programs()``."""
    n_prog = nl.num_programs()
    per = (n_work + n_prog - 1) // n_prog
    lo = min(n_work, nl.program_id(0) * per)
    hi = min(n_work, lo + per)
    return lo, hi
