"""Kernel benchmark on the NKI interpreter: program size, DMA shape, PSUM use and estimated time vs a roofline.

    python -m benchmarks.kernels [--quick]

Per kernel at T = 2048 and 8192 (batch 8, heads 8, head dim 64, state 128, chunk 128, bf16 forward / fp32
backward), trn2, one launch with the LNC grid of the kernel's form:

* ``before``: the kernels of commit AUDIT_COMMIT (the state the API audit looked at), loaded from git; launched
  as they were, ``kernel(...)`` = LNC 1 (one physical core does all 64 (batch, head) pairs), on a trn2 model
  with all 8 PSUM banks (they need 8);
* ``after``: the current kernels, ``kernel[2]`` (LNC 2: each of the two physical cores takes 32 pairs).

Columns: instructions per launch (the program: an ``nl.fori_loop`` body counts once; per core), executed
instructions, DMA transfers and their bytes per partition (median, and the share >= 2 KiB), PSUM banks,
the estimated time under the cost model v2 (1.3 us fixed cost per DMA transfer, per-engine bandwidth) and
under the old model v1 (bytes / bandwidth), the roofline of the cores used, and ``ratio = est / roofline``.

NO Neuron hardware was used: every time is the interpreter's cost-model ESTIMATE (nki_kernels/interp/cost.py),
not a measurement; see nki_kernels/README.md for what the model leaves out.

Interpreting a whole launch (64 pairs, up to 330k instructions before) is slow, so each kernel runs with one
and with two (batch, head) pairs, and the launch is extrapolated linearly: per-pair cost = (2 pairs) - (1
pair), launch = (1 pair) + (pairs per core - 1) x per-pair. The kernels' pairs are independent and identical
in cost, which the two runs check (the extrapolation is exact for instruction and DMA counts).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import ml_dtypes
import numpy as np

from benchmarks._common import environment_info, write_results
from nki_kernels.interp import run_kernel
from nki_kernels.interp.cost import DMA_ENGINES, DMA_FIXED_OVERLAP, DMA_FIXED_US
from nki_kernels.interp.targets import TRN2

AUDIT_COMMIT = "dada286"  # nki_kernels/ as audited on 2026-12-01 (docs/nki.md, "The 2026-12 audit")
SHAPE = dict(batch=8, heads=8, head_dim=64, state=128, chunk=128)
LENGTHS = (2048, 8192)
KERNEL_FILES = ("__init__", "_tiles", "_scan_common", "ssd_scan_fwd", "ssd_scan_bwd", "gather_rows", "eidetic_select")
# Eidetic memory kernels: batch rows are the independent work; rows gathered = n_chunks * slots.
MEMORY_SHAPE = dict(batch=8, feat=256, chunk=64, slots=32, topk=16)
ROOT = Path(__file__).resolve().parent.parent


def load_before_kernels(commit: str = AUDIT_COMMIT):
    """The scan kernels of ``commit`` as a temporary package (None if git cannot show them)."""
    tmp = Path(tempfile.mkdtemp(prefix="kernels_before_"))
    pkg = tmp / "bmojo_kernels_before"
    pkg.mkdir()
    for name in KERNEL_FILES:
        out = subprocess.run(
            ["git", "show", f"{commit}:nki_kernels/kernels/{name}.py"], capture_output=True, text=True, cwd=ROOT
        )
        if out.returncode != 0:
            return None
        (pkg / f"{name}.py").write_text(out.stdout)
    sys.path.insert(0, str(tmp))
    mods = {n: importlib.import_module(f"bmojo_kernels_before.{n}") for n in KERNEL_FILES[3:]}
    return {
        "ssd_scan_fwd": mods["ssd_scan_fwd"].ssd_scan_fwd_kernel,
        "ssd_scan_bwd": mods["ssd_scan_bwd"].ssd_scan_bwd_kernel,
        "gather_rows": mods["gather_rows"].gather_rows_kernel,
        "scatter_add_rows": mods["gather_rows"].scatter_add_rows_kernel,
        "eidetic_select": mods["eidetic_select"].eidetic_select_kernel,
    }


def scan_inputs(batch, heads, T, dtype, rng):
    P, N = SHAPE["head_dim"], SHAPE["state"]
    x = rng.standard_normal((batch, T, heads, P)).astype(dtype)
    dt = np.log1p(np.exp(rng.standard_normal((batch, T, heads)) - 1)).astype(np.float32)
    A = -(rng.random(heads) + 0.3).astype(np.float32)
    B = (rng.standard_normal((batch, T, heads, N)) / np.sqrt(N)).astype(dtype)
    C = rng.standard_normal((batch, T, heads, N)).astype(dtype)
    return x, dt, A, B, C, np.ones(heads, np.float32), np.zeros((batch, heads, P, N), np.float32)


def roofline(T, pairs, cores, backward, target=TRN2):
    """max(matmul FLOPs / TensorE peak, compulsory HBM bytes / DMA bandwidth) for ``pairs`` (b, h) pairs spread
    over ``cores`` physical cores (bf16 forward, fp32 backward)."""
    P, N, L = SHAPE["head_dim"], SHAPE["state"], SHAPE["chunk"]
    flops = 0
    for t0 in range(0, T, L):
        n = min(L, T - t0)
        if backward:
            flops += 2 * n * n * (N + P) + 2 * n * n * P + 2 * n * N * P + 4 * (n * n * N + n * N * P) + 4 * n * N * P
        else:
            flops += 2 * n * n * N + 2 * n * n * P + 4 * n * N * P
    if backward:
        nbytes = T * (3 * P + 2 * N) * 4 + T * (2 * P + 2 * N) * 4 + 2 * T * 4 + 3 * P * N * 4
        peak = target.tensor_tflops_fp32
    else:
        nbytes = T * (2 * P + 2 * N) * 2 + T * 4 + 2 * P * N * 4
        peak = target.tensor_tflops_bf16
    per_core = pairs / cores
    t_flops = flops * per_core / (peak * 1e12) * 1e6
    t_bytes = nbytes * per_core / (target.dma_gbps * 1e9) * 1e6
    return max(t_flops, t_bytes), "compute" if t_flops >= t_bytes else "memory"


def memory_roofline(name, T, rows, cores, target=TRN2):
    """Compulsory HBM bytes at DMA bandwidth (these kernels do no algorithmic matmul work)."""
    m = MEMORY_SHAPE
    n = math.ceil(T / m["chunk"]) * m["slots"]
    per_row = {
        "gather_rows": 2 * n * m["feat"] * 2 + n * 4,
        "scatter_add_rows": n * m["feat"] * 2 + n * 4 + T * m["feat"] * 4,
        "eidetic_select": T * 4 + 5 * n,
    }[name]
    return per_row * rows / cores / (target.dma_gbps * 1e9) * 1e6, "memory"


def _run_memory(name, kernel, route):
    def run(lnc, T, rows, target, rng):
        m = MEMORY_SHAPE
        n = math.ceil(T / m["chunk"]) * m["slots"]
        idx = rng.integers(0, T, (rows, n)).astype(np.int32)
        k = kernel if lnc == 1 else kernel[lnc]
        if name == "gather_rows":
            src = rng.standard_normal((rows, T, m["feat"])).astype(ml_dtypes.bfloat16)
            return run_kernel(k, src, idx, route, target=target)[1]
        if name == "scatter_add_rows":
            grad = rng.standard_normal((rows, n, m["feat"])).astype(ml_dtypes.bfloat16)
            return run_kernel(k, grad, idx, T, target=target)[1]
        scores = rng.standard_normal((rows, T)).astype(np.float32)
        return run_kernel(k, scores, m["chunk"], m["topk"], m["slots"], "topk", 1, target=target)[1]

    return run


def _scan_run(kernel, backward):
    def run(lnc, T, pairs, target, rng):
        return _run(kernel, lnc, T, pairs, backward, target, rng)

    return run


def _run(kernel, lnc, T, pairs, backward, target, rng):
    """One launch with ``pairs`` (batch, head) pairs (batch = pairs, heads = 1)."""
    dtype = np.float32 if backward else ml_dtypes.bfloat16
    args = scan_inputs(pairs, 1, T, dtype, rng)
    k = kernel if lnc == 1 else kernel[lnc]
    if backward:
        gy = rng.standard_normal(args[0].shape).astype(np.float32)
        _, rep = run_kernel(k, *args, gy, None, SHAPE["chunk"], target=target)
    else:
        _, rep = run_kernel(k, *args, SHAPE["chunk"], target=target)
    return rep


def _extrapolate(one, two, pairs_per_core):
    """Launch figures from the 1-pair and 2-pair runs (see the module docstring)."""
    k = pairs_per_core - 1

    def lin(a, b):
        return a + k * (b - a)

    engines = {e: lin(one.engine_time_us[e], two.engine_time_us[e]) for e in one.engine_time_us}
    dma_v1 = lin(one.dma_time_v1_us, two.dma_time_v1_us)
    per_pair = Counter(two.dma_bytes_per_partition) - Counter(one.dma_bytes_per_partition)
    transfers = Counter(one.dma_bytes_per_partition)
    for size, count in per_pair.items():
        transfers[size] += k * count
    sizes = sorted(transfers.elements())
    return {
        "instructions_per_launch": int(lin(one.static_instructions, two.static_instructions)),
        "executed_instructions": int(lin(*(sum(e["instructions"] for e in r.engines.values()) for r in (one, two)))),
        "dma_transfers": len(sizes),
        "dma_B_per_partition_median": int(statistics.median(sizes)),
        "dma_share_ge_2KiB": round(sum(s >= 2048 for s in sizes) / len(sizes), 3),
        "psum_banks": max(one.psum_peak_banks, two.psum_peak_banks),
        "sbuf_peak_B": max(one.sbuf_peak_bytes_per_partition, two.sbuf_peak_bytes_per_partition),
        "engine_us": {e: round(v, 1) for e, v in engines.items()},
        "est_us": max(engines.values()),
        "est_v1_us": max([dma_v1] + [v for e, v in engines.items() if e != "dma"]),
    }


def bench(name, run, form, lnc, T, pairs, roof_fn, target, rng):
    """``run(lnc, T, items, target, rng)`` -> report; ``pairs`` independent work items per launch."""
    t_wall = time.perf_counter()
    # one program of an LNC-2 launch: its share of the items (the interpreter runs both programs; the report
    # sums them, so run 2 and 4 items for 1 and 2 items per core)
    one = run(lnc, T, lnc, target, rng)
    two = run(lnc, T, 2 * lnc, target, rng)
    if lnc > 1:  # per-core figures: the programs are identical, divide the summed counts
        one, two = _per_core(one, lnc), _per_core(two, lnc)
    fig = _extrapolate(one, two, pairs // lnc)
    roof, bound = roof_fn(T, pairs, lnc)
    return {
        "kernel": name,
        "form": form,
        "T": T,
        "lnc": lnc,
        **{k: v for k, v in fig.items() if k != "engine_us"},
        "roofline_us": round(roof, 1),
        "bound": bound,
        "ratio": round(fig["est_us"] / roof, 2),
        "ratio_v1": round(fig["est_v1_us"] / roof, 2),
        "est_us": round(fig["est_us"], 1),
        "est_v1_us": round(fig["est_v1_us"], 1),
        "engine_us": fig["engine_us"],
        "interp_wall_s": round(time.perf_counter() - t_wall, 1),
    }


def _per_core(rep, lnc):
    """Per-program figures of an LNC launch whose programs do identical work (counts divided by ``lnc``)."""
    engines = {e: {k: v // lnc for k, v in c.items()} for e, c in rep.engines.items()}
    sizes = Counter(rep.dma_bytes_per_partition)
    per = []
    for size, count in sizes.items():
        per += [size] * (count // lnc)
    return dataclasses.replace(
        rep,
        engines=engines,
        engine_time_us={e: v / lnc for e, v in rep.engine_time_us.items()},
        dma_time_v1_us=rep.dma_time_v1_us / lnc,
        static_instructions=rep.static_instructions // lnc,
        dma_bytes_per_partition=per,
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T = 2048 only")
    args = ap.parse_args(argv)
    lengths = LENGTHS[:1] if args.quick else LENGTHS
    rng = np.random.default_rng(0)
    from nki_kernels.kernels.ssd_scan_bwd import ssd_scan_bwd_kernel
    from nki_kernels.kernels.ssd_scan_fwd import ssd_scan_fwd_kernel

    before = load_before_kernels()
    before_target = dataclasses.replace(TRN2, psum_banks=8)  # the old forward keeps 8 banks live
    from nki_kernels.kernels.eidetic_select import eidetic_select_kernel
    from nki_kernels.kernels.gather_rows import gather_rows_kernel, scatter_add_rows_kernel

    after = {
        "ssd_scan_fwd": ssd_scan_fwd_kernel,
        "ssd_scan_bwd": ssd_scan_bwd_kernel,
        "gather_rows": gather_rows_kernel,
        "scatter_add_rows": scatter_add_rows_kernel,
        "eidetic_select": eidetic_select_kernel,
    }
    pairs = SHAPE["batch"] * SHAPE["heads"]
    rows = []
    before_label = f"before ({AUDIT_COMMIT})"
    for backward in (False, True):
        name = "ssd_scan_bwd" if backward else "ssd_scan_fwd"

        def roof(T, items, cores, backward=backward):
            return roofline(T, items, cores, backward)

        for T in lengths:
            if before is not None:
                run = _scan_run(before[name], backward)
                rows.append(bench(name, run, before_label, 1, T, pairs, roof, before_target, rng))
            rows.append(bench(name, _scan_run(after[name], backward), "after", 2, T, pairs, roof, TRN2, rng))
    # the old device gather defaulted to the one-hot route ("trn1"); now indirect DMA is the default
    for name, route_before, route_after in (
        ("gather_rows", "onehot", "indirect"),
        ("scatter_add_rows", None, None),
        ("eidetic_select", None, None),
    ):

        def roof(T, items, cores, name=name):
            return memory_roofline(name, T, items, cores)

        for T in lengths:
            if before is not None:
                run = _run_memory(name, before[name], route_before)
                form = before_label + (f" {route_before}" if route_before else "")
                rows.append(bench(name, run, form, 1, T, MEMORY_SHAPE["batch"], roof, before_target, rng))
            form = "after" + (f" {route_after}" if route_after else "")
            run = _run_memory(name, after[name], route_after)
            rows.append(bench(name, run, form, 2, T, MEMORY_SHAPE["batch"], roof, TRN2, rng))
    meta = environment_info()
    meta.update(
        target="trn2",
        shape=SHAPE,
        memory_shape=MEMORY_SHAPE,
        before_commit=AUDIT_COMMIT if before is not None else "unavailable (git show failed): no before rows",
        cost_model=(
            f"v2: {DMA_FIXED_US} us fixed per DMA transfer, {DMA_FIXED_OVERLAP} overlapping, bandwidth per "
            f"engine over min({DMA_ENGINES}, partitions); v1: bytes / aggregate bandwidth"
        ),
        note=(
            "no Neuron hardware: times are the interpreter's cost-model ESTIMATES, not measurements; launch "
            "figures extrapolated from 1- and 2-pair runs (module docstring)"
        ),
    )
    print("NKI interpreter ESTIMATES on trn2 (no hardware timing)")
    for k in ("git_sha", "git_dirty", "python", "torch", "numpy", "platform", "machine"):
        print(f"  {k}: {meta[k]}")
    head = (
        f"{'kernel':16s} {'form':26s} {'T':>5s} {'lnc':>3s} {'instr/launch':>12s} {'executed':>9s} {'DMAs':>6s} "
        f"{'B/part med':>10s} {'>=2KiB':>6s} {'PSUM':>4s} {'est us':>8s} {'est v1':>8s} {'roof us':>8s} "
        f"{'ratio':>5s} {'ratio v1':>8s}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['kernel']:16s} {r['form']:26s} {r['T']:5d} {r['lnc']:3d} {r['instructions_per_launch']:12d} "
            f"{r['executed_instructions']:9d} {r['dma_transfers']:6d} {r['dma_B_per_partition_median']:10d} "
            f"{r['dma_share_ge_2KiB']:6.2f} {r['psum_banks']:4d} {r['est_us']:8.1f} {r['est_v1_us']:8.1f} "
            f"{r['roofline_us']:8.1f} {r['ratio']:5.2f} {r['ratio_v1']:8.2f}"
        )
    flat = [{k: (str(v) if isinstance(v, dict) else v) for k, v in r.items()} for r in rows]
    json_path, md_path = write_results("kernels_trn2", flat, meta)
    print(f"wrote {json_path} and {md_path}")
    return rows


if __name__ == "__main__":
    main()
