"""``nki.isa`` for the interpreter: the instructions our kernels use, plus a few obvious neighbours.

Signatures follow the current NKI API (``dst`` first, keyword names as in the SDK's API stubs, docs/nki.md); an unknown
keyword raises ``TypeError``. Each instruction validates buffers, shapes, limits and dtypes, computes in
fp32, rounds once to ``dst.dtype`` and records its cost (see :mod:`.cost`).
"""

from __future__ import annotations

import enum
import math

import numpy as np

from . import _exec as X
from . import cost, dtypes, ops
from .context import current
from .errors import (
    NkiBufferError,
    NkiDtypeError,
    NkiLimitError,
    NkiUninitializedReadError,
    NkiUnsupportedError,
    NkiUsageError,
)
from .memory import HBM_BUFFERS, psum, sbuf, shared_hbm
from .tensor import IndirectAccess, NkiTensor


class engine(enum.Enum):
    unknown = "unknown"
    tensor = "tensor"
    vector = "vector"
    scalar = "scalar"
    gpsimd = "gpsimd"
    dma = "dma"
    sync = "sync"


class reduce_cmd(enum.Enum):
    idle = "idle"
    reset = "reset"
    reduce = "reduce"
    reset_reduce = "reset_reduce"


class dge_mode(enum.Enum):
    unknown = "unknown"
    none = "none"
    swdge = "swdge"
    hwdge = "hwdge"


class oob_mode(enum.Enum):
    error = "error"
    skip = "skip"


class nc_version(enum.Enum):
    gen2 = "gen2"
    gen3 = "gen3"
    gen4 = "gen4"


class matmul_perf_mode(enum.Enum):
    none = "none"
    double_row = "double_row"


# Aliases: instruction keyword arguments shadow the enum names inside the functions below.
_DGE, _OOB, _RCMD = dge_mode, oob_mode, reduce_cmd


def get_nc_version() -> nc_version:
    return nc_version(current().target.nc_version)


def _pick_engine(instr: str, value, default: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, engine):
        raise NkiUsageError(f"{instr}: engine must be an nisa.engine member, got {value!r}")
    if value is engine.unknown:
        return default
    if value.value not in allowed:
        raise NkiUsageError(f"{instr}: engine {value.value} cannot run {instr} (allowed: {', '.join(allowed)})")
    return value.value


def _op(instr: str, operand: str, op, kind: str):
    if not isinstance(op, ops.Op) or getattr(op, kind) is None:
        raise NkiUsageError(f"{instr}: '{operand}' must be an nl {kind} operator, got {op!r}")
    return op


def _gpsimd_no_psum(instr: str, eng: str, **operands) -> None:
    if eng == "gpsimd":
        for name, t in operands.items():
            if isinstance(t, NkiTensor) and t.buffer is psum:
                raise NkiBufferError(f"{instr}: operand '{name}' is in PSUM, which GpSimd cannot access")


# --------------------------------------------------------------------------------------------------
# Tensor engine
# --------------------------------------------------------------------------------------------------
def nc_matmul(
    dst,
    stationary,
    moving,
    is_stationary_onezero=False,
    is_moving_onezero=False,
    is_transpose=False,
    accumulate=None,
    tile_position=(),
    tile_size=(),
    perf_mode=matmul_perf_mode.none,
    name=None,
):
    """``dst[M, N] (PSUM, fp32) (+)= stationary[K, M].T @ moving[K, N]`` with fp32 accumulation.

    ``accumulate``: False overwrites, True adds (every element must already hold a matmul result: adding
    to memory written by anything else is undefined on trn1/trn2), None = first write overwrites, later adds.
    """
    instr, ctx = "nc_matmul", current()
    t = ctx.target
    if is_transpose or tile_position or tile_size or perf_mode is not matmul_perf_mode.none:
        raise NkiUnsupportedError("nc_matmul: is_transpose / tile_position / tile_size / perf_mode are not implemented")
    st = X.on_chip(instr, "stationary", stationary, X.SBUF_ONLY)
    mv = X.on_chip(instr, "moving", moving, X.SBUF_ONLY)
    dst = X.on_chip(instr, "dst", dst, (psum,))
    k, m, n = _check_matmul_operands(instr, t, st, mv, dst)
    s = X.read(instr, "stationary", st)
    mvv = X.read(instr, "moving", mv)
    prod = _accumulated(instr, dst, (s.T @ mvv).astype(np.float32), accumulate, m, n)
    X.write(dst, prod, by_matmul=True)
    fp32 = st.dtype == dtypes.float32
    X.record(instr, "tensor", dst, cost.matmul_cycles(m, n, fp32), flops=2 * k * m * n)


