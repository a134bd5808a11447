"""A NumPy interpreter of the NKI subset our kernels use (new ``import nki`` API, NKI 0.3+).

It stands in for ``nki`` when the Neuron SDK is absent: ``nki_kernels.interp`` plays ``nki``,
``interp.language`` plays ``nki.language`` and ``interp.isa`` plays ``nki.isa``. Kernels execute eagerly,
instruction by instruction. Beyond the official simulator it checks SBUF/PSUM capacity per target, PSUM
bank placement of matmul outputs, reads of uninitialised memory, and it counts per-engine work and
estimates time (:mod:`.cost`).
"""

from . import isa, language
from .context import KernelContext, session
from .cost import RunReport
from .errors import (
    NkiBufferError,
    NkiCapacityError,
    NkiDtypeError,
    NkiError,
    NkiLimitError,
    NkiShardError,
    NkiUninitializedReadError,
    NkiUnsupportedError,
    NkiUsageError,
)
from .jit import Kernel, jit, last_report, run_kernel, simulate
from .targets import TARGETS, Target, resolve_target

__all__ = [
    "isa",
    "language",
    "jit",
    "simulate",
    "run_kernel",
    "last_report",
    "session",
    "Kernel",
    "KernelContext",
    "RunReport",
    "Target",
    "TARGETS",
    "resolve_target",
    "NkiError",
    "NkiLimitError",
    "NkiShardError",
    "NkiCapacityError",
    "NkiBufferError",
    "NkiUninitializedReadError",
    "NkiDtypeError",
    "NkiUsageError",
    "NkiUnsupportedError",
]
