"""``nki.language`` for the interpreter: dtypes, buffers, allocation, load/store, loops, operator tokens."""

from __future__ import annotations

import math

import numpy as np

from . import _exec as X
from . import cost
from .context import current
from .dtypes import (  # noqa: F401  (re-exported as nl.<dtype>)
    bfloat16,
    bool_,
    float16,
    float32,
    int8,
    int16,
    int32,
    uint8,
    uint16,
    uint32,
)
from .errors import NkiBufferError, NkiUnsupportedError, NkiUsageError
from .memory import ALL_BUFFERS, Storage, hbm, private_hbm, psum, sbuf, shared_hbm  # noqa: F401
from .ops import (  # noqa: F401  (re-exported as nl.<op>)
    abs,
    add,
    copy,
    divide,
    equal,
    exp,
    greater,
    greater_equal,
    less,
    less_equal,
    log,
    logical_and,
    logical_or,
    logical_xor,
    maximum,
    minimum,
    multiply,
    not_equal,
    power,
    reciprocal,
    relu,
    rsqrt,
    sigmoid,
    sign,
    silu,
    softplus,
    sqrt,
    square,
    subtract,
    tanh,
)
from .tensor import NkiTensor, ds  # noqa: F401


class tile_size:
    """Tile limits of trn2/trn3 (names as ``nki.language.tile_size`` in the 2.32 API table). ``psum_num_banks`` is
    the usable count, 7 when bank 7 is kept for PE transposes; the interpreter always takes that stricter case."""

    pmax = 128
    psum_fmax = 512  # deprecated alias of psum_bank_fmax since NKI 0.4.0
    psum_bank_fmax = 512
    psum_bank_fmax_bytes = 2048
    psum_num_banks = 7
    gemm_stationary_fmax = 128
    gemm_moving_fmax = 512
    bn_stats_fmax = 512


from .loops import fori_loop  # noqa: E402,F401  (nl.fori_loop)


def affine_range(*args):
    """Deprecated alias of ``range`` (the new API unrolls every loop)."""
    return range(*args)


sequential_range = affine_range
static_range = affine_range


def program_id(axis: int = 0) -> int:
    if axis != 0:
        raise NkiUsageError("nl.program_id: only axis 0 exists (LNC launches are 1-D)")
    return current().program_id


def num_programs(axes=None) -> int:
    return current().num_programs


def device_print(prefix, x):
    """Print a tensor's current value immediately (the interpreter executes eagerly)."""
    if isinstance(x, NkiTensor):
        print(prefix, np.array(x.np_view()))
    else:
        print(prefix, x)


def ndarray(shape, dtype, buffer=sbuf, name: str = "", address=None) -> NkiTensor:
    """Allocate WITHOUT initialising: floats read as NaN, integers as 4, and reading before writing raises."""
    if address is not None:
        raise NkiUnsupportedError("nl.ndarray(address=...): manual placement is not modelled by the interpreter")
    if not any(buffer is b for b in ALL_BUFFERS):
        raise NkiUsageError(f"nl.ndarray: buffer must be nl.sbuf/psum/hbm/shared_hbm/private_hbm, got {buffer!r}")
    shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    if buffer.on_chip and len(shape) < 2:
        raise NkiUsageError(f"nl.ndarray: on-chip tensors are at least 2-D [partition, free...], got {shape}")
    ctx = current()
    label = name or f"t{ctx.allocator._next_id}"
    if buffer is shared_hbm and ctx.num_programs > 1:
        return _shared(ctx, shape, dtype, label)
    st = Storage(buffer, shape, dtype, label, ctx.allocator)
    return NkiTensor(st, shape, [math.prod(shape[i + 1 :]) for i in range(len(shape))], 0)


def _shared(ctx, shape, dtype, name) -> NkiTensor:
    k = ctx.shared_cursor
    ctx.shared_cursor += 1
    if ctx.program_id == 0:
        ctx.shared_storages.append(Storage(shared_hbm, shape, dtype, name, ctx.allocator))
    st = ctx.shared_storages[k]
    if st.shape != shape or st.dtype != np.dtype(dtype):
        raise NkiUsageError(f"nl.ndarray: shared_hbm allocation #{k} differs between program instances")
    return NkiTensor(st, shape, [math.prod(shape[i + 1 :]) for i in range(len(shape))], 0)


def full(shape, fill_value, dtype, buffer=sbuf, name: str = "") -> NkiTensor:
    t = ndarray(shape, dtype, buffer=buffer, name=name)
    X.write(t, np.full(t.shape, fill_value))
    if buffer.on_chip:  # on chip this is a memset instruction
        X.record("memset", "vector", t, cost.elementwise_cycles(t.free_size))
    return t


def zeros(shape, dtype, buffer=sbuf, name: str = "") -> NkiTensor:
    return full(shape, 0, dtype, buffer=buffer, name=name)


def ones(shape, dtype, buffer=sbuf, name: str = "") -> NkiTensor:
    return full(shape, 1, dtype, buffer=buffer, name=name)


def load(src, dtype=None) -> NkiTensor:
    """DMA an HBM tensor into a new SBUF tile of the same shape (1-D becomes ``[n, 1]``)."""
    from .isa import dma_copy

    src = X.tensor("nl.load", "src", src)
    if src.buffer.on_chip:
        raise NkiBufferError(f"nl.load: operand 'src' ({src.describe()}) must be in HBM")
    shape = src.shape if src.ndim >= 2 else (src.shape[0] if src.shape else 1, 1)
    tile = ndarray(shape, dtype or src.dtype, buffer=sbuf, name=f"load_{src.name}")
    dma_copy(dst=tile, src=src if src.ndim >= 2 else src.reshape(shape))
    return tile


def store(dst, value) -> None:
    """DMA an SBUF tile to HBM (PSUM tiles must be copied to SBUF first)."""
    from .isa import dma_copy

    value = X.tensor("nl.store", "value", value)
    if value.buffer is psum:
        raise NkiBufferError(f"nl.store: operand 'value' ({value.describe()}) is in PSUM; copy it to SBUF first")
    dma_copy(dst=dst, src=value)