def _check_matmul_operands(instr: str, t, st: NkiTensor, mv: NkiTensor, dst: NkiTensor) -> tuple[int, int, int]:
    """Shapes, engine limits and dtypes of a matmul; returns its ``(K, M, N)``."""
    k, m, n = st.partitions, st.free_size, mv.free_size
    if mv.partitions != k:
        raise NkiLimitError(
            f"{instr}: operand 'moving' contraction (partition) size is {mv.partitions}, "
            f"'stationary' has {k}; they must be equal"
        )
    if k > t.gemm_k_max:
        raise NkiLimitError(f"{instr}: operand 'stationary' contraction size K is {k}, limit is {t.gemm_k_max}")
    if m > t.gemm_stationary_fmax:
        raise NkiLimitError(f"{instr}: operand 'stationary' free size M is {m}, limit is {t.gemm_stationary_fmax}")
    if n > t.gemm_moving_fmax:
        raise NkiLimitError(f"{instr}: operand 'moving' free size N is {n}, limit is {t.gemm_moving_fmax}")
    if dst.partitions != m or dst.free_size != n:
        raise NkiLimitError(f"{instr}: operand 'dst' is {dst.partitions} x {dst.free_size}, must be M x N = {m} x {n}")
    for nm, x in (("stationary", st), ("moving", mv)):
        if x.dtype not in dtypes.FLOAT_DTYPES:
            raise NkiDtypeError(f"{instr}: operand '{nm}' dtype {x.dtype} is not a matmul input dtype")
    if (st.dtype == dtypes.float32) != (mv.dtype == dtypes.float32):
        raise NkiDtypeError(f"{instr}: operands are {st.dtype} and {mv.dtype}; if one is fp32 both must be")
    if dst.dtype != dtypes.float32:
        raise NkiDtypeError(f"{instr}: operand 'dst' dtype is {dst.dtype}; on {t.name} matmul writes fp32 to PSUM")
    _check_one_bank(instr, dst)
    return k, m, n


def _accumulated(instr: str, dst: NkiTensor, prod: np.ndarray, accumulate, m: int, n: int) -> np.ndarray:
    """The value a matmul writes to ``dst``: ``prod``, or ``prod`` added to what earlier matmuls wrote there."""
    mm = dst._view(dst.storage.mm_written).reshape(m, n)
    if accumulate is True:
        if not mm.all():
            raise NkiUninitializedReadError(
                f"{instr}: accumulate=True into {dst.describe()} where {int((~mm).sum())} element(s) were not "
                "written by a matmul (undefined on hardware); use accumulate=False for the first matmul"
            )
        prod = X.read(instr, "dst", dst) + prod
    elif accumulate is None:
        prev = np.where(mm, dst.np_view().reshape(m, n).astype(np.float32), 0.0)
        prod = prev + prod
    elif accumulate is not False:
        raise NkiUsageError(f"{instr}: accumulate must be True, False or None, got {accumulate!r}")
    return prod


def _check_one_bank(instr: str, dst: NkiTensor) -> None:
    """A matmul result must stay inside one 2 KiB PSUM bank of every partition."""
    t = current().target
    row = dst.storage.part_stride
    lo, hi = dst._bounds()
    item = dst.dtype.itemsize
    lo_b = dst.storage.first_bank * t.psum_bank_bytes + (lo % row) * item
    hi_b = dst.storage.first_bank * t.psum_bank_bytes + (hi % row) * item + item - 1
    if lo_b // t.psum_bank_bytes != hi_b // t.psum_bank_bytes:
        raise NkiLimitError(
            f"{instr}: operand 'dst' ({dst.describe()}) spans bytes {lo_b}..{hi_b} per partition, crossing a "
            f"PSUM bank boundary; limit is one bank of {t.psum_bank_bytes} bytes"
        )


def nc_transpose(dst, data, engine=engine.unknown, name=None):
    """``dst[F, P] = data[P, F].T``: TensorE (data <= 128x128 in SBUF, dst in PSUM) or VectorE (<= 32x32)."""
    instr = "nc_transpose"
    d = X.on_chip(instr, "data", data)
    o = X.on_chip(instr, "dst", dst)
    eng = _pick_engine(
        instr, engine, "tensor" if o.buffer is psum and d.buffer is sbuf else "vector", ("tensor", "vector")
    )
    p, f = d.partitions, d.free_size
    limit = 128 if eng == "tensor" else 32
    if p > limit or f > limit:
        raise NkiLimitError(f"{instr}: operand 'data' is {p} x {f}, limit is {limit} x {limit} on the {eng} engine")
    if eng == "tensor":
        X.buffer_in(instr, "data", d, X.SBUF_ONLY)
        X.buffer_in(instr, "dst", o, (psum,))
    if o.dtype != d.dtype:
        raise NkiDtypeError(f"{instr}: operand 'dst' dtype {o.dtype} must equal data dtype {d.dtype}")
    if o.partitions != f or o.free_size != p:
        raise NkiLimitError(f"{instr}: operand 'dst' is {o.partitions} x {o.free_size}, must be {f} x {p}")
    X.write(o, X.read_raw(instr, "data", d).reshape(p, f).T)
    cycles = cost.pe_transpose_cycles(p, f) if eng == "tensor" else cost.elementwise_cycles(p)
    X.record(instr, eng, o, cycles)


