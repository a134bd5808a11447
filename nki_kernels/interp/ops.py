"""ALU and activation operators (``nl.add``, ``nl.exp``, ...) as tokens passed to ISA instructions.

Each token carries its fp32 NumPy semantics. Calling a token directly (NKI's high-level ``nl.add(a, b)``
convenience wrappers) is not implemented: kernels here use ``nisa`` instructions with explicit ``dst``.
"""

from __future__ import annotations

import numpy as np

from .errors import NkiUnsupportedError


class Op:
    """An operator token. ``binary``/``unary``: fp32 NumPy functions; ``reduce``: ufunc for reductions."""

    def __init__(self, name, binary=None, unary=None, reduce=None):
        self.name = name
        self.binary = binary
        self.unary = unary
        self.reduce = reduce

    def __repr__(self) -> str:
        return f"nl.{self.name}"

    def __call__(self, *args, **kwargs):
        raise NkiUnsupportedError(
            f"nl.{self.name}(...) as a high-level function is not implemented by the interpreter; "
            "pass it as the op of an nisa instruction"
        )


def _cmp(fn):
    return lambda a, b: fn(a, b).astype(np.float32)


def _f32(fn):
    return lambda x: fn(x).astype(np.float32)


add = Op("add", binary=np.add, reduce=np.add)
subtract = Op("subtract", binary=np.subtract)
multiply = Op("multiply", binary=np.multiply, reduce=np.multiply)
maximum = Op("maximum", binary=np.maximum, reduce=np.maximum)
minimum = Op("minimum", binary=np.minimum, reduce=np.minimum)
divide = Op("divide", binary=np.divide)
power = Op("power", binary=np.power)
equal = Op("equal", binary=_cmp(np.equal))
not_equal = Op("not_equal", binary=_cmp(np.not_equal))
greater = Op("greater", binary=_cmp(np.greater))
greater_equal = Op("greater_equal", binary=_cmp(np.greater_equal))
less = Op("less", binary=_cmp(np.less))
less_equal = Op("less_equal", binary=_cmp(np.less_equal))
logical_and = Op("logical_and", binary=_cmp(lambda a, b: (a != 0) & (b != 0)))
logical_or = Op("logical_or", binary=_cmp(lambda a, b: (a != 0) | (b != 0)))
logical_xor = Op("logical_xor", binary=_cmp(lambda a, b: (a != 0) ^ (b != 0)))

# Activation functions (ScalarE). The hardware evaluates piecewise polynomials with documented valid input
# ranges (docs/nki.md: log [2^-64, 2^64], sqrt [2^-116, 2^118], rsqrt [2^-87, 2^97], reciprocal
# +-[2^-42, 2^42]; exp valid everywhere); the interpreter evaluates them exactly in fp32.
copy = Op("copy", unary=lambda x: x)
exp = Op("exp", unary=_f32(np.exp))
log = Op("log", unary=_f32(np.log))
square = Op("square", unary=_f32(np.square))
sigmoid = Op("sigmoid", unary=_f32(lambda x: 1.0 / (1.0 + np.exp(-x))))
relu = Op("relu", unary=_f32(lambda x: np.maximum(x, 0.0)))
silu = Op("silu", unary=_f32(lambda x: x / (1.0 + np.exp(-x))))
tanh = Op("tanh", unary=_f32(np.tanh))
softplus = Op("softplus", unary=_f32(lambda x: np.logaddexp(0.0, x)))
sqrt = Op("sqrt", unary=_f32(np.sqrt))
rsqrt = Op("rsqrt", unary=_f32(lambda x: 1.0 / np.sqrt(x)))
reciprocal = Op("reciprocal", unary=_f32(lambda x: 1.0 / x))
abs = Op("abs", unary=_f32(np.abs))
sign = Op("sign", unary=_f32(np.sign))
