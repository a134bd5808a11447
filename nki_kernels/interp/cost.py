"""Instruction counting and the cost model behind the interpreter's time estimate.

Per instruction the interpreter records, on the engine that runs it, one instruction, the elements it
writes, and a cycle count from the formulas of NKI_REFERENCE.md §3 (from the NKI ISA docstrings, SDK ~2.24;
``N`` = elements per partition, ``MIN_II`` = 64):

===========================  =========  ========================================================
instruction                  engine     cycles
===========================  =========  ========================================================
activation, tensor_scalar    scalar /   ``max(MIN_II, N)``
tensor_copy, memset          vector     ``max(MIN_II, N)``
tensor_tensor,               vector     ``max(MIN_II, 2N)``; ``max(MIN_II, N)`` when one input is in PSUM
scalar_tensor_tensor                    or both are bf16 in SBUF
tensor_tensor_scan           vector     ``max(MIN_II, 2N)``
tensor_reduce                vector     ``max(MIN_II, N)``
max8, nc_find_index8,        vector     ``max(MIN_II, N)``
nc_match_replace8
iota                         gpsimd     ``150 + N``
affine_select, nc_n_gather   gpsimd     ``max(MIN_II, N)`` (assumption: no published formula)
nc_matmul                    tensor     ``max(min(64, M), N_moving)``, x4 when the operands are fp32
nc_transpose (TensorE)       tensor     ``max(P, min(64, F))``
===========================  =========  ========================================================

Cycles become time at the engine clock of the target. DMA time is ``effective_bytes / dma_gbps`` with
``effective_bytes`` = the sum over contiguous runs of ``max(run_bytes, DMA_MIN_RUN_BYTES)`` - our assumption
(no published figure) that a DMA moves at least 64 bytes per descriptor element, so element-strided
(transposing) DMAs are charged for what they waste. Not modelled: DMA latency (assumes enough DMAs in
flight), dependency stalls between back-to-back instructions (~100 cycles each on VectorE per the trn1
guide), semaphore waits, and trn1's SBUF/PSUM port sharing between engines.

Two totals are reported: ``est_time_us`` = the busiest engine (engines run concurrently and the
scheduler overlaps independent work - a lower bound) and ``serial_time_us`` = the sum over engines
(nothing overlaps - an upper bound).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

MIN_II = 64
DMA_MIN_RUN_BYTES = 64
ENGINES = ("tensor", "vector", "scalar", "gpsimd", "dma")


@dataclass
class EngineCount:
    instructions: int = 0
    elements: int = 0
    cycles: int = 0


@dataclass
class RunReport:
    """What one kernel call cost, per engine, under the model above."""

    target: str
    engines: dict
    dma_bytes: int
    dma_effective_bytes: int
    matmul_flops: int
    engine_time_us: dict
    est_time_us: float
    serial_time_us: float
    sbuf_peak_bytes_per_partition: int
    psum_peak_banks: int
    instruction_counts: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"target {self.target}: est {self.est_time_us:.2f} us (serial {self.serial_time_us:.2f} us)"]
        for e in ENGINES:
            c = self.engines[e]
            lines.append(
                f"  {e:7s} instr {c['instructions']:7d}  elements {c['elements']:12d}  "
                f"time {self.engine_time_us[e]:10.3f} us"
            )
        lines.append(
            f"  dma bytes {self.dma_bytes} (effective {self.dma_effective_bytes}); matmul FLOPs {self.matmul_flops}"
        )
        lines.append(
            f"  peak SBUF {self.sbuf_peak_bytes_per_partition} B/partition, peak PSUM {self.psum_peak_banks} banks"
        )
        return "\n".join(lines)


class Stats:
    """Accumulates counts during a kernel call."""

    def __init__(self, target):
        self.target = target
        self.engines = {e: EngineCount() for e in ENGINES}
        self.dma_bytes = 0
        self.dma_effective_bytes = 0
        self.matmul_flops = 0
        self.instruction_counts: dict[str, int] = {}

    def record(self, instr: str, engine: str, elements: int, cycles: int, flops: int = 0) -> None:
        c = self.engines[engine]
        c.instructions += 1
        c.elements += int(elements)
        c.cycles += int(cycles)
        self.matmul_flops += int(flops)
        self.instruction_counts[instr] = self.instruction_counts.get(instr, 0) + 1

    def record_dma(self, instr: str, elements: int, nbytes: int, run_bytes: int) -> None:
        c = self.engines["dma"]
        c.instructions += 1
        c.elements += int(elements)
        self.dma_bytes += int(nbytes)
        runs = max(1, -(-nbytes // max(1, run_bytes)))
        self.dma_effective_bytes += (
            runs * max(run_bytes, DMA_MIN_RUN_BYTES) if run_bytes < nbytes else max(nbytes, DMA_MIN_RUN_BYTES)
        )
        self.instruction_counts[instr] = self.instruction_counts.get(instr, 0) + 1

    def report(self, allocator) -> RunReport:
        t = self.target
        times = {}
        for e in ENGINES:
            if e == "dma":
                times[e] = self.dma_effective_bytes / (t.dma_gbps * 1e3)  # bytes / (GB/s) -> us
            else:
                times[e] = self.engines[e].cycles / (t.clock_ghz[e] * 1e3)  # cycles / GHz -> us
        return RunReport(
            target=t.name,
            engines={e: asdict(c) for e, c in self.engines.items()},
            dma_bytes=self.dma_bytes,
            dma_effective_bytes=self.dma_effective_bytes,
            matmul_flops=self.matmul_flops,
            engine_time_us=times,
            est_time_us=max(times.values()),
            serial_time_us=sum(times.values()),
            sbuf_peak_bytes_per_partition=allocator.sbuf_peak,
            psum_peak_banks=allocator.psum_peak_banks,
            instruction_counts=dict(sorted(self.instruction_counts.items())),
        )


def elementwise_cycles(n: int) -> int:
    return max(MIN_II, n)


def tensor_tensor_cycles(n: int, fast: bool) -> int:
    return max(MIN_II, n if fast else 2 * n)


def matmul_cycles(m: int, n_moving: int, fp32: bool) -> int:
    return max(min(64, m), n_moving) * (4 if fp32 else 1)


def pe_transpose_cycles(p: int, f: int) -> int:
    return max(p, min(64, f))