# --------------------------------------------------------------------------------------------------
# Vector / Scalar / GpSimd
# --------------------------------------------------------------------------------------------------
def tensor_tensor(dst, data1, data2, op, engine=engine.unknown, name=None):
    """``dst = op(data1, data2)`` elementwise (fp32 math). At most one input in PSUM."""
    instr = "tensor_tensor"
    a = X.on_chip(instr, "data1", data1)
    b = X.on_chip(instr, "data2", data2)
    o = X.on_chip(instr, "dst", dst)
    op = _op(instr, "op", op, "binary")
    all_int = all(dtypes.is_int(x.dtype) for x in (a, b))
    eng = _pick_engine(instr, engine, "gpsimd" if (op is ops.power or all_int) else "vector", ("vector", "gpsimd"))
    _gpsimd_no_psum(instr, eng, data1=a, data2=b, dst=o)
    X.same_layout(instr, "data1", a, "data2", b)
    X.same_layout(instr, "data1", a, "dst", o)
    X.not_both_psum(instr, ("data1", "data2"), a, b)
    with np.errstate(all="ignore"):
        res = op.binary(X.read(instr, "data1", a), X.read(instr, "data2", b))
    X.write(o, res)
    fast = psum in (a.buffer, b.buffer) or (a.dtype == b.dtype == dtypes.bfloat16)
    X.record(instr, eng, o, cost.tensor_tensor_cycles(o.free_size, fast))


def _apply(op, x, operand, reverse):
    return op.binary(operand, x) if reverse else op.binary(x, operand)


def tensor_scalar(
    dst, data, op0, operand0, reverse0=False, op1=None, operand1=None, reverse1=False, engine=engine.unknown, name=None
):
    """``dst = (data op0 operand0) op1 operand1``; operands are fp32 immediates or ``[P, 1]`` tiles."""
    instr, ctx = "tensor_scalar", current()
    d = X.on_chip(instr, "data", data)
    o = X.on_chip(instr, "dst", dst)
    eng = _pick_engine(instr, engine, "vector", ("vector", "scalar", "gpsimd"))
    _gpsimd_no_psum(instr, eng, data=d, dst=o)
    X.same_layout(instr, "data", d, "dst", o)
    op0 = _op(instr, "op0", op0, "binary")
    if eng == "scalar" and ctx.target.nc_version != "gen2":
        pairs = {(ops.multiply, ops.add), (ops.multiply, None), (ops.add, None)}
        if (op0, op1) not in pairs:
            raise NkiUsageError(
                f"{instr}: ScalarE on {ctx.target.name} supports only (multiply, add), "
                f"(multiply, None), (add, None); got ({op0}, {op1})"
            )
    with np.errstate(all="ignore"):
        res = _apply(op0, X.read(instr, "data", d), X.scalar_operand(instr, "operand0", operand0, d), reverse0)
        if op1 is not None:
            op1 = _op(instr, "op1", op1, "binary")
            res = _apply(op1, res, X.scalar_operand(instr, "operand1", operand1, d), reverse1)
    X.write(o, res)
    X.record(instr, eng, o, cost.elementwise_cycles(o.free_size))


def scalar_tensor_tensor(dst, data, op0, operand0, op1, operand1, reverse0=False, reverse1=False, name=None):
    """``dst = (data op0 operand0) op1 operand1``; operand0 immediate or ``[P,1]``, operand1 a full tile."""
    instr = "scalar_tensor_tensor"
    d = X.on_chip(instr, "data", data)
    t1 = X.on_chip(instr, "operand1", operand1)
    o = X.on_chip(instr, "dst", dst)
    X.same_layout(instr, "data", d, "operand1", t1)
    X.same_layout(instr, "data", d, "dst", o)
    X.not_both_psum(instr, ("data", "operand1"), d, t1)
    op0 = _op(instr, "op0", op0, "binary")
    op1 = _op(instr, "op1", op1, "binary")
    with np.errstate(all="ignore"):
        res = _apply(op0, X.read(instr, "data", d), X.scalar_operand(instr, "operand0", operand0, d), reverse0)
        res = _apply(op1, res, X.read(instr, "operand1", t1), reverse1)
    X.write(o, res)
    fast = psum in (d.buffer, t1.buffer) or (d.dtype == t1.dtype == dtypes.bfloat16)
    X.record(instr, "vector", o, cost.tensor_tensor_cycles(o.free_size, fast))


