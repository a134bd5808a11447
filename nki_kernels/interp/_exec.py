"""Operand checks, reads and writes shared by the instruction implementations.

Reads return fp32 arrays shaped ``(partitions, elements_per_partition)`` for on-chip operands; every read
first checks that all elements were written since allocation; every write rounds to the destination
dtype and marks the elements written.
"""

from __future__ import annotations

import numpy as np

from . import dtypes
from .context import current
from .errors import NkiBufferError, NkiLimitError, NkiShardError, NkiUninitializedReadError, NkiUsageError
from .memory import Buffer, psum, sbuf, shared_hbm
from .tensor import NkiTensor

ON_CHIP = (sbuf, psum)
SBUF_ONLY = (sbuf,)


def tensor(instr: str, operand: str, t) -> NkiTensor:
    if not isinstance(t, NkiTensor):
        raise NkiUsageError(f"{instr}: operand '{operand}' must be an NKI tensor, got {type(t).__name__}")
    return t


def buffer_in(instr: str, operand: str, t: NkiTensor, allowed: tuple[Buffer, ...]) -> None:
    if t.buffer not in allowed:
        names = "/".join(b.name for b in allowed)
        raise NkiBufferError(
            f"{instr}: operand '{operand}' ({t.describe()}) is in {t.buffer.name}; {instr} accepts only {names} here"
        )


def on_chip(instr: str, operand: str, t, allowed=ON_CHIP) -> NkiTensor:
    """Check an on-chip operand: tensor, allowed buffer, partition dim within the target's limit."""
    t = tensor(instr, operand, t)
    buffer_in(instr, operand, t, allowed)
    pmax = current().target.pmax
    if t.partitions > pmax:
        raise NkiLimitError(f"{instr}: operand '{operand}' partition dimension is {t.partitions}, limit is {pmax}")
    return t


def same_layout(instr: str, a_name: str, a: NkiTensor, b_name: str, b: NkiTensor) -> None:
    if a.partitions != b.partitions or a.free_size != b.free_size:
        raise NkiLimitError(
            f"{instr}: operand '{b_name}' has {b.partitions} partitions x {b.free_size} elements, operand "
            f"'{a_name}' has {a.partitions} x {a.free_size}; they must match"
        )


def check_written(instr: str, operand: str, t) -> None:
    w = t.written_view()
    if not w.all():
        first = tuple(int(i) for i in np.argwhere(~w)[0])
        raise NkiUninitializedReadError(
            f"{instr}: operand '{operand}' ({t.describe()}) reads {int((~w).sum())} uninitialised element(s), "
            f"first at index {first}: nothing wrote them since allocation"
        )


def read(instr: str, operand: str, t: NkiTensor) -> np.ndarray:
    """fp32 copy of an on-chip operand, shape (partitions, free)."""
    check_written(instr, operand, t)
    return dtypes.to_f32(t.np_view()).reshape(t.partitions, t.free_size)


def read_raw(instr: str, operand: str, t: NkiTensor) -> np.ndarray:
    """Copy in the stored dtype (bit-exact paths, indices)."""
    check_written(instr, operand, t)
    return np.array(t.np_view())


def write(t: NkiTensor, values: np.ndarray, *, by_matmul: bool = False) -> None:
    view = t.np_view()
    view[...] = dtypes.cast(values, t.dtype).reshape(view.shape)
    t.written_view()[...] = True
    if t.storage.mm_written is not None:
        t._view(t.storage.mm_written)[...] = by_matmul
    t.storage.dirty = True
    if t.storage.buffer is shared_hbm:
        claim(t.storage, t._view(owner_array(t.storage)))


def owner_array(storage) -> np.ndarray:
    """Per element of a ``shared_hbm`` tensor: the program id that wrote it (-1: none yet)."""
    if getattr(storage, "owner", None) is None:
        storage.owner = np.full(storage.size, -1, dtype=np.int16)
    return storage.owner


def claim(storage, owners: np.ndarray) -> None:
    """Record that the current program wrote these elements of a shared output; two programs writing the
    same element is an overlap of the launch grid's shards (each element must be written by one program)."""
    ctx = current()
    pid = ctx.program_id
    other = (owners != -1) & (owners != pid)
    if other.any():
        first = int(np.argmax(other.reshape(-1)))
        raise NkiShardError(
            f"LNC shards overlap: program {pid} of {ctx.num_programs} writes {int(other.sum())} element(s) of "
            f"shared_hbm tensor '{storage.name}' that program {int(owners.reshape(-1)[first])} already wrote; "
            "split the (batch, head) work with nl.program_id() / nl.num_programs() so each output has one writer"
        )
    owners[...] = pid


def scalar_operand(instr: str, operand: str, value, data: NkiTensor) -> np.ndarray | float:
    """An fp32 immediate or a ``[P, 1]`` tile broadcast along the free dims; returns float or (P, 1)."""
    if isinstance(value, (bool, np.bool_)):
        raise NkiUsageError(f"{instr}: operand '{operand}' must be a number or a [P,1] tile, got bool")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return np.float32(value)
    t = on_chip(instr, operand, value)
    if t.partitions != data.partitions or t.free_size != 1:
        raise NkiLimitError(
            f"{instr}: operand '{operand}' must be a [{data.partitions}, 1] tile, got {t.partitions} x {t.free_size}"
        )
    return read(instr, operand, t)


def not_both_psum(instr: str, names: tuple[str, str], a: NkiTensor, b: NkiTensor) -> None:
    if a.buffer is psum and b.buffer is psum:
        raise NkiBufferError(f"{instr}: operands '{names[0]}' and '{names[1]}' are both in PSUM; at most one may be")


def record(instr: str, engine: str, dst: NkiTensor, cycles: int, flops: int = 0) -> None:
    ctx = current()
    ctx.instruction_index += 1
    ctx.stats.record(instr, engine, dst.size, cycles, flops, ctx=ctx)
