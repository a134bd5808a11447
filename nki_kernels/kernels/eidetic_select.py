"""Eidetic memory selection as an NKI kernel: per-chunk top-k candidates and the top-M retention merge.

Batch rows sit on partitions (up to 128 per tile); a chunk's scores lie along the free axis. Top-k uses
the VectorE idiom: ``max8`` (8 largest, descending), ``nc_find_index8`` (their positions) and
``nc_match_replace8`` (knock them out), repeated ceil(k / 8) times. The memory lives in the first
``slots`` columns of a "pool" tile whose next ``topk`` columns receive the chunk's candidates, so the
retention merge is the same top-k idiom over the pool, and ``nc_n_gather`` (GpSimd) carries the token
positions along.

Ranking keys: policy ``"topk"`` ranks by score; ``"fifo"`` ranks by ``chunk * topk + (topk - 1 - rank)``
(newest chunk first, higher score first inside a chunk; exact integers in fp32). ``-inf`` scores
(padding) become ``INVALID`` on load and are never valid; entries already taken are set to ``REMOVED``,
below ``INVALID``, so they are picked last. Scores at or below ``INVALID`` (-1e38) count as padding.
Equal keys resolve to the earlier pool column: memory before candidates, earlier tokens first.
"""

from __future__ import annotations

import math

from nki_kernels._nki import nisa, nki, nl

from ._tiles import MAX8_MAX, MAX8_MIN, PMAX, check_tile_limits, work_range

INVALID = -1.0e38  # key of padding / empty memory slots; hardware top-k avoids -inf (docs/nki.md)
REMOVED = -3.0e38  # written over entries a top-k round has taken
MAX8_WIDTH = MAX8_MIN  # max8 returns 8 values and needs at least 8 elements per partition


def _round8(n: int) -> int:
    return MAX8_WIDTH * math.ceil(n / MAX8_WIDTH)


def _top_rounds(work, vals, idx, n_rounds: int) -> None:
    """``n_rounds`` x 8 largest of ``work`` (in place: taken entries become REMOVED) into ``vals`` / ``idx``."""
    for r in range(n_rounds):
        v = vals[:, r * MAX8_WIDTH : (r + 1) * MAX8_WIDTH]
        nisa.max8(dst=v, src=work)
        nisa.nc_find_index8(dst=idx[:, r * MAX8_WIDTH : (r + 1) * MAX8_WIDTH], data=work, vals=v)
        nisa.nc_match_replace8(dst=work, data=work, vals=v, imm=REMOVED)