def activation(
    dst, op, data, bias=None, scale=1.0, reduce_op=None, reduce_res=None, reduce_cmd=reduce_cmd.idle, name=None
):
    """ScalarE ``dst = op(data * scale + bias)`` in fp32; ``scale`` immediate or ``[P,1]``, ``bias`` ``[P,1]``."""
    instr, ctx = "activation", current()
    d = X.on_chip(instr, "data", data)
    o = X.on_chip(instr, "dst", dst)
    X.same_layout(instr, "data", d, "dst", o)
    op = _op(instr, "op", op, "unary")
    if reduce_op is not None or reduce_res is not None or reduce_cmd is not _RCMD.idle:
        raise NkiUnsupportedError(f"{instr}: the reduce_op/reduce_res/reduce_cmd accumulator is not implemented")
    x = X.read(instr, "data", d) * X.scalar_operand(instr, "scale", scale, d)
    if bias is not None:
        if isinstance(bias, (int, float)) and not ctx.target.scalar_bias_allowed:
            raise NkiUsageError(f"{instr}: a scalar 'bias' needs trn2 or later; on {ctx.target.name} pass a [P,1] tile")
        x = x + X.scalar_operand(instr, "bias", bias, d)
    with np.errstate(all="ignore"):
        X.write(o, op.unary(x.astype(np.float32)))
    X.record(instr, "scalar", o, cost.elementwise_cycles(o.free_size))


def tensor_copy(dst, src, engine=engine.unknown, name=None):
    """On-chip copy (e.g. PSUM -> SBUF eviction); differing dtypes cast through fp32."""
    instr, ctx = "tensor_copy", current()
    s = X.on_chip(instr, "src", src)
    o = X.on_chip(instr, "dst", dst)
    eng = _pick_engine(instr, engine, "vector", ("vector", "scalar", "gpsimd"))
    if eng == "scalar" and ctx.target.nc_version == "gen2":
        raise NkiUsageError(
            f"{instr}: ScalarE tensor_copy is not available on {ctx.target.name}; use activation(op=nl.copy)"
        )
    _gpsimd_no_psum(instr, eng, src=s, dst=o)
    X.same_layout(instr, "src", s, "dst", o)
    if s.dtype == o.dtype:
        X.write(o, X.read_raw(instr, "src", s))
    else:
        X.write(o, X.read(instr, "src", s))
    X.record(instr, eng, o, cost.elementwise_cycles(o.free_size))


def tensor_reduce(dst, op, data, axis, negate=False, keepdims=False, name=None):
    """Reduce the trailing free dims ``axis`` of ``data`` with ``op`` (fp32 math)."""
    instr = "tensor_reduce"
    d = X.on_chip(instr, "data", data)
    o = X.on_chip(instr, "dst", dst)
    op = _op(instr, "op", op, "reduce")
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    nd = d.ndim
    axes = tuple(sorted(a % nd for a in axes))
    if 0 in axes or axes != tuple(range(nd - len(axes), nd)):
        raise NkiLimitError(f"{instr}: axis {axis} must be the last free dims of a {nd}-D tile (never dim 0)")
    kept = math.prod(d.shape[1 : nd - len(axes)])
    if o.partitions != d.partitions or o.free_size != kept:
        raise NkiLimitError(
            f"{instr}: operand 'dst' is {o.partitions} x {o.free_size}, must be {d.partitions} x {kept}"
        )
    x = X.read(instr, "data", d).reshape(d.partitions, kept, -1)
    res = op.reduce.reduce(x, axis=2).astype(np.float32)
    X.write(o, -res if negate else res)
    X.record(instr, "vector", o, cost.elementwise_cycles(d.free_size))


