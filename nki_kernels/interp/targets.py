"""Hardware targets the interpreter can model (limits and peak figures: docs/nki.md, "Hardware limits").

Select one with the ``target=`` argument of :func:`nki_kernels.interp.run_kernel` / ``simulate``, or the
environment: ``BMOJO_NKI_TARGET`` (``trn2`` | ``trn3``; ``trn1`` = legacy NeuronCore-v2 model), else the
official ``NEURON_PLATFORM_TARGET_OVERRIDE`` (``trn2|gen3`` / ``trn3|gen4`` / ``trn1|gen2``), else ``trn2``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import NkiUsageError

KIB = 1024
# PSUM has 8 banks of 2 KiB per partition, but ``nl.tile_size.psum_num_banks`` is 7 when bank 7 is reserved
# for PE transposes (NKI_DMA_TRANSPOSE_AS_PE_TRANSPOSE on trn2+); the interpreter enforces the stricter 7.
PSUM_PHYSICAL_BANKS = 8
PSUM_USABLE_BANKS = 7


@dataclass(frozen=True)
class Target:
    """Limits and peak rates of one NeuronCore generation (one NeuronCore, not the whole device)."""

    name: str
    nc_version: str  # "gen2" (NeuronCore-v2, trn1) / "gen3" (NeuronCore-v3, trn2)
    pmax: int  # partitions of SBUF and PSUM
    sbuf_bytes_per_partition: int  # usable SBUF per partition (KLR `total_available_sbuf_size`)
    psum_banks: int  # usable banks (nl.tile_size.psum_num_banks), see PSUM_USABLE_BANKS
    psum_bank_bytes: int  # per partition; 512 fp32
    gemm_k_max: int  # contraction (partition) size of nc_matmul
    gemm_stationary_fmax: int  # free size M of the stationary operand
    gemm_moving_fmax: int  # free size N of the moving operand
    clock_ghz: dict = field(default_factory=dict)  # engine name -> GHz
    tensor_tflops_bf16: float = 0.0  # dense TensorE peak, per NeuronCore
    tensor_tflops_fp32: float = 0.0
    dma_gbps: float = 0.0  # aggregate DMA bandwidth of the 16 DMA engines of one NeuronCore
    scalar_bias_allowed: bool = False  # activation(bias=<python float>) is trn2+
    # Indirect (vector_offset) DMA on trn1 is UNCERTAIN in the new API (docs/nki.md, "Open questions"):
    # kernels use a tensor-engine route there instead.
    indirect_dma_certain: bool = False

    @property
    def psum_bytes_per_partition(self) -> int:
        return self.psum_banks * self.psum_bank_bytes


# TensorE peaks (docs/nki.md, "Hardware limits") are per NeuronCore: a 128x128 PE array, 2 FLOPs per PE per cycle at the
# PE clock (128 * 128 * 2 * 2.8 GHz = 92 TFLOPS on trn1; at 2.4 GHz = 79 TFLOPS on trn2); fp32 runs at 1/4.
TRN1 = Target(
    name="trn1",
    nc_version="gen2",
    pmax=128,
    sbuf_bytes_per_partition=180224,
    psum_banks=PSUM_USABLE_BANKS,
    psum_bank_bytes=2 * KIB,
    gemm_k_max=128,
    gemm_stationary_fmax=128,
    gemm_moving_fmax=512,
    clock_ghz={"tensor": 2.8, "vector": 1.12, "scalar": 1.4, "gpsimd": 1.4},
    tensor_tflops_bf16=92.0,
    tensor_tflops_fp32=23.0,
    dma_gbps=272.0,
    scalar_bias_allowed=False,
    indirect_dma_certain=False,
)

TRN2 = Target(
    name="trn2",
    nc_version="gen3",
    pmax=128,
    sbuf_bytes_per_partition=212984,
    psum_banks=PSUM_USABLE_BANKS,
    psum_bank_bytes=2 * KIB,
    gemm_k_max=128,
    gemm_stationary_fmax=128,
    gemm_moving_fmax=512,
    clock_ghz={"tensor": 2.4, "vector": 0.96, "scalar": 1.2, "gpsimd": 1.2},
    tensor_tflops_bf16=79.0,
    tensor_tflops_fp32=20.0,
    dma_gbps=368.0,
    scalar_bias_allowed=True,
    indirect_dma_certain=True,
)

# trn3 (NeuronCore-v4): docs/nki.md, "Hardware limits". SBUF per partition is UNCERTAIN for SDK 2.32 (KLR figure);
# the moving free size is kept at 512 (the trn3 fp32-dst limit is larger, the kernels do not use it).
TRN3 = Target(
    name="trn3",
    nc_version="gen4",
    pmax=128,
    sbuf_bytes_per_partition=245752,
    psum_banks=PSUM_USABLE_BANKS,
    psum_bank_bytes=2 * KIB,
    gemm_k_max=128,
    gemm_stationary_fmax=128,
    gemm_moving_fmax=512,
    clock_ghz={"tensor": 2.4, "vector": 1.2, "scalar": 1.2, "gpsimd": 1.2},
    tensor_tflops_bf16=79.0,
    tensor_tflops_fp32=20.0,
    dma_gbps=528.0,
    scalar_bias_allowed=True,
    indirect_dma_certain=True,
)

# Kernel targets are trn2 and trn3 (current NKI supports Trainium2/3 only). TRN1 stays as a legacy model of
# NeuronCore-v2 (trn1 / inf2) for the interpreter's own tests; no kernel route defaults to it.
TARGETS = {"trn1": TRN1, "trn2": TRN2, "trn3": TRN3}
KERNEL_TARGETS = ("trn2", "trn3")
_OVERRIDE_ALIASES = {
    "trn1": "trn1",
    "gen2": "trn1",
    "inf2": "trn1",
    "trn2": "trn2",
    "gen3": "trn2",
    "trn3": "trn3",
    "gen4": "trn3",
}
DEFAULT_TARGET = "trn2"


def resolve_target(target: str | Target | None = None) -> Target:
    """Return the Target chosen by argument, ``BMOJO_NKI_TARGET``, ``NEURON_PLATFORM_TARGET_OVERRIDE`` or default."""
    if isinstance(target, Target):
        return target
    name = target or os.environ.get("BMOJO_NKI_TARGET") or os.environ.get("NEURON_PLATFORM_TARGET_OVERRIDE")
    if not name:
        return TARGETS[DEFAULT_TARGET]
    key = _OVERRIDE_ALIASES.get(str(name).strip().lower())
    if key is None:
        raise NkiUsageError(f"unknown NKI target {name!r}; the interpreter models {sorted(TARGETS)}")
    return TARGETS[key]
