"""The one place that decides which implementation of an op runs.

Implementations register under an op name and an implementation name:

- ``reference``: plain, slow, obviously correct torch (the ground truth);
- ``torch``: the fast CPU/GPU path;
- ``sim``: the NKI kernel source run by our CPU interpreter of the NKI subset (``nki_kernels``);
- ``nki``: the NKI kernels on a Neuron device (needs the Neuron SDK): TorchNeuron custom ops on SDK >= 2.33
  (primary), PyTorch/XLA + torch-neuronx on SDK <= 2.31 (legacy); :mod:`.nki.device` picks the stack.

``BMOJO_KERNELS`` (``auto``, ``reference``, ``torch``, ``sim``, ``nki``) overrides the choice for the
whole process; :func:`use_kernels` overrides it inside a ``with`` block. ``auto`` picks ``nki`` for tensors
on an XLA/Neuron device when the SDK imports, ``torch`` elsewhere.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator

import torch

IMPLEMENTATIONS = ("reference", "torch", "sim", "nki")
MODES = ("auto", *IMPLEMENTATIONS)
ENV_VAR = "BMOJO_KERNELS"

# Modules that provide a mode's implementations (``implementations() -> {op: fn}``), imported by name the first
# time that mode is asked for. Lazy on purpose, and not to dodge an import circle (they do not import this
# module): ``sim`` needs the NumPy interpreter of ``nki_kernels`` and ``nki`` the Neuron SDK, optional
# dependencies with an import cost that a torch-only user should never pay or need installed.
_PROVIDERS = {
    "sim": "bmojo_neuron.ops.nki.sim",
    "nki": "bmojo_neuron.ops.nki.device",
}

_registry: dict[str, dict[str, Callable]] = {}
_override: list[str] = []


class KernelUnavailableError(RuntimeError):
    """The requested implementation of an op cannot run here."""


def register(op: str, impl: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` as implementation ``impl`` of ``op``."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {impl!r}; expected one of {IMPLEMENTATIONS}")

    def decorator(fn: Callable) -> Callable:
        _registry.setdefault(op, {})[impl] = fn
        return fn

    return decorator


def kernel_mode() -> str:
    """The requested mode: the innermost :func:`use_kernels` block, else ``BMOJO_KERNELS``, else ``auto``."""
    if _override:
        return _override[-1]
    mode = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR}={mode!r} is not valid; expected one of {', '.join(MODES)}")
    return mode


@contextlib.contextmanager
def use_kernels(mode: str) -> Iterator[None]:
    """Run the ops inside the block with implementation ``mode`` (same values as ``BMOJO_KERNELS``)."""
    if mode not in MODES:
        raise ValueError(f"kernel mode {mode!r} is not valid; expected one of {', '.join(MODES)}")
    _override.append(mode)
    try:
        yield
    finally:
        _override.pop()


def neuron_sdk_available() -> bool:
    """True when the real NKI package imports (the placeholder on the public index raises)."""
    try:
        importlib.import_module("nki")
    except Exception:  # noqa: BLE001 - placeholder packages raise all kinds of errors
        return False
    return True


def _on_neuron_device(tensors: tuple) -> bool:
    return any(isinstance(t, torch.Tensor) and t.device.type in ("xla", "neuron", "privateuseone") for t in tensors)


def _load_provider(impl: str) -> None:
    """Import the provider of mode ``impl`` (if it has one) and register its implementations."""
    name = _PROVIDERS.get(impl)
    if name is None:
        return
    try:
        module = importlib.import_module(name)
    except ImportError as err:
        raise KernelUnavailableError(f"implementation {impl!r} needs {name}, which failed to import: {err}") from err
    try:
        provided = module.implementations()
    except RuntimeError as err:  # e.g. no Neuron device stack: the provider says why
        raise KernelUnavailableError(f"implementation {impl!r} cannot run here: {err}") from err
    for op, fn in provided.items():
        register(op, impl)(fn)


def resolve(op: str, *tensors) -> Callable:
    """The implementation of ``op`` to run for ``tensors`` under the current mode."""
    mode = kernel_mode()
    if mode == "auto":
        mode = "nki" if _on_neuron_device(tensors) and neuron_sdk_available() else "torch"
    if mode == "nki" and not neuron_sdk_available():
        raise KernelUnavailableError(
            f"{ENV_VAR}=nki asks for the Neuron SDK, but `import nki` fails here; "
            "use 'sim' to run the NKI kernel source through the CPU interpreter"
        )
    impls = _registry.get(op)
    if impls is None:
        raise KeyError(f"no op named {op!r}; known ops: {sorted(_registry)}")
    if mode not in impls:
        _load_provider(mode)
    if mode not in impls:
        hint = ""
        if mode == "nki":
            hint = (
                "; no Neuron device stack was detected (TorchNeuron needs SDK >= 2.33 with torch_neuronx.nki_op, "
                "the legacy route torch-neuronx + torch-xla from SDK <= 2.31; see nki_kernels.sdk.STACKS)"
            )
        raise KernelUnavailableError(f"op {op!r} has no {mode!r} implementation (available: {sorted(impls)}){hint}")
    return impls[mode]


def available(op: str) -> list[str]:
    """Implementations registered for ``op`` so far (lazily loaded providers may add more)."""
    return sorted(_registry.get(op, {}))