def tensor_tensor_scan(dst, data0, data1, initial, op0, op1, reverse0=False, reverse1=False, name=None):
    """Per partition along the flattened free axis: ``r_i = op1(op0(data0_i, r_{i-1}), data1_i)``, ``r_{-1} = initial``.

    The carry is kept in fp32; each output element is rounded to ``dst.dtype``.
    """
    instr = "tensor_tensor_scan"
    a = X.on_chip(instr, "data0", data0)
    b = X.on_chip(instr, "data1", data1)
    o = X.on_chip(instr, "dst", dst)
    X.same_layout(instr, "data0", a, "data1", b)
    X.same_layout(instr, "data0", a, "dst", o)
    X.not_both_psum(instr, ("data0", "data1"), a, b)
    op0 = _op(instr, "op0", op0, "binary")
    op1 = _op(instr, "op1", op1, "binary")
    x0, x1 = X.read(instr, "data0", a), X.read(instr, "data1", b)
    carry = np.broadcast_to(X.scalar_operand(instr, "initial", initial, a), (a.partitions, 1))[:, 0].astype(np.float32)
    out = np.empty_like(x0)
    with np.errstate(all="ignore"):
        for i in range(x0.shape[1]):
            u = _apply(op0, x0[:, i], carry, reverse0)
            carry = (op1.binary(x1[:, i], u) if reverse1 else op1.binary(u, x1[:, i])).astype(np.float32)
            out[:, i] = carry
    X.write(o, out)
    X.record(instr, "vector", o, cost.tensor_tensor_cycles(o.free_size, fast=False))


def iota(dst, pattern, offset=0, channel_multiplier=0, name=None):
    """GpSimd: ``dst[p, i...] = offset + p * channel_multiplier + sum_k i_k * step_k`` for ``pattern=[[step, num],...]``."""
    instr = "iota"
    o = X.on_chip(instr, "dst", dst, X.SBUF_ONLY)
    steps = [int(s) for s, _ in pattern]
    nums = [int(n) for _, n in pattern]
    if math.prod(nums) != o.free_size:
        raise NkiLimitError(f"{instr}: pattern covers {math.prod(nums)} elements, dst has {o.free_size} per partition")
    val = np.full((o.partitions, *nums), int(offset), dtype=np.int64)
    val += (np.arange(o.partitions, dtype=np.int64) * int(channel_multiplier)).reshape(-1, *([1] * len(nums)))
    for k, (s, n) in enumerate(zip(steps, nums)):
        shape = [1] * (len(nums) + 1)
        shape[k + 1] = n
        val += (np.arange(n, dtype=np.int64) * s).reshape(shape)
    val = ((val + 2**31) % 2**32 - 2**31).reshape(o.partitions, -1)  # int32 arithmetic wraps
    X.write(o, val)
    X.record(instr, "gpsimd", o, 150 + o.free_size)


def memset(dst, value, engine=engine.unknown, name=None):
    """Fill ``dst`` with ``value``; the value's type must match the dtype (int for int, float for float)."""
    instr = "memset"
    o = X.on_chip(instr, "dst", dst)
    eng = _pick_engine(instr, engine, "vector", ("vector", "gpsimd"))
    _gpsimd_no_psum(instr, eng, dst=o)
    is_int_value = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if dtypes.is_int(o.dtype) and not is_int_value:
        raise NkiDtypeError(f"{instr}: dst is {o.dtype}, value {value!r} must be an int")
    if dtypes.is_float(o.dtype) and not isinstance(value, (float, np.floating)):
        raise NkiDtypeError(f"{instr}: dst is {o.dtype}, value {value!r} must be a float")
    X.write(o, np.full((o.partitions, o.free_size), value))
    X.record(instr, eng, o, cost.elementwise_cycles(o.free_size))


def affine_select(
    dst, pattern, channel_multiplier, on_true_tile, on_false_value, cmp_op=ops.equal, offset=0, name=None
):
    """GpSimd: ``dst = on_true_tile`` where ``cmp_op(offset + p*channel_multiplier + pattern . i, 0)``, else ``on_false_value``."""
    instr = "affine_select"
    src = X.on_chip(instr, "on_true_tile", on_true_tile, X.SBUF_ONLY)
    o = X.on_chip(instr, "dst", dst, X.SBUF_ONLY)
    X.same_layout(instr, "on_true_tile", src, "dst", o)
    cmp_op = _op(instr, "cmp_op", cmp_op, "binary")
    nums = [int(n) for _, n in pattern]
    if math.prod(nums) != o.free_size:
        raise NkiLimitError(f"{instr}: pattern covers {math.prod(nums)} elements, dst has {o.free_size} per partition")
    val = np.full((o.partitions, *nums), int(offset), dtype=np.int64)
    val += (np.arange(o.partitions, dtype=np.int64) * int(channel_multiplier)).reshape(-1, *([1] * len(nums)))
    for k, (s, n) in enumerate(pattern):
        shape = [1] * (len(nums) + 1)
        shape[k + 1] = int(n)
        val += (np.arange(int(n), dtype=np.int64) * int(s)).reshape(shape)
    keep = cmp_op.binary(val.reshape(o.partitions, -1).astype(np.float32), np.float32(0.0)) != 0
    X.write(o, np.where(keep, X.read(instr, "on_true_tile", src), np.float32(on_false_value)))
    X.record(instr, "gpsimd", o, cost.elementwise_cycles(o.free_size))


