"""Exceptions raised by the NKI interpreter.

Every violation names the instruction, the operand, the limit and the offending value, so a failing
kernel says what to change. All of them derive from :class:`NkiError`.
"""

from __future__ import annotations


class NkiError(Exception):
    """Base class of every error the interpreter raises."""


class NkiLimitError(NkiError):
    """A hardware limit is exceeded: partition count, matmul tile size, PSUM bank, capacity, bounds."""


class NkiCapacityError(NkiLimitError):
    """An allocation does not fit in SBUF or PSUM of the selected target."""


class NkiBufferError(NkiError):
    """An instruction reads or writes a memory it cannot access (e.g. DMA from PSUM)."""


class NkiUninitializedReadError(NkiError):
    """An instruction reads memory that nothing has written since it was allocated."""


class NkiDtypeError(NkiError):
    """An operand has a dtype the instruction does not accept."""


class NkiUsageError(NkiError, TypeError):
    """The API is called in a way NKI rejects (wrong argument type, enum given as int, ...)."""


class NkiUnsupportedError(NkiError, NotImplementedError):
    """A valid NKI feature that this interpreter does not implement."""


def limit_error(instr: str, operand: str, limit_name: str, limit, value) -> NkiLimitError:
    """Build the standard message: ``<instr>: operand '<operand>' <limit_name> is <value>, limit <limit>``."""
    return NkiLimitError(f"{instr}: operand '{operand}' {limit_name} is {value}, limit is {limit}")


class NkiShardError(NkiError):
    """The programs of an LNC launch overlap (write the same output element) or leave a gap."""
