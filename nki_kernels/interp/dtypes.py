"""NKI dtypes as NumPy dtypes, and the casts the hardware performs.

Rules (docs/nki.md, "Numerics"): arithmetic reads every input as fp32, computes in fp32 and
rounds once to the destination dtype; bf16/fp16 rounding is round-to-nearest-even (``ml_dtypes``); fp32 to
integer rounds to nearest even and saturates (not NumPy's truncation and wrap-around).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

float32 = np.dtype(np.float32)
bfloat16 = np.dtype(ml_dtypes.bfloat16)
float16 = np.dtype(np.float16)
int32 = np.dtype(np.int32)
uint32 = np.dtype(np.uint32)
int16 = np.dtype(np.int16)
uint16 = np.dtype(np.uint16)
int8 = np.dtype(np.int8)
uint8 = np.dtype(np.uint8)
bool_ = np.dtype(np.bool_)  # stored as one byte, like NKI's uint8 bool

FLOAT_DTYPES = (float32, bfloat16, float16)
INT_DTYPES = (int32, uint32, int16, uint16, int8, uint8)
ALL_DTYPES = FLOAT_DTYPES + INT_DTYPES + (bool_,)


def as_dtype(dt) -> np.dtype:
    """Normalise a dtype argument (NumPy dtype, type or name) and reject dtypes NKI does not have."""
    try:
        d = np.dtype(dt)
    except TypeError as e:
        raise TypeError(f"not a dtype: {dt!r}") from e
    if d not in ALL_DTYPES:
        raise TypeError(
            f"dtype {d} is not supported by the NKI interpreter (supported: {[str(x) for x in ALL_DTYPES]})"
        )
    return d


def is_float(dt) -> bool:
    return np.dtype(dt) in FLOAT_DTYPES


def is_int(dt) -> bool:
    return np.dtype(dt) in INT_DTYPES


def to_f32(values) -> np.ndarray:
    """Read values the way the ALUs do: as fp32."""
    return np.asarray(values).astype(np.float32)


def cast(values, dt) -> np.ndarray:
    """Round fp32 (or any) values to ``dt`` as the hardware does on write."""
    dt = np.dtype(dt)
    v = np.asarray(values)
    if dt in FLOAT_DTYPES:
        return v.astype(np.float32).astype(dt)
    if dt == bool_:
        return v != 0
    if v.dtype.kind in "iub":
        info = np.iinfo(dt)
        return np.clip(v.astype(np.int64), info.min, info.max).astype(dt)
    info = np.iinfo(dt)
    f = np.rint(v.astype(np.float64))
    f = np.nan_to_num(f, nan=0.0, posinf=info.max, neginf=info.min)
    return np.clip(f, info.min, info.max).astype(dt)


def sentinel(dt):
    """Fill value of uninitialised memory: NaN for floats, 4 for integers (like the official simulator)."""
    return np.nan if is_float(dt) else (True if np.dtype(dt) == bool_ else 4)
