"""NKI kernels (new ``import nki`` API), importing NKI only through :mod:`nki_kernels._nki`."""
