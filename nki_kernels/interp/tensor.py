"""NKI tensors: strided views over a :class:`~.memory.Storage`.

A view is ``(shape, strides, offset)`` in elements; element ``i`` lives at ``offset + sum(i_k * stride_k)``
of the flat storage. Dim 0 of an on-chip (SBUF/PSUM) tensor is the partition dim. Indexing follows NKI:
on chip an int index on dim 0 keeps a size-1 partition dim and results stay at least 2-D; on HBM an int
index removes the dim. ``.ap()`` addresses the raw storage and ignores the receiving view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .errors import NkiLimitError, NkiUnsupportedError, NkiUsageError


@dataclass(frozen=True)
class ds:
    """``nl.ds(start, size)``: a dynamic-slice object, equivalent to ``start:start + size``."""

    start: int
    size: int


class IndirectAccess:
    """An access pattern whose dim ``indirect_dim`` is addressed through an index tile (``vector_offset``).

    Produced by ``tensor.ap(..., vector_offset=idx, indirect_dim=0)``; only ``dma_copy`` consumes it.
    Row ``p`` of the pattern starts at ``offset + idx[p] * row_stride`` where ``row_stride`` is the product
    of the base tensor's dims right of dim 0 (the pattern's own first stride is ignored, as on hardware);
    the base is the tensor ``.ap`` is called on, which must cover its whole storage.
    """

    def __init__(self, base: NkiTensor, pattern, offset: int, index: NkiTensor, indirect_dim: int):
        if indirect_dim != 0:
            raise NkiUnsupportedError(f".ap: indirect_dim must be 0, got {indirect_dim}")
        if base.buffer.on_chip:
            raise NkiUsageError(".ap(vector_offset=...): the indexed tensor must be in HBM")
        if base.offset != 0 or base.size != base.storage.size or not base._is_contiguous():
            raise NkiUsageError(".ap(vector_offset=...) must be called on a whole tensor (or a reshape of it)")
        self.base = base
        self.counts = [int(c) for _, c in pattern]
        self.strides = [int(s) for s, _ in pattern]
        self.offset = int(offset)
        self.index = index
        # The base is the tensor .ap() is called on (e.g. a whole-storage reshape to (rows, F)).
        self.row_stride = math.prod(base.shape[1:])
        self.n_rows = base.shape[0]
        self.shape = tuple(self.counts)
        self.dtype = base.dtype
        self.buffer = base.buffer
        self.storage = base.storage

    def describe(self) -> str:
        return f"indirect access into {self.base.describe()}"


class NkiTensor:
    """A view of a storage: ``shape``, ``strides`` (elements), ``offset``; NKI's ``NkiTensor`` attributes."""

    def __init__(self, storage, shape, strides, offset: int):
        self.storage = storage
        self.shape = tuple(int(s) for s in shape)
        self.strides = tuple(int(s) for s in strides)
        self.offset = int(offset)

    # --- NKI attributes -------------------------------------------------------------------------
    @property
    def dtype(self):
        return self.storage.dtype

    @property
    def buffer(self):
        return self.storage.buffer

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def name(self) -> str:
        return self.storage.name

    @property
    def partitions(self) -> int:
        """Number of partitions (dim 0) of an on-chip tensor."""
        return self.shape[0] if self.shape else 1

    @property
    def free_size(self) -> int:
        """Elements per partition (product of the free dims) of an on-chip tensor."""
        return math.prod(self.shape[1:])

    def describe(self) -> str:
        return f"{self.buffer.name} tensor '{self.name}' view {self.shape} {self.dtype}"

    def __repr__(self) -> str:
        return f"NkiTensor({self.describe()})"

    # --- NumPy access (interpreter internal) ------------------------------------------------------
    def _bounds(self) -> tuple[int, int]:
        lo = self.offset + sum(min(0, s * (n - 1)) for n, s in zip(self.shape, self.strides))
        hi = self.offset + sum(max(0, s * (n - 1)) for n, s in zip(self.shape, self.strides))
        return lo, hi

    def _view(self, flat: np.ndarray) -> np.ndarray:
        item = flat.itemsize
        return as_strided(flat[self.offset :], shape=self.shape, strides=[s * item for s in self.strides])

    def np_view(self) -> np.ndarray:
        """Writable NumPy view of the data (shares memory with the storage)."""
        return self._view(self.storage.data)

    def written_view(self) -> np.ndarray:
        return self._view(self.storage.written)

    # --- views ----------------------------------------------------------------------------------
    def __getitem__(self, key) -> NkiTensor:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(j for j, k in enumerate(key) if k is Ellipsis)
            fill = self.ndim - (len(key) - 1)
            key = key[:i] + (slice(None),) * fill + key[i + 1 :]
        if len(key) > self.ndim:
            raise NkiUsageError(f"too many indices ({len(key)}) for {self.describe()}")
        key = key + (slice(None),) * (self.ndim - len(key))
        on_chip = self.buffer.on_chip
        shape, strides, offset = [], [], self.offset
        for d, (k, n, s) in enumerate(zip(key, self.shape, self.strides)):
            if isinstance(k, ds):
                k = slice(int(k.start), int(k.start) + int(k.size))
            if isinstance(k, (bool, np.bool_)):
                raise NkiUsageError("boolean indices are not NKI indices")
            if isinstance(k, (int, np.integer)):
                k = int(k) + (n if k < 0 else 0)
                if not 0 <= k < n:
                    raise NkiLimitError(f"index {k} out of bounds for dim {d} of size {n} of {self.describe()}")
                offset += k * s
                if on_chip and d == 0:
                    shape.append(1)
                    strides.append(s)
            elif isinstance(k, slice):
                start, stop, step = _normalise_slice(k, n, d, self)
                count = -(-(stop - start) // step)
                offset += start * s
                shape.append(count)
                strides.append(s * step)
            else:
                raise NkiUsageError(
                    f"unsupported index {k!r} on {self.describe()}: use ints, slices, nl.ds or .ap(vector_offset=...)"
                )
        if on_chip and len(shape) < 2:
            shape.append(1)
            strides.append(1)
        return NkiTensor(self.storage, shape, strides, offset)

    def ap(self, pattern, offset=None, scalar_offset=None, vector_offset=None, indirect_dim: int = 0, dtype=None):
        """Access pattern on the raw storage: ``pattern = [[stride, count], ...]`` (outermost first)."""
        if dtype is not None:
            raise NkiUnsupportedError(".ap: dtype= is not implemented by the interpreter")
        if offset is None:  # as in the API: inherit the view's offset
            offset = self.offset
        if scalar_offset is not None:  # start += scalar_offset * (elements per step of dim indirect_dim)
            from .loops import NkiScalar

            if not isinstance(scalar_offset, NkiScalar):
                raise NkiUsageError(".ap(scalar_offset=...) takes a loop register (NkiScalar), not a Python int")
            if vector_offset is not None or self.buffer.on_chip:
                raise NkiUnsupportedError(".ap(scalar_offset=...) is modelled for HBM tensors without vector_offset")
            offset = offset + scalar_offset.runtime_value() * math.prod(self.shape[indirect_dim + 1 :])
        pattern = [list(p) for p in pattern]
        if any(len(p) != 2 for p in pattern):
            raise NkiUsageError(f".ap: pattern entries must be [stride, count] pairs, got {pattern}")
        if vector_offset is not None:
            return IndirectAccess(self, pattern, offset, vector_offset, indirect_dim)
        if self.buffer.on_chip and pattern[0][0] != self.storage.part_stride:
            raise NkiLimitError(
                f".ap on {self.describe()}: the partition stride is {pattern[0][0]}, it must equal the storage "
                f"free size {self.storage.part_stride}"
            )
        view = NkiTensor(self.storage, [c for _, c in pattern], [s for s, _ in pattern], offset)
        lo, hi = view._bounds()
        if lo < 0 or hi >= self.storage.size:
            raise NkiLimitError(f".ap pattern {pattern} offset {offset} addresses outside {self.describe()}")
        return view

    def reshape(self, shape) -> NkiTensor:
        """Reshape a contiguous view (on chip the partition dim must stay dim 0 and keep its size)."""
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) != self.size:
            raise NkiUsageError(f"reshape of {self.describe()} to {shape}: element counts differ")
        if not self._is_contiguous():
            raise NkiUnsupportedError(f"reshape of the non-contiguous view {self.describe()}")
        if self.buffer.on_chip and shape[0] != self.shape[0]:
            raise NkiUsageError(f"reshape of {self.describe()} to {shape} changes the partition dim")
        strides = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
        return NkiTensor(self.storage, shape, strides, self.offset)

    def permute(self, dims) -> NkiTensor:
        """Reorder dims (on chip, dim 0 - the partition dim - must stay first)."""
        dims = tuple(int(d) for d in dims)
        if sorted(dims) != list(range(self.ndim)):
            raise NkiUsageError(f"permute{dims} is not a permutation of {self.ndim} dims")
        if self.buffer.on_chip and dims[0] != 0:
            raise NkiUsageError("on-chip views may not move the partition dim")
        return NkiTensor(self.storage, [self.shape[d] for d in dims], [self.strides[d] for d in dims], self.offset)

    def _is_contiguous(self) -> bool:
        expected = 1
        for n, s in zip(reversed(self.shape), reversed(self.strides)):
            if n != 1 and s != expected:
                return False
            expected *= n
        return True


def _normalise_slice(k: slice, n: int, d: int, t: NkiTensor) -> tuple[int, int, int]:
    step = 1 if k.step is None else int(k.step)
    if step <= 0:
        raise NkiUnsupportedError(f"slice step {step} on {t.describe()}: NKI views have positive steps")
    start = 0 if k.start is None else int(k.start)
    stop = n if k.stop is None else int(k.stop)
    start += n if start < 0 else 0
    stop += n if stop < 0 else 0
    if not (0 <= start < stop <= n):
        raise NkiLimitError(f"slice {start}:{stop} out of bounds (or empty) for dim {d} of size {n} of {t.describe()}")
    return start, stop, step
