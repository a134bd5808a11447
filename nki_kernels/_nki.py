"""The one place kernels get NKI from: the real SDK when it imports, our interpreter otherwise.

Kernels do ``from nki_kernels._nki import nki, nl, nisa`` so their source is identical on both.
Set ``BMOJO_NKI_INTERP=1`` to force the interpreter even when the SDK is installed.
"""

from __future__ import annotations

import os


def _real_nki():
    """Return (nki, nki.language, nki.isa) of the Neuron SDK, or None if it is absent or a placeholder."""
    if os.environ.get("BMOJO_NKI_INTERP") == "1":
        return None
    try:
        import nki as real  # the PyPI `nki` is a placeholder that raises on import
        import nki.isa as real_isa
        import nki.language as real_nl

        required = {
            real: ("jit", "simulate"),
            real_nl: ("ndarray", "shared_hbm", "sbuf", "psum"),
            real_isa: ("nc_matmul",),
        }
        missing = [a for mod, attrs in required.items() for a in attrs if not hasattr(mod, a)]
        if missing:
            return None
    except Exception:  # ImportError, or anything a placeholder package raises
        return None
    return real, real_nl, real_isa


_found = _real_nki()
HAVE_REAL_NKI = _found is not None
if _found is not None:
    nki, nl, nisa = _found
else:
    from nki_kernels import interp as nki
    from nki_kernels.interp import isa as nisa
    from nki_kernels.interp import language as nl

# Chunk loops of the scan kernels run as hardware loops (nl.fori_loop, NKI 0.6+ / SDK 2.32+) when the API has
# them; otherwise (SDK <= 2.31) they unroll. BMOJO_NKI_UNROLL=1 forces the unrolled form. Read once at import:
# kernels see it as a compile-time global.
DYNAMIC_LOOPS = hasattr(nl, "fori_loop") and os.environ.get("BMOJO_NKI_UNROLL") != "1"

__all__ = ["nki", "nl", "nisa", "HAVE_REAL_NKI", "DYNAMIC_LOOPS"]