@nki.jit
def eidetic_select_kernel(scores, chunk_size, topk, slots, policy, lag):
    """Memory visible to each query chunk.

    Args:
        scores: (batch, seq) fp32/bf16 in HBM; chunk_size, topk (<= chunk_size), slots, lag >= 1: ints;
        policy: "topk" or "fifo" (compile-time).

    Returns:
        idx (batch, n_chunks, slots) int32 token positions (0 where invalid) and
        valid (batch, n_chunks, slots) uint8, both nl.shared_hbm.
    """
    check_tile_limits(1)
    assert policy == "topk" or policy == "fifo", "eidetic_select kernel: policy must be 'topk' or 'fifo'"
    assert 1 <= topk, "eidetic_select kernel: topk must be >= 1"
    assert topk <= chunk_size, "eidetic_select kernel: topk must be <= chunk_size"
    assert slots >= 1, "eidetic_select kernel: slots must be >= 1"
    assert lag >= 1, "eidetic_select kernel: lag must be >= 1"
    batch, seq = scores.shape
    n_chunks = math.ceil(seq / chunk_size)
    width = max(chunk_size, MAX8_WIDTH)
    pool_w = max(slots + topk, MAX8_WIDTH)
    # max8 / nc_find_index8 / nc_match_replace8 read 8..16384 elements per partition
    assert width <= MAX8_MAX, "eidetic_select kernel: chunk_size above max8's 16384 elements"
    assert pool_w <= MAX8_MAX, "eidetic_select kernel: slots + topk above max8's 16384 elements"
    k8, m8 = _round8(topk), _round8(slots)
    idx_out = nl.ndarray((batch, n_chunks, slots), nl.int32, buffer=nl.shared_hbm, name="idx")
    valid_out = nl.ndarray((batch, n_chunks, slots), nl.uint8, buffer=nl.shared_hbm, name="valid")

    # LNC: batch rows are independent; each program (physical core) takes a contiguous block of rows,
    # up to 128 per tile (rows on partitions).
    r_lo, r_hi = work_range(batch)
    for b0 in range(r_lo, r_hi, PMAX):
        bt = min(PMAX, r_hi - b0)
        work = nl.ndarray((bt, width), nl.float32, name="chunk_scores")
        cand_val = nl.ndarray((bt, k8), nl.float32, name="cand_val")
        cand_idx = nl.ndarray((bt, k8), nl.uint32, name="cand_idx")
        pool_key = nl.full((bt, pool_w), INVALID, nl.float32, name="pool_key")  # [memory | candidates | pad]
        pool_pos = nl.zeros((bt, pool_w), nl.float32, name="pool_pos")
        sel_val = nl.ndarray((bt, m8), nl.float32, name="sel_val")
        sel_idx = nl.ndarray((bt, m8), nl.uint32, name="sel_idx")
        new_pos = nl.ndarray((bt, slots), nl.float32, name="new_pos")
        valid_t = nl.ndarray((bt, slots), nl.uint8, name="valid_t")
        idx_t = nl.ndarray((bt, slots), nl.int32, name="idx_t")
        if policy == "fifo":
            rank_key = nl.ndarray((bt, topk), nl.float32, name="rank_key")  # topk - 1 - j
            nisa.iota(dst=rank_key, pattern=[[-1, topk]], offset=topk - 1)
            cand_ok = nl.ndarray((bt, topk), nl.float32, name="cand_ok")

        for q in range(min(lag, n_chunks)):  # these query chunks see the empty memory_0
            _store_empty(idx_out, valid_out, idx_t, valid_t, b0, bt, q)

        for c in range(n_chunks):
            if c + lag >= n_chunks:
                break  # later memories are never visible
            t0 = c * chunk_size
            n = min(chunk_size, seq - t0)
            _load_chunk(work, scores, b0, bt, t0, n, width)
            _top_rounds(work, cand_val, cand_idx, k8 // MAX8_WIDTH)
            cand_key = pool_key[:, slots : slots + topk]
            if policy == "topk":
                nisa.tensor_copy(dst=cand_key, src=cand_val[:, :topk])
            else:
                _fifo_keys(cand_key, cand_val[:, :topk], rank_key, cand_ok, float(c * topk))
            nisa.tensor_scalar(
                dst=pool_pos[:, slots : slots + topk], data=cand_idx[:, :topk], op0=nl.add, operand0=float(t0)
            )
            _retain(pool_key, pool_pos, sel_val, sel_idx, new_pos, slots, topk, m8, pool_w)
            _visible(idx_t, valid_t, sel_val[:, :slots], new_pos)
            _store_visible(idx_out, valid_out, idx_t, valid_t, b0, bt, c + lag)  # to query chunk c + lag
    return idx_out, valid_out


def _fifo_keys(cand_key, cand_val, rank_key, cand_ok, base: float) -> None:
    """``fifo`` ranking keys of a chunk's candidates: ``base + (topk - 1 - j)`` (``base = c * topk``) for valid
    candidates, INVALID otherwise. ``cand_ok`` is scratch of the candidates' shape."""
    nisa.tensor_scalar(dst=cand_ok, data=cand_val, op0=nl.greater, operand0=INVALID)
    nisa.tensor_scalar(dst=cand_key, data=rank_key, op0=nl.add, operand0=base)
    nisa.tensor_tensor(dst=cand_key, data1=cand_key, data2=cand_ok, op=nl.multiply)
    nisa.tensor_scalar(
        dst=cand_ok, data=cand_ok, op0=nl.subtract, operand0=1.0, op1=nl.multiply, operand1=-INVALID
    )  # 0 if valid, INVALID if not
    nisa.tensor_tensor(dst=cand_key, data1=cand_key, data2=cand_ok, op=nl.add)


def _load_chunk(work, scores, b0: int, bt: int, t0: int, n: int, width: int) -> None:
    """Scores of tokens ``[t0, t0 + n)`` of rows ``[b0, b0 + bt)`` into ``work`` (bt, width); padding and
    ``-inf`` become INVALID."""
    if n < width:
        nisa.memset(dst=work, value=INVALID)
    nisa.dma_copy(dst=work[:, :n], src=scores[b0 : b0 + bt, t0 : t0 + n])
    nisa.tensor_scalar(dst=work[:, :n], data=work[:, :n], op0=nl.maximum, operand0=INVALID)  # -inf -> INVALID


def _retain(pool_key, pool_pos, sel_val, sel_idx, new_pos, slots: int, topk: int, m8: int, pool_w: int) -> None:
    """Retention: memory_{c+1} = the top ``slots`` keys of the pool [memory | candidates | pad], written back to
    the pool's first ``slots`` columns (keys in ``sel_val``, positions in ``new_pos`` too)."""
    _top_rounds(pool_key, sel_val, sel_idx, m8 // MAX8_WIDTH)
    nisa.nc_n_gather(dst=new_pos, data=pool_pos, indices=sel_idx[:, :slots])
    nisa.tensor_copy(dst=pool_key[:, :slots], src=sel_val[:, :slots])
    nisa.tensor_copy(dst=pool_pos[:, :slots], src=new_pos)
    if pool_w > slots + topk:  # padding columns were knocked out by the rounds: restore them
        nisa.memset(dst=pool_key[:, slots + topk :], value=INVALID)


def _visible(idx_t, valid_t, sel_keys, new_pos) -> None:
    """Valid flags (key above INVALID) and token positions (0 where invalid) of the memory's slots."""
    nisa.tensor_scalar(dst=valid_t, data=sel_keys, op0=nl.greater, operand0=INVALID)
    nisa.tensor_tensor(dst=idx_t, data1=new_pos, data2=valid_t, op=nl.multiply)


def _store_empty(idx_out, valid_out, idx_t, valid_t, b0: int, bt: int, q: int) -> None:
    """The empty memory, visible to query chunk ``q`` of rows ``[b0, b0 + bt)``, to HBM."""
    nisa.memset(dst=idx_t, value=0)
    nisa.memset(dst=valid_t, value=0)
    _store_visible(idx_out, valid_out, idx_t, valid_t, b0, bt, q)


def _store_visible(idx_out, valid_out, idx_t, valid_t, b0: int, bt: int, q: int) -> None:
    """The memory visible to query chunk ``q`` of rows ``[b0, b0 + bt)``, to HBM."""
    nisa.dma_copy(dst=idx_out[b0 : b0 + bt, q, :], src=idx_t)
    nisa.dma_copy(dst=valid_out[b0 : b0 + bt, q, :], src=valid_t)
