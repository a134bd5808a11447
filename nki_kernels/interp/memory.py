"""Memories (HBM, SBUF, PSUM), their storage and the per-kernel-call allocator.

Allocator model (documented, deliberately simple):

* SBUF: an allocation of an on-chip tensor ``[P, *free]`` takes ``prod(free) * itemsize`` bytes on every
  partition (conservative: the compiler's allocator also reserves the same free-byte range on all partitions).
  The sum over live allocations must stay within the target's usable bytes per partition.
* PSUM: allocations are rounded up to whole 2 KiB banks and placed at the first run of free contiguous
  banks, so every PSUM tensor starts on a bank boundary; at most ``psum_banks`` (8) banks.
* An allocation lives while its Python tensor object (or any view of it) is alive - CPython frees it the
  moment the last reference goes - and everything is released when the kernel call ends. A tile re-allocated
  in a loop body briefly coexists with the previous iteration's tile (the new one is created before the
  name is rebound), so kernels hoist their working tiles out of loops, as NKI kernels usually do.
* High-water marks (peak SBUF bytes per partition, peak PSUM banks) are kept for the run report.

HBM is not limited (device HBM is tens of GiB); its allocations are only counted.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np

from . import dtypes
from .errors import NkiCapacityError, NkiLimitError, NkiUsageError


class Buffer:
    """A memory kind. Compare by identity: ``t.buffer is nl.sbuf``."""

    def __init__(self, name: str, on_chip: bool):
        self.name = name
        self.on_chip = on_chip

    def __repr__(self) -> str:
        return f"nl.{self.name}"


hbm = Buffer("hbm", on_chip=False)
shared_hbm = Buffer("shared_hbm", on_chip=False)
private_hbm = Buffer("private_hbm", on_chip=False)
sbuf = Buffer("sbuf", on_chip=True)
psum = Buffer("psum", on_chip=True)
ALL_BUFFERS = (hbm, shared_hbm, private_hbm, sbuf, psum)
HBM_BUFFERS = (hbm, shared_hbm, private_hbm)


@dataclass
class _Allocation:
    name: str
    buffer: Buffer
    bytes_per_partition: int
    first_bank: int = 0
    n_banks: int = 0


class Allocator:
    """Tracks SBUF bytes per partition and PSUM banks for one kernel call (see module docstring)."""

    def __init__(self, target):
        self.target = target
        self._live: dict[int, _Allocation] = {}
        self._next_id = 0
        self.sbuf_used = 0
        self.sbuf_peak = 0
        self._banks: list[int | None] = [None] * target.psum_banks
        self.psum_peak_banks = 0
        self.hbm_bytes = 0
        self.closed = False

    def allocate(self, buffer: Buffer, shape: tuple, dtype, name: str) -> tuple[int, _Allocation]:
        if buffer in HBM_BUFFERS:
            self.hbm_bytes += math.prod(shape) * np.dtype(dtype).itemsize
            return -1, _Allocation(name, buffer, 0)
        if shape[0] > self.target.pmax:
            raise NkiLimitError(
                f"nl.ndarray: operand '{name}' partition dimension is {shape[0]}, limit is {self.target.pmax} "
                f"(dim 0 of an {buffer.name} tensor is the partition dim)"
            )
        per_part = math.prod(shape[1:]) * np.dtype(dtype).itemsize
        alloc = _Allocation(name, buffer, per_part)
        if buffer is sbuf:
            limit = self.target.sbuf_bytes_per_partition
            if self.sbuf_used + per_part > limit:
                raise NkiCapacityError(
                    f"nl.ndarray: SBUF oversubscribed allocating '{name}' {tuple(shape)} {np.dtype(dtype)}: "
                    f"needs {per_part} B/partition with {self.sbuf_used} B already live, limit is {limit} "
                    f"B/partition on {self.target.name}; live: {self._describe_live(sbuf)}"
                )
            self.sbuf_used += per_part
            self.sbuf_peak = max(self.sbuf_peak, self.sbuf_used)
        else:
            bank = self.target.psum_bank_bytes
            n_banks = max(1, -(-per_part // bank))
            first = self._find_banks(n_banks)
            if first is None:
                used = sum(b is not None for b in self._banks)
                raise NkiCapacityError(
                    f"nl.ndarray: PSUM oversubscribed allocating '{name}' {tuple(shape)} {np.dtype(dtype)}: "
                    f"needs {n_banks} contiguous bank(s) of {bank} B/partition with {used} of "
                    f"{self.target.psum_banks} banks live, limit is {self.target.psum_banks} banks; "
                    f"live: {self._describe_live(psum)}"
                )
            alloc.first_bank, alloc.n_banks = first, n_banks
        aid = self._next_id
        self._next_id += 1
        if buffer is psum:
            for b in range(alloc.first_bank, alloc.first_bank + alloc.n_banks):
                self._banks[b] = aid
            self.psum_peak_banks = max(self.psum_peak_banks, sum(b is not None for b in self._banks))
        self._live[aid] = alloc
        return aid, alloc

    def release(self, aid: int) -> None:
        if self.closed or aid not in self._live:
            return
        alloc = self._live.pop(aid)
        if alloc.buffer is sbuf:
            self.sbuf_used -= alloc.bytes_per_partition
        else:
            for b in range(alloc.first_bank, alloc.first_bank + alloc.n_banks):
                self._banks[b] = None

    def close(self) -> None:
        self._live.clear()
        self.closed = True

    def _find_banks(self, n: int) -> int | None:
        for start in range(len(self._banks) - n + 1):
            if all(b is None for b in self._banks[start : start + n]):
                return start
        return None

    def _describe_live(self, buffer: Buffer) -> str:
        items = [a for a in self._live.values() if a.buffer is buffer]
        items.sort(key=lambda a: -a.bytes_per_partition)
        text = ", ".join(f"{a.name}={a.bytes_per_partition}B" for a in items[:6])
        return text + (f", ... ({len(items)} total)" if len(items) > 6 else "")


class Storage:
    """The memory behind a tensor: a flat NumPy array plus per-element bookkeeping.

    ``written`` marks elements written since allocation (read-before-write detection); for PSUM,
    ``mm_written`` marks elements whose current value was produced by ``nc_matmul`` (accumulate rules).
    """

    def __init__(
        self,
        buffer: Buffer,
        shape: tuple,
        dtype,
        name: str,
        allocator: Allocator | None,
        data: np.ndarray | None = None,
    ):
        self.buffer = buffer
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtypes.as_dtype(dtype)
        self.name = name
        self.size = math.prod(self.shape)
        self.part_stride = math.prod(self.shape[1:]) if buffer.on_chip else None
        if data is None:
            self.data = np.full(self.size, dtypes.sentinel(self.dtype), dtype=self.dtype)
            self.written = np.zeros(self.size, dtype=bool)
        else:
            self.data = np.ascontiguousarray(data, dtype=self.dtype).reshape(-1).copy()
            self.written = np.ones(self.size, dtype=bool)
        self.mm_written = np.zeros(self.size, dtype=bool) if buffer is psum else None
        self.dirty = False  # set when an instruction writes (used to write kernel inputs back)
        self.first_bank = 0
        if allocator is not None:
            if any(s <= 0 for s in self.shape):
                raise NkiUsageError(f"nl.ndarray: '{name}' has an empty shape {self.shape}")
            aid, alloc = allocator.allocate(buffer, self.shape, self.dtype, name)
            self.first_bank = alloc.first_bank
            if aid >= 0:
                weakref.finalize(self, allocator.release, aid)