# --------------------------------------------------------------------------------------------------
# Top-k helpers (VectorE) and within-partition gather (GpSimd)
# --------------------------------------------------------------------------------------------------
_MAX8_MIN, _MAX8_MAX = 8, 16384


def _max8_src(instr: str, operand: str, t) -> NkiTensor:
    t = X.on_chip(instr, operand, t)
    if not _MAX8_MIN <= t.free_size <= _MAX8_MAX:
        raise NkiLimitError(
            f"{instr}: operand '{operand}' has {t.free_size} elements per partition, limit is {_MAX8_MIN}..{_MAX8_MAX}"
        )
    return t


def _eight(instr: str, operand: str, t, parts: int) -> NkiTensor:
    t = X.on_chip(instr, operand, t)
    if t.partitions != parts or t.free_size != 8:
        raise NkiLimitError(f"{instr}: operand '{operand}' must be [{parts}, 8], got {t.partitions} x {t.free_size}")
    return t


def max8(dst, src, name=None):
    """The 8 largest values of each partition, descending (fp32 compare)."""
    instr = "max8"
    s = _max8_src(instr, "src", src)
    o = _eight(instr, "dst", dst, s.partitions)
    x = X.read(instr, "src", s)
    X.write(o, -np.sort(-x, axis=1, kind="stable")[:, :8])
    X.record(instr, "vector", o, cost.elementwise_cycles(s.free_size))


def _index_sentinel(dt) -> int:
    return int(np.iinfo(dt).max)


def nc_find_index8(dst, data, vals, name=None):
    """Index (flattened free dims) of the first occurrence of each of the 8 ``vals``; duplicated vals take
    successive occurrences in ascending order; missing -> all ones (0xFFFFFFFF / 0xFFFF)."""
    instr = "nc_find_index8"
    d = _max8_src(instr, "data", data)
    v = _eight(instr, "vals", vals, d.partitions)
    o = _eight(instr, "dst", dst, d.partitions)
    if o.dtype not in (dtypes.uint32, dtypes.uint16):
        raise NkiDtypeError(f"{instr}: operand 'dst' dtype {o.dtype} must be uint32 or uint16")
    x, vv = X.read(instr, "data", d), X.read(instr, "vals", v)
    out = np.full((d.partitions, 8), _index_sentinel(o.dtype), dtype=np.int64)
    for p in range(d.partitions):
        for j in range(8):
            hits = np.flatnonzero(x[p] == vv[p, j])
            k = int(np.sum(vv[p, :j] == vv[p, j]))
            if k < hits.size:
                out[p, j] = hits[k]
    X.write(o, out)
    X.record(instr, "vector", o, cost.elementwise_cycles(d.free_size))


def nc_match_replace8(dst, data, vals, imm, dst_idx=None, name=None):
    """Copy of ``data`` with the first occurrence of each of the 8 ``vals`` replaced by ``imm``; vals are
    processed i = 7..0 so for duplicates the earliest position lands in the highest ``dst_idx`` slot."""
    instr = "nc_match_replace8"
    d = _max8_src(instr, "data", data)
    v = _eight(instr, "vals", vals, d.partitions)
    o = X.on_chip(instr, "dst", dst)
    X.same_layout(instr, "data", d, "dst", o)
    x, vv = X.read(instr, "data", d).copy(), X.read(instr, "vals", v)
    idx = None
    if dst_idx is not None:
        di = _eight(instr, "dst_idx", dst_idx, d.partitions)
        if di.dtype not in (dtypes.uint32, dtypes.uint16, dtypes.int32):
            raise NkiDtypeError(f"{instr}: operand 'dst_idx' dtype {di.dtype} must be an integer index dtype")
        idx = np.full((d.partitions, 8), _index_sentinel(di.dtype), dtype=np.int64)
    for p in range(d.partitions):
        for j in range(7, -1, -1):
            hits = np.flatnonzero(x[p] == vv[p, j])
            if hits.size:
                x[p, hits[0]] = np.float32(imm)
                if idx is not None:
                    idx[p, j] = hits[0]
    X.write(o, x)
    if idx is not None:
        X.write(di, idx)
    X.record(instr, "vector", o, cost.elementwise_cycles(d.free_size))


