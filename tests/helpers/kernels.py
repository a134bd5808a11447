"""Shared helpers for the kernel tests."""

from __future__ import annotations

import numpy as np

from nki_kernels.interp import isa as nisa
from nki_kernels.interp import language as nl


def sbuf_from(arr: np.ndarray, dtype=None, name: str = "in"):
    """An SBUF tile holding ``arr`` (loaded by DMA from an HBM copy); call inside ``interp.session()``."""
    hbm = nl.ndarray(arr.shape, dtype or arr.dtype, buffer=nl.hbm, name=name + "_hbm")
    hbm.np_view()[...] = arr
    hbm.written_view()[...] = True
    tile = nl.ndarray(arr.shape, dtype or arr.dtype, name=name)
    nisa.dma_copy(dst=tile, src=hbm)
    return tile


def value(t) -> np.ndarray:
    """The current contents of a tensor as a NumPy array (fp32 for floats)."""
    a = np.array(t.np_view())
    return a.astype(np.float32) if a.dtype.kind == "V" or str(a.dtype) == "bfloat16" else a


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
