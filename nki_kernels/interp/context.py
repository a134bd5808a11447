"""The state of one kernel call: target, allocator, statistics, program id (for LNC2)."""

from __future__ import annotations

from contextlib import contextmanager

from .cost import Stats
from .errors import NkiUsageError
from .memory import Allocator
from .targets import resolve_target


class KernelContext:
    def __init__(self, target=None, num_programs: int = 1):
        self.target = resolve_target(target)
        self.allocator = Allocator(self.target)
        self.stats = Stats(self.target)
        self.program_id = 0
        self.num_programs = num_programs
        # shared_hbm allocations are shared by the program instances of an LNC2 launch: the k-th
        # shared_hbm allocation of every instance refers to the same storage.
        self.shared_storages: list = []
        self.shared_cursor = 0
        self.instruction_index = 0
        # nl.fori_loop bookkeeping: instruction names issued by the running loop bodies (innermost last) and
        # how many loops are past their first iteration (their instructions are already in the program).
        self.loop_stack: list[list[str]] = []
        self.replaying = 0

    def report(self):
        return self.stats.report(self.allocator)


_STACK: list[KernelContext] = []


def current() -> KernelContext:
    if not _STACK:
        raise NkiUsageError(
            "NKI API used outside a kernel call: call the kernel through nki.simulate(kernel)(...) "
            "(or open nki_kernels.interp.session() in tests)"
        )
    return _STACK[-1]


@contextmanager
def session(target=None, num_programs: int = 1):
    """Run NKI code eagerly outside ``nki.jit`` (used by tests); yields the :class:`KernelContext`."""
    ctx = KernelContext(target, num_programs)
    _STACK.append(ctx)
    try:
        yield ctx
    finally:
        _STACK.pop()
        ctx.allocator.close()
