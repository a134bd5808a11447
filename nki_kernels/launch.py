"""How every kernel is launched: one LNC degree for the whole process, the same one neuronx-cc compiles for.

On Trn2/Trn3 neuronx-cc defaults to ``--lnc 2`` (one logical core = 2 physical cores) while a kernel called as
``kernel(...)`` defaults to LNC 1; a mismatch is error NCC_EVRF066 from NKI 0.7. So the degree comes from one
place, ``NEURON_LOGICAL_NC_CONFIG`` (the runtime/compiler setting; default 2), and every launch is
``kernel[lnc](...)``: the kernels split their independent (batch, head) work over ``nl.program_id(0)`` /
``nl.num_programs()``. The CPU interpreter runs the same grid (one program instance after the other) and
checks that the programs' output writes cover every element exactly once.
"""

from __future__ import annotations

import os

LNC_ENV = "NEURON_LOGICAL_NC_CONFIG"
DEFAULT_LNC = 2  # neuronx-cc's default on Trn2 and later
LNC_DEGREES = (1, 2)


def lnc_degree() -> int:
    """The LNC degree: ``NEURON_LOGICAL_NC_CONFIG`` (1 or 2), else 2."""
    raw = os.environ.get(LNC_ENV, "").strip()
    if not raw:
        return DEFAULT_LNC
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value not in LNC_DEGREES:
        raise ValueError(f"{LNC_ENV}={raw!r}: the logical core degree must be one of {LNC_DEGREES}")
    return value


def compiler_flags() -> list[str]:
    """neuronx-cc flags that must accompany the kernels' launch grid (``NEURON_CC_FLAGS``)."""
    return [f"--lnc={lnc_degree()}"]


def grid(kernel):
    """``kernel[lnc]``: the kernel with its launch grid set to the process's LNC degree."""
    return kernel[lnc_degree()]
