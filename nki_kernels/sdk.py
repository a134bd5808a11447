"""Which Neuron device stack is installed, and which SDK / PyTorch / Python versions go together.

Detection only imports (guarded): the PyPI ``nki``, ``torch-neuronx`` and ``neuronx-cc`` are placeholders
whose import raises ImportError ("WRONG PACKAGE"); the real packages come from the Neuron package index
(``pip install --extra-index-url https://pip.repos.neuron.amazonaws.com ...``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

STACK_ENV = "BMOJO_NKI_STACK"  # force "torchneuron" or "xla" when both would import
NEURON_INDEX = "https://pip.repos.neuron.amazonaws.com"


@dataclass(frozen=True)
class Stack:
    name: str
    neuron_sdk: str
    pytorch: str
    python: str
    kernel_ops: str
    status: str


STACKS = (
    Stack(
        name="torchneuron",
        neuron_sdk=">= 2.33 (NKI 0.7)",
        pytorch="2.13 or 2.14 (torch-neuronx 2.13.3.0 / 2.14.3.0; device 'neuron')",
        python="3.12 - 3.14",
        kernel_ops="torch_neuronx.nki_op custom ops + torch.library.register_autograd (nki_kernels.torchneuron_ops)",
        status="primary",
    ),
    Stack(
        name="xla",
        neuron_sdk="2.27 - 2.31 (torch-neuronx last shipped in 2.31)",
        pytorch="<= 2.9 (PyTorch/XLA + torch-neuronx)",
        python="3.10 - 3.11 (the Neuron DLC images)",
        kernel_ops="@nki.jit kernels called with XLA tensors inside torch.autograd.Function (bmojo_neuron.ops.nki.device)",
        status="legacy (PyTorch/XLA training unsupported since SDK 2.30)",
    ),
)


def detect_stack() -> str | None:
    """``"torchneuron"``, ``"xla"`` or None (no real Neuron SDK importable)."""
    from nki_kernels._nki import HAVE_REAL_NKI

    forced = os.environ.get(STACK_ENV, "").strip().lower()
    if forced and forced not in ("torchneuron", "xla"):
        raise ValueError(f"{STACK_ENV}={forced!r}: expected 'torchneuron' or 'xla'")
    if not HAVE_REAL_NKI:
        return None
    try:
        import torch_neuronx
    except Exception:  # noqa: BLE001 - placeholders raise ImportError; broken installs anything
        return None
    has_nki_op = hasattr(torch_neuronx, "nki_op")
    if forced == "torchneuron" or (not forced and has_nki_op):
        return "torchneuron" if has_nki_op else None
    try:
        import torch_xla  # noqa: F401
    except Exception:  # noqa: BLE001
        return None
    return "xla"


def version_table_markdown() -> str:
    """The version table the README and the Dockerfile comment repeat."""
    rows = ["| stack | Neuron SDK | PyTorch | Python | kernel ops | status |", "|---|---|---|---|---|---|"]
    for s in STACKS:
        rows.append(f"| {s.name} | {s.neuron_sdk} | {s.pytorch} | {s.python} | {s.kernel_ops} | {s.status} |")
    return "\n".join(rows)
