"""``nl.fori_loop``: a loop the hardware runs, so its body is ONE copy of instructions in the program.

The interpreter runs the body once per iteration (values must be right), but counts its instructions once
for the static program size (``RunReport.static_instructions``), and checks every iteration issues the same
instruction sequence (a hardware loop cannot change its body per iteration). The loop index is an
:class:`NkiScalar`: it supports integer arithmetic and is used as ``.ap(..., scalar_offset=i)``; using it
as a Python int (a slice bound, a range, a branch) raises, since the traced kernel has no value for it.
"""

from __future__ import annotations

from .context import current
from .errors import NkiUsageError


class NkiScalar:
    """A runtime integer (loop register). Arithmetic with ints gives NkiScalars; no conversion to int."""

    __slots__ = ("_value",)

    def __init__(self, value: int):
        self._value = int(value)

    def _lift(self, other, op):
        if isinstance(other, NkiScalar):
            other = other._value
        if not isinstance(other, int) or isinstance(other, bool):
            return NotImplemented
        return NkiScalar(op(self._value, other))

    def __add__(self, o):
        return self._lift(o, lambda a, b: a + b)

    __radd__ = __add__

    def __sub__(self, o):
        return self._lift(o, lambda a, b: a - b)

    def __rsub__(self, o):
        return self._lift(o, lambda a, b: b - a)

    def __mul__(self, o):
        return self._lift(o, lambda a, b: a * b)

    __rmul__ = __mul__

    def _refuse(self, *_):
        raise NkiUsageError(
            "a loop register (nl.fori_loop index) has no value at trace time: use it as .ap(..., scalar_offset=i), "
            "not as a Python int (slice bound, range, branch)"
        )

    __index__ = __int__ = __bool__ = __lt__ = __le__ = __gt__ = __ge__ = __floordiv__ = __mod__ = _refuse

    def runtime_value(self) -> int:
        """The value on the (simulated) device, for the interpreter's own address computation."""
        return self._value

    def __repr__(self) -> str:
        return "NkiScalar(<runtime>)"


def fori_loop(lower, upper, body_fun, step=1):
    """Run ``body_fun(i)`` for ``i`` in ``range(lower, upper, step)`` as one hardware loop (see module doc)."""
    if not isinstance(step, int) or step <= 0:
        raise NkiUsageError(f"nl.fori_loop: step must be a compile-time positive int, got {step!r}")
    lo = lower.runtime_value() if isinstance(lower, NkiScalar) else int(lower)
    hi = upper.runtime_value() if isinstance(upper, NkiScalar) else int(upper)
    ctx = current()
    first = None
    for k, i in enumerate(range(lo, hi, step)):
        ctx.loop_stack.append([])
        ctx.replaying += k > 0
        try:
            body_fun(NkiScalar(i))
        finally:
            ctx.replaying -= k > 0
            issued = ctx.loop_stack.pop()
        if ctx.loop_stack:  # nested loop: the outer body records what this loop issued
            ctx.loop_stack[-1].extend(issued)
        if first is None:
            first = issued
        elif issued != first:
            raise NkiUsageError(
                f"nl.fori_loop: iteration {k} issued {len(issued)} instruction(s) "
                f"({_diff(first, issued)}), the first issued {len(first)}; a hardware loop body is one fixed "
                "instruction sequence (branch on compile-time values only)"
            )


def _diff(a, b) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at #{i}: {x} vs {y}"
    return "one is a prefix of the other"