def nc_n_gather(dst, data, indices, name=None):
    """GpSimd, within each partition: ``dst[p, j] = data[p, indices[p, j]]`` (flattened free index, uint32)."""
    instr = "nc_n_gather"
    d = X.on_chip(instr, "data", data, X.SBUF_ONLY)
    ix = X.on_chip(instr, "indices", indices, X.SBUF_ONLY)
    o = X.on_chip(instr, "dst", dst, X.SBUF_ONLY)
    X.same_layout(instr, "indices", ix, "dst", o)
    if ix.partitions != d.partitions:
        raise NkiLimitError(f"{instr}: operand 'indices' has {ix.partitions} partitions, 'data' has {d.partitions}")
    if ix.dtype not in (dtypes.uint32, dtypes.int32):
        raise NkiDtypeError(f"{instr}: operand 'indices' dtype {ix.dtype} must be uint32")
    x = X.read_raw(instr, "data", d).reshape(d.partitions, d.free_size)
    i = X.read_raw(instr, "indices", ix).reshape(ix.partitions, ix.free_size).astype(np.int64)
    if i.min() < 0 or i.max() >= d.free_size:
        raise NkiLimitError(
            f"{instr}: operand 'indices' holds {int(i.max())}, limit is {d.free_size - 1} (data free size - 1)"
        )
    vals = np.take_along_axis(x, i, axis=1)
    X.write(o, vals if d.dtype == o.dtype else dtypes.to_f32(vals))
    X.record(instr, "gpsimd", o, cost.elementwise_cycles(o.free_size))


# --------------------------------------------------------------------------------------------------
# DMA
# --------------------------------------------------------------------------------------------------
def dma_copy(
    dst, src, priority=None, oob_mode=oob_mode.error, dge_mode=dge_mode.unknown, engine=engine.unknown, name=None
):
    """Copy ``src`` to ``dst`` (equal element counts; HBM<->SBUF, SBUF->SBUF, HBM->HBM; never PSUM).

    Either side may be an indirect access (``t.ap(..., vector_offset=idx, indirect_dim=0)``): gather or scatter of
    rows. Differing dtypes cast through fp32 (not with ``dge_mode.hwdge``).
    """
    instr, ctx = "dma_copy", current()
    _pick_engine(instr, engine, "dma", ("dma", "gpsimd", "scalar", "sync"))
    _check_dma_operands(instr, ctx.target, dst, src, dge_mode, oob_mode)
    if isinstance(src, IndirectAccess):
        values, rows_ok = _gather(instr, src, oob_mode)
    else:
        X.check_written(instr, "src", src)
        values, rows_ok = np.array(src.np_view()), None
    vals = values if values.dtype == dst.dtype else dtypes.to_f32(values)
    if isinstance(dst, IndirectAccess):
        _scatter(instr, dst, vals, oob_mode)
    elif rows_ok is None or rows_ok.all():
        X.write(dst, vals.reshape(dst.shape))
    else:  # oob_mode.skip: rows with out-of-range indices leave dst untouched
        flat = vals.reshape(rows_ok.size, -1)
        for r in np.flatnonzero(rows_ok):
            X.write(dst[r], flat[r])
    nbytes = math.prod(src.shape) * max(src.dtype.itemsize, dst.dtype.itemsize)
    ctx.instruction_index += 1
    ctx.stats.record_dma(instr, math.prod(src.shape), nbytes, _run_bytes(src, dst), _dma_partitions(src, dst), ctx=ctx)


def _check_dma_operands(instr: str, target, dst, src, dge_mode, oob_mode) -> None:
    """Operand kinds, buffers, sizes, dtypes and DGE mode of a DMA, before it moves anything."""
    if not isinstance(dge_mode, _DGE) or not isinstance(oob_mode, _OOB):
        raise NkiUsageError(f"{instr}: dge_mode/oob_mode must be nisa enum members")
    for nm, t in (("dst", dst), ("src", src)):
        if not isinstance(t, (NkiTensor, IndirectAccess)):
            raise NkiUsageError(f"{instr}: operand '{nm}' must be an NKI tensor or access pattern")
        if t.buffer is psum:
            raise NkiBufferError(f"{instr}: operand '{nm}' ({t.describe()}) is in PSUM; DMA cannot access PSUM")
        if t.buffer.on_chip and t.shape[0] > target.pmax:
            raise NkiLimitError(f"{instr}: operand '{nm}' partition dimension is {t.shape[0]}, limit is {target.pmax}")
    if math.prod(dst.shape) != math.prod(src.shape):
        raise NkiLimitError(f"{instr}: element counts differ: dst {dst.shape} vs src {src.shape}")
    if dst.dtype != src.dtype and dge_mode is _DGE.hwdge:
        raise NkiDtypeError(f"{instr}: dge_mode.hwdge needs equal dtypes, got {src.dtype} -> {dst.dtype}")
    if dge_mode is _DGE.hwdge and target.nc_version == "gen2":
        raise NkiUsageError(f"{instr}: dge_mode.hwdge is not available on {target.name}")
    indirect = isinstance(src, IndirectAccess) or isinstance(dst, IndirectAccess)
    if indirect:
        if dge_mode in (_DGE.hwdge, _DGE.none):
            raise NkiUsageError(f"{instr}: indirect (vector_offset) DMA needs dge_mode.swdge, got {dge_mode}")
        if not target.indirect_dma_certain:
            raise NkiUnsupportedError(
                f"{instr}: indirect (vector_offset) DMA on {target.name} is not confirmed by the NKI docs "
                "(docs/nki.md, 'Open questions'); use a route without indirect DMA on this target"
            )


