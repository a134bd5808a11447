"""Find host syncs on the CPU: a dispatch mode that raises on every op that reads tensor values on the host.

On an XLA device (Trainium) a value read on the host (``.item()``, ``.tolist()``, ``int(t)``, ``if t:``,
``print(t)``) cuts the step's graph in two and waits for the device; an op whose output shape depends on
tensor values (``nonzero``, boolean indexing, ``unique``) does the same and compiles a new graph for every
new shape. On the CPU both are silent. Under :func:`forbid_host_sync` they raise :class:`HostSyncError`
naming the op, so the main test suite catches them without torch-xla.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch._library.custom_ops import _maybe_get_opdef
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Ops that copy a tensor's value to a Python scalar: `.item()`, `.tolist()`, `int()`, `float()`,
# `bool()` (`if t:`), printing. `Tensor.__bool__` and `torch.equal` reach the dispatcher as these.
_SCALAR_READS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default}

# Ops whose output shape depends on tensor values: XLA must sync to learn the shape.
_DYNAMIC_SHAPE = {
    aten.nonzero.default,
    aten.masked_select.default,
    aten.repeat_interleave.Tensor,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.bincount.default,  # the length is max(input) + 1
}


_SCALAR_ADVICE = (
    "(.item(), .tolist(), int(), bool(), `if tensor:`, print): on XLA this ends the graph and waits for the "
    "device; keep the value on the device (torch.where, masks) or move the read out of the step"
)


class HostSyncError(RuntimeError):
    """An op read tensor values on the host (see the module docstring)."""


# Tensor methods that read values on the host without an op (see `forbid_host_sync.__enter__`).
_DIRECT_READS = ("tolist", "numpy")


def _refuse_direct_read(name: str, method):
    def refuse(self, *args, **kwargs):
        if not self.is_meta:
            raise HostSyncError(f"Tensor.{name}() reads tensor values on the host: {_SCALAR_ADVICE}")
        return method(self, *args, **kwargs)

    return refuse


def _is_boolean_index(func, args) -> bool:
    """``t[mask]`` / ``t[mask] = v`` with a bool or uint8 mask: the dispatcher sees ``index`` with a mask."""
    if func not in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default):
        return False
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)


class forbid_host_sync(TorchDispatchMode):  # noqa: N801 - used as a context manager, like torch.no_grad
    """``with forbid_host_sync(): step()`` raises :class:`HostSyncError` at the first host sync.

    Args:
        allow: ``allow(tensor) -> bool``; a scalar read of a tensor it accepts is let through. Meant for
            tensors that live on the host on every device, such as the step counter of ``torch.optim``
            optimizers (``state["step"]`` is a CPU tensor unless ``capturable``), which is not a device sync.
    """

    def __init__(self, allow: Callable[[torch.Tensor], bool] | None = None):
        super().__init__()
        self.allow = allow
        self._depth = 0  # the mode re-enters itself around custom-op kernels (`_run_custom_op`)

    def __enter__(self):
        if self._depth == 0:
            # The dispatcher state outside the mode, to run custom-op kernels in (see `_run_custom_op`).
            self._outer_keys = (
                torch._C._dispatch_tls_local_include_set(),
                torch._C._dispatch_tls_local_exclude_set(),
            )
            # `.tolist()` and `.numpy()` of a CPU tensor read its memory without going through the
            # dispatcher (on XLA both copy from the device), so they are wrapped while the mode is on.
            self._saved_methods = {name: getattr(torch.Tensor, name) for name in _DIRECT_READS}
            for name, method in self._saved_methods.items():
                setattr(torch.Tensor, name, _refuse_direct_read(name, method))
        self._depth += 1
        return super().__enter__()

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            for name, method in self._saved_methods.items():
                setattr(torch.Tensor, name, method)
        return super().__exit__(*exc)

    def _run_custom_op(self, opdef, args, kwargs):
        """Run a ``torch.library.custom_op`` kernel with this mode watching the ops inside it.

        A mode's handler runs with every dispatch key above it excluded (autograd, functorch), so a kernel
        that uses ``torch.func`` (``bmojo::ssd_scan_backward`` takes a ``vjp``) fails there with "Cannot
        access storage of TensorWrapper". The kernel runs instead with the outer dispatcher state, without
        autograd (as a custom-op kernel always runs) and under this mode again, so its own ops are checked.
        """
        tensor = next((a for a in args if isinstance(a, torch.Tensor)), None)
        device = None if tensor is None else tensor.device.type
        kernel = opdef._backend_fns.get(device) or opdef._backend_fns.get(None) or opdef._init_fn
        with torch._C._ForceDispatchKeyGuard(*self._outer_keys), torch.no_grad(), self:
            return kernel(*args, **kwargs)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        opdef = _maybe_get_opdef(func._schema.name)
        if opdef is not None:
            return self._run_custom_op(opdef, args, kwargs)
        first = args[0] if args else None
        on_meta = isinstance(first, torch.Tensor) and first.is_meta
        if not on_meta:
            if func in _SCALAR_READS and not (self.allow is not None and self.allow(first)):
                raise HostSyncError(f"{func} reads a tensor value on the host: {_SCALAR_ADVICE}")
            if func in _DYNAMIC_SHAPE or _is_boolean_index(func, args):
                raise HostSyncError(
                    f"{func} has an output shape that depends on tensor values (nonzero, boolean indexing, "
                    "unique): on XLA it syncs and recompiles for every new shape; use a fixed-size form "
                    "(topk, gather, masked_fill, torch.where)"
                )
        return func(*args, **kwargs)


def optimizer_step_counters(optimizer: torch.optim.Optimizer) -> Callable[[torch.Tensor], bool]:
    """An ``allow`` for :class:`forbid_host_sync`: the host-side ``state["step"]`` tensors of ``optimizer``.

    Looked up at every call: the optimizer creates its state in its first ``step()``.
    """

    def allow(tensor) -> bool:
        return any(state.get("step") is tensor for state in optimizer.state.values())

    return allow


__all__ = ["HostSyncError", "forbid_host_sync", "optimizer_step_counters"]
