"""Instruction counting and the cost model behind the interpreter's time estimate.

Per instruction the interpreter records, on the engine that runs it, one instruction, the elements it
writes, and a cycle count from the formulas in docs/nki.md, "Hardware limits" (from the NKI ISA docstrings, SDK ~2.24;
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

Cycles become time at the engine clock of the target. DMA (model v2, the default since issue 15), per transfer:

    time = DMA_FIXED_US / DMA_FIXED_OVERLAP  +  effective_bytes / (min(16, partitions) x per-engine bandwidth)

* ``DMA_FIXED_US`` = 1.3 us: the documented per-transfer cost (descriptor setup, synchronisation and
  semaphore-to-start latency, ~1300 ns; NKI DMA bandwidth guide, SDK 2.32). It is what makes small transfers
  (< 2 KiB per partition) overhead-bound. ``DMA_FIXED_OVERLAP`` = 4 is OUR assumption: a kernel keeps about
  four transfers in flight, so four fixed costs overlap (the guide gives no figure; 1 would be a fully
  serial kernel, 16 one transfer per DMA engine).
* data: a transfer spreads its partitions over at most the 16 DMA engines of a NeuronCore, each moving
  ``dma_gbps / 16`` (23 B/ns on trn2; "fewer partitions means fewer engines utilized").
* ``effective_bytes`` = the sum over contiguous runs of ``max(run_bytes, DMA_MIN_RUN_BYTES)`` - our
  assumption (no published figure) that a descriptor element moves at least 64 bytes, so element-strided
  DMAs are charged for what they waste.

Model v1 (before issue 15; kept in the report as ``dma_time_v1_us`` / ``est_time_v1_us`` for comparison):
``effective_bytes / dma_gbps``, no fixed cost, all 16 engines on every transfer.

Not modelled: dependency stalls between back-to-back instructions (~100 cycles each on VectorE per the trn1
guide), semaphore waits between engines, DMA queue contention, HBM channel effects, ScalarE's piecewise
polynomial activations (accuracy, not time), trn1's SBUF/PSUM port sharing, and anything the compiler's
scheduler does (it may do better or worse than "engines overlap perfectly").

Two totals are reported: ``est_time_us`` = the busiest engine (engines run concurrently and the
scheduler overlaps independent work - a lower bound) and ``serial_time_us`` = the sum over engines
(nothing overlaps - an upper bound).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

MIN_II = 64
DMA_MIN_RUN_BYTES = 64
DMA_FIXED_US = 1.3  # per-transfer cost, NKI DMA bandwidth guide (SDK 2.32)
DMA_FIXED_OVERLAP = 4  # our assumption: transfers in flight whose fixed costs overlap
DMA_ENGINES = 16
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
    static_instructions: int = 0  # program size: nl.fori_loop bodies counted once
    dma_transfers: int = 0
    dma_bytes_per_partition: list = field(default_factory=list)  # one entry per transfer
    dma_time_v1_us: float = 0.0  # old model: bytes / bandwidth only
    est_time_v1_us: float = 0.0  # busiest engine with the old DMA model

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
        self.static_instructions = 0
        self.dma_per_partition: list[int] = []
        self.dma_time_v2_us = 0.0

    def count_static(self, ctx, instr: str) -> None:
        """Program size: an instruction inside nl.fori_loop counts once, not once per iteration."""
        if ctx is not None:
            if ctx.loop_stack:
                ctx.loop_stack[-1].append(instr)
            if ctx.replaying:
                return
        self.static_instructions += 1

    def record(self, instr: str, engine: str, elements: int, cycles: int, flops: int = 0, ctx=None) -> None:
        self.count_static(ctx, instr)
        c = self.engines[engine]
        c.instructions += 1
        c.elements += int(elements)
        c.cycles += int(cycles)
        self.matmul_flops += int(flops)
        self.instruction_counts[instr] = self.instruction_counts.get(instr, 0) + 1

    def record_dma(self, instr: str, elements: int, nbytes: int, run_bytes: int, partitions: int = 1, ctx=None) -> None:
        self.count_static(ctx, instr)
        c = self.engines["dma"]
        c.instructions += 1
        c.elements += int(elements)
        self.dma_bytes += int(nbytes)
        runs = max(1, -(-nbytes // max(1, run_bytes)))
        eff = runs * max(run_bytes, DMA_MIN_RUN_BYTES) if run_bytes < nbytes else max(nbytes, DMA_MIN_RUN_BYTES)
        self.dma_effective_bytes += eff
        self.instruction_counts[instr] = self.instruction_counts.get(instr, 0) + 1
        parts = max(1, int(partitions))
        self.dma_per_partition.append(int(nbytes) // parts)
        engine_bw = self.target.dma_gbps / DMA_ENGINES * 1e3  # bytes per us per engine
        self.dma_time_v2_us += DMA_FIXED_US / DMA_FIXED_OVERLAP + eff / (min(DMA_ENGINES, parts) * engine_bw)

    def report(self, allocator) -> RunReport:
        t = self.target
        times = {}
        for e in ENGINES:
            if e == "dma":
                times[e] = self.dma_time_v2_us
            else:
                times[e] = self.engines[e].cycles / (t.clock_ghz[e] * 1e3)  # cycles / GHz -> us
        dma_v1 = self.dma_effective_bytes / (t.dma_gbps * 1e3)  # bytes / (GB/s) -> us
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
            static_instructions=self.static_instructions,
            dma_transfers=len(self.dma_per_partition),
            dma_bytes_per_partition=list(self.dma_per_partition),
            dma_time_v1_us=dma_v1,
            est_time_v1_us=max([dma_v1] + [v for k, v in times.items() if k != "dma"]),
        )


def elementwise_cycles(n: int) -> int:
    return max(MIN_II, n)


def tensor_tensor_cycles(n: int, fast: bool) -> int:
    return max(MIN_II, n if fast else 2 * n)


def matmul_cycles(m: int, n_moving: int, fp32: bool) -> int:
    return max(min(64, m), n_moving) * (4 if fp32 else 1)


def pe_transpose_cycles(p: int, f: int) -> int:
    return max(p, min(64, f))