def _row_positions(ap: IndirectAccess, oob) -> tuple[np.ndarray, np.ndarray]:
    """Flat storage index of every element addressed by an indirect pattern, and which rows are valid."""
    ix = X.on_chip("dma_copy", "vector_offset", ap.index, X.SBUF_ONLY)
    if not dtypes.is_int(ix.dtype):
        raise NkiDtypeError(f"dma_copy: 'vector_offset' dtype {ix.dtype} must be uint32/int32")
    if ix.partitions != ap.counts[0] or ix.free_size != 1:
        raise NkiLimitError(
            f"dma_copy: 'vector_offset' must be [{ap.counts[0]}, 1], got {ix.partitions} x {ix.free_size}"
        )
    idx = X.read_raw("dma_copy", "vector_offset", ix).reshape(-1).astype(np.int64)
    n_rows = ap.n_rows
    ok = (idx >= 0) & (idx < n_rows)
    if not ok.all() and oob is oob_mode.error:
        bad = int(idx[~ok][0])
        raise NkiLimitError(f"dma_copy: indirect row index {bad} out of range, limit is {n_rows - 1} ({ap.describe()})")
    inner = np.zeros(ap.counts[1:] or [1], dtype=np.int64)
    for k, (s, n) in enumerate(zip(ap.strides[1:], ap.counts[1:])):
        shape = [1] * len(ap.counts[1:])
        shape[k] = n
        inner = inner + (np.arange(n, dtype=np.int64) * s).reshape(shape)
    pos = ap.offset + np.where(ok, idx, 0)[:, None] * ap.row_stride + inner.reshape(1, -1)
    if pos.max() >= ap.storage.size:
        raise NkiLimitError(f"dma_copy: indirect access reaches element {int(pos.max())} beyond {ap.describe()}")
    return pos, ok


def _gather(instr, ap: IndirectAccess, oob) -> tuple[np.ndarray, np.ndarray]:
    pos, ok = _row_positions(ap, oob)
    used = pos[ok]
    if not ap.storage.written[used].all():
        raise NkiUninitializedReadError(f"{instr}: indirect gather reads uninitialised elements of {ap.describe()}")
    return ap.storage.data[pos].reshape(ap.shape), ok


def _scatter(instr, ap: IndirectAccess, vals: np.ndarray, oob) -> None:
    pos, ok = _row_positions(ap, oob)
    flat = vals.reshape(pos.shape)
    st = ap.storage
    st.data[pos[ok]] = dtypes.cast(flat[ok], st.dtype)
    st.written[pos[ok]] = True
    st.dirty = True
    if st.buffer is shared_hbm:
        owners = X.owner_array(st)
        sub = owners[pos[ok]]
        X.claim(st, sub)
        owners[pos[ok]] = sub


def _dma_partitions(src, dst) -> int:
    """Rows the transfer spreads over DMA engines: the on-chip side's partitions (HBM->HBM: the outer dim)."""
    side = dst if dst.buffer.on_chip else src
    return int(side.shape[0]) if len(side.shape) else 1


def _run_bytes(src, dst) -> int:
    """Contiguous bytes per DMA descriptor element: set by the HBM side's innermost contiguous run."""
    side = src if src.buffer in HBM_BUFFERS else dst
    if isinstance(side, IndirectAccess):
        run = 1
        for s, n in zip(reversed(side.strides[1:]), reversed(side.counts[1:])):
            if s != run:
                break
            run *= n
        return run * side.dtype.itemsize
    run = 1
    for s, n in zip(reversed(side.strides), reversed(side.shape)):
        if n == 1:
            continue
        if s != run:
            break
        run *= n
    return run * side.dtype.itemsize
