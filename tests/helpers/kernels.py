"""Shared helpers for the kernel tests: SBUF tiles from arrays, relative error, SSD scan inputs."""

from __future__ import annotations

import numpy as np
import torch

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


def make_inputs(b, t, h, p, n, *, dtype=torch.float64, with_d=True, with_h0=True, seed=0):
    """SSD scan inputs ``(x, dt, A, B, C, D, h0)`` for batch b, length t, h heads of dim p, state n (D, h0 optional)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, h, p, generator=g, dtype=dtype)
    dt = torch.nn.functional.softplus(torch.randn(b, t, h, generator=g, dtype=dtype) - 1.0)
    A = -(torch.rand(h, generator=g, dtype=dtype) + 0.3)
    B = torch.randn(b, t, h, n, generator=g, dtype=dtype) / n**0.5
    C = torch.randn(b, t, h, n, generator=g, dtype=dtype)
    D = torch.randn(h, generator=g, dtype=dtype) if with_d else None
    h0 = torch.randn(b, h, p, n, generator=g, dtype=dtype) if with_h0 else None
    return x, dt, A, B, C, D, h0
