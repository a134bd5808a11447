"""``nki.jit`` / ``nki.simulate`` for the interpreter, plus :func:`run_kernel` which also returns the cost report.

A kernel call wraps array arguments as HBM tensors (copies), runs the Python body eagerly (one instance per
logical core for ``kernel[2]``), checks that the returned outputs are fully written ``nl.shared_hbm``
tensors, copies them out, and writes back array arguments the kernel modified.
"""

from __future__ import annotations

import math

import numpy as np

from . import context
from .errors import NkiBufferError, NkiShardError, NkiUninitializedReadError, NkiUsageError
from .memory import Storage, hbm, shared_hbm
from .tensor import NkiTensor

_LAST_REPORT = None


class Kernel:
    """A ``@nki.jit`` function; ``kernel[lnc](...)`` selects 1 or 2 logical cores."""

    def __init__(self, fn, lnc: int = 1):
        self.fn = fn
        self.lnc = lnc
        self.__name__ = getattr(fn, "__name__", "kernel")
        self.__doc__ = getattr(fn, "__doc__", None)

    def __getitem__(self, lnc):
        if lnc not in (1, 2):
            raise NkiUsageError(f"kernel[{lnc}]: the launch grid is the LNC size, 1 or 2")
        return Kernel(self.fn, lnc)

    def __call__(self, *args, **kwargs):
        return simulate(self)(*args, **kwargs)


def jit(fn=None, **options):
    """Decorator. The interpreter has one mode - simulation - so ``mode=``/``platform_target=`` are rejected
    as in NKI 0.2+; other options are accepted and ignored."""
    for removed in ("mode", "platform_target"):
        if removed in options:
            raise NkiUsageError(f"nki.jit({removed}=...) was removed in the new NKI API")
    if fn is None:
        return lambda f: Kernel(f)
    return Kernel(fn)


def simulate(kernel, target=None):
    """``nki.simulate(kernel)(*args)``: run on the CPU interpreter; returns NumPy outputs (torch if given torch)."""
    if not isinstance(kernel, Kernel):
        kernel = Kernel(kernel)

    def runner(*args, **kwargs):
        out, report = run_kernel(kernel, *args, target=target, **kwargs)
        global _LAST_REPORT
        _LAST_REPORT = report
        return out

    return runner


def last_report():
    """The :class:`~.cost.RunReport` of the most recent ``nki.simulate`` call."""
    return _LAST_REPORT


def run_kernel(kernel, *args, target=None, **kwargs):
    """Run a kernel; return ``(outputs, RunReport)``. Outputs mirror the kernel's return structure."""
    if not isinstance(kernel, Kernel):
        kernel = Kernel(kernel)
    torch_mode = any(_is_torch(a) for a in list(args) + list(kwargs.values()))
    ctx = context.KernelContext(target, kernel.lnc)
    context._STACK.append(ctx)
    try:
        wrapped = [_wrap(a, i, ctx) for i, a in enumerate(args)]
        kw = {k: _wrap(v, k, ctx) for k, v in kwargs.items()}
        result = None
        for pid in range(kernel.lnc):
            ctx.program_id, ctx.shared_cursor = pid, 0
            r = kernel.fn(*[w for w, _ in wrapped], **{k: w for k, (w, _) in kw.items()})
            result = r if pid == 0 else result
        outputs = _collect(result, kernel.lnc)
        for w, orig in list(wrapped) + list(kw.values()):
            if isinstance(w, NkiTensor) and w.storage.dirty and orig is not None:
                _write_back(orig, w)
        report = ctx.report()
    finally:
        context._STACK.pop()
        ctx.allocator.close()
    if torch_mode:
        outputs = _to_torch(outputs)
    return outputs, report


def _is_torch(a) -> bool:
    return type(a).__module__.startswith("torch")


def _wrap(a, label, ctx):
    """Array-like argument -> HBM tensor (a copy); anything else is a compile-time constant."""
    orig = a
    if _is_torch(a):
        from . import torch_io

        a = torch_io.to_numpy(a)
    if isinstance(a, np.ndarray):
        st = Storage(hbm, a.shape if a.shape else (1,), a.dtype, f"arg{label}", ctx.allocator, data=a)
        shape = a.shape if a.shape else (1,)
        t = NkiTensor(st, shape, [math.prod(shape[i + 1 :]) for i in range(len(shape))], 0)
        return t, orig
    return a, None


def _collect(result, lnc: int = 1):
    if result is None:
        return None
    if isinstance(result, (tuple, list)):
        return type(result)(_collect(r, lnc) for r in result)
    if isinstance(result, dict):
        return {k: _collect(v, lnc) for k, v in result.items()}
    if not isinstance(result, NkiTensor):
        return result
    if result.buffer is not shared_hbm:
        raise NkiBufferError(
            f"kernel output {result.describe()} must be allocated with buffer=nl.shared_hbm (NKI 0.3+)"
        )
    w = result.written_view()
    if not w.all() and lnc > 1:
        raise NkiShardError(
            f"LNC shards leave a gap: {int((~w).sum())} element(s) of kernel output {result.describe()} were "
            f"written by none of the {lnc} programs; the shards must cover the work exactly once"
        )
    if not w.all():
        raise NkiUninitializedReadError(
            f"kernel output {result.describe()} has {int((~w).sum())} element(s) the kernel never wrote"
        )
    return np.array(result.np_view())


def _write_back(orig, t: NkiTensor) -> None:
    data = np.array(t.np_view())
    if _is_torch(orig):
        from . import torch_io

        orig.copy_(torch_io.to_torch(data).to(orig.dtype))
    else:
        orig[...] = data.reshape(orig.shape).astype(orig.dtype)


def _to_torch(out):
    from . import torch_io

    if isinstance(out, (tuple, list)):
        return type(out)(_to_torch(o) for o in out)
    if isinstance(out, np.ndarray):
        return torch_io.to_torch(out)
    return out
