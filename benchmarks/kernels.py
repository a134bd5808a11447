"""Kernel benchmark on the NKI interpreter: per-engine counts, DMA bytes, estimated time vs a roofline.

    python -m benchmarks.kernels [--target trn2] [--quick]

No Neuron hardware was available: every time here is the interpreter's cost-model estimate
(``nki_kernels/interp/cost.py``), not a measurement. The roofline of an op is
``max(algorithmic FLOPs / TensorE peak, compulsory HBM bytes / DMA bandwidth)`` at the target's peak
figures (per NeuronCore); ``ratio = estimate / roofline`` (1.0 = at the roofline; target for the scan: <= 2).
The estimate assumes the engines overlap perfectly (the busiest engine sets the time); the serial sum
of all engines is printed as well.
"""

from __future__ import annotations

import argparse
import math
import time

import ml_dtypes
import numpy as np

from benchmarks._common import environment_info, write_results
from nki_kernels.interp import run_kernel
from nki_kernels.interp.targets import resolve_target
from nki_kernels.kernels.gather_rows import gather_route, gather_rows_kernel, scatter_add_rows_kernel
from nki_kernels.kernels.ssd_scan_bwd import ssd_scan_bwd_kernel
from nki_kernels.kernels.ssd_scan_fwd import ssd_scan_fwd_kernel

# Mamba-2-like head: head_dim 64, state 128, chunk 128; one (batch, head) pair - cost is linear in both.
SCAN_SHAPE = dict(batch=1, heads=1, head_dim=64, state=128, chunk=128)
GATHER_SHAPE = dict(batch=1, feat=256, chunk=64, slots=32)  # rows gathered = n_chunks * slots


def scan_fwd_roofline(T, P, N, L, itemsize, target, fp32):
    """Algorithmic matmul FLOPs of the chunked scan and its compulsory HBM traffic (one batch x head)."""
    flops = 0
    for t0 in range(0, T, L):
        n = min(L, T - t0)
        flops += 2 * n * n * N + 2 * n * n * P + 2 * n * N * P + 2 * n * N * P  # C.B, intra, inter, state
    nbytes = T * (2 * P + 2 * N) * itemsize + T * 4 + 2 * P * N * 4  # x, y, B, C; dt; h0, h_T
    return _roofline(flops, nbytes, target, fp32)


def scan_bwd_roofline(T, P, N, L, target):
    flops = 0
    for t0 in range(0, T, L):
        n = min(L, T - t0)
        # C.B, x.dy, g B (intra + inter), dC (intra + inter), dB (intra + inter), Gc update (2 layouts)
        flops += 2 * n * n * (N + P) + 2 * n * n * P + 2 * n * N * P + 2 * (n * n * N + n * N * P) * 2 + 4 * n * N * P
    nbytes = T * (3 * P + 2 * N) * 4 + T * (2 * P + 2 * N) * 4 + 2 * T * 4 + 3 * P * N * 4
    return _roofline(flops, nbytes, target, fp32=True)


def _roofline(flops, nbytes, target, fp32):
    peak = (target.tensor_tflops_fp32 if fp32 else target.tensor_tflops_bf16) * 1e12
    t_flops, t_bytes = flops / peak * 1e6, nbytes / (target.dma_gbps * 1e9) * 1e6
    return {
        "flops": flops,
        "bytes": nbytes,
        "roofline_us": max(t_flops, t_bytes),
        "bound": "compute" if t_flops >= t_bytes else "memory",
    }


def _scan_inputs(T, dtype, rng):
    s = SCAN_SHAPE
    b, h, P, N = s["batch"], s["heads"], s["head_dim"], s["state"]
    x = rng.standard_normal((b, T, h, P)).astype(dtype)
    dt = np.log1p(np.exp(rng.standard_normal((b, T, h)) - 1)).astype(np.float32)
    A = -(rng.random(h) + 0.3).astype(np.float32)
    B = (rng.standard_normal((b, T, h, N)) / np.sqrt(N)).astype(dtype)
    C = rng.standard_normal((b, T, h, N)).astype(dtype)
    return x, dt, A, B, C, np.ones(h, np.float32), np.zeros((b, h, P, N), np.float32)


def _row(name, T, dtype, rep, roof, wall):
    row = {"kernel": name, "T": T, "dtype": dtype, "target": rep.target}
    for e in ("tensor", "vector", "scalar", "gpsimd", "dma"):
        row[f"{e}_instr"] = rep.engines[e]["instructions"]
        row[f"{e}_us"] = round(rep.engine_time_us[e], 3)
    row.update(
        dma_bytes=rep.dma_bytes,
        dma_effective_bytes=rep.dma_effective_bytes,
        est_us=round(rep.est_time_us, 3),
        serial_us=round(rep.serial_time_us, 3),
        roofline_us=round(roof["roofline_us"], 3),
        bound=roof["bound"],
        ratio=round(rep.est_time_us / roof["roofline_us"], 2),
        sbuf_peak_B=rep.sbuf_peak_bytes_per_partition,
        psum_peak_banks=rep.psum_peak_banks,
        interp_wall_s=round(wall, 2),
    )
    return row


def bench_scan(T, dtype_name, target, rng, backward=False):
    s = SCAN_SHAPE
    dtype = ml_dtypes.bfloat16 if dtype_name == "bf16" else np.float32
    args = _scan_inputs(T, dtype, rng)
    t0 = time.perf_counter()
    if backward:
        f32 = [a.astype(np.float32) for a in args]
        gy = rng.standard_normal(args[0].shape).astype(np.float32)
        _, rep = run_kernel(ssd_scan_bwd_kernel, *f32, gy, None, s["chunk"], target=target)
        roof = scan_bwd_roofline(T, s["head_dim"], s["state"], s["chunk"], target)
    else:
        _, rep = run_kernel(ssd_scan_fwd_kernel, *args, s["chunk"], target=target)
        roof = scan_fwd_roofline(
            T, s["head_dim"], s["state"], s["chunk"], np.dtype(dtype).itemsize, target, fp32=dtype_name == "fp32"
        )
    return _row("ssd_scan_bwd" if backward else "ssd_scan_fwd", T, dtype_name, rep, roof, time.perf_counter() - t0)


def bench_gather(T, target, rng, route=None, backward=False):
    g = GATHER_SHAPE
    n = math.ceil(T / g["chunk"]) * g["slots"]
    src = rng.standard_normal((g["batch"], T, g["feat"])).astype(ml_dtypes.bfloat16)
    idx = rng.integers(0, T, (g["batch"], n)).astype(np.int32)
    t0 = time.perf_counter()
    item = 2
    if backward:
        grad = rng.standard_normal((g["batch"], n, g["feat"])).astype(ml_dtypes.bfloat16)
        _, rep = run_kernel(scatter_add_rows_kernel, grad, idx, T, target=target)
        nbytes, name = n * g["feat"] * item + n * 4 + T * g["feat"] * 4, "scatter_add_rows(onehot)"
    else:
        route = route or gather_route(target.name)
        _, rep = run_kernel(gather_rows_kernel, src, idx, route, target=target)
        nbytes, name = 2 * n * g["feat"] * item + n * 4, f"gather_rows({route})"
    roof = _roofline(0, nbytes, target, fp32=False)
    return _row(name, T, "bf16", rep, roof, time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default=None, help="trn1 | trn2 (default: BMOJO_NKI_TARGET or trn2)")
    ap.add_argument("--quick", action="store_true", help="T = 2048 only")
    args = ap.parse_args(argv)
    target = resolve_target(args.target)
    rng = np.random.default_rng(0)
    lengths = (2048,) if args.quick else (2048, 8192)
    rows = []
    for T in lengths:
        for dtype_name in ("bf16", "fp32"):
            rows.append(bench_scan(T, dtype_name, target, rng))
    rows.append(bench_scan(2048, "fp32", target, rng, backward=True))
    for T in lengths:
        rows.append(bench_gather(T, target, rng))
        if gather_route(target.name) != "onehot":
            rows.append(bench_gather(T, target, rng, route="onehot"))
    rows.append(bench_gather(2048, target, rng, backward=True))
    meta = environment_info()
    meta.update(
        target=target.name,
        scan_shape=SCAN_SHAPE,
        gather_shape=GATHER_SHAPE,
        note="no Neuron hardware: times are the interpreter's cost-model estimates, not measurements",
    )
    print(f"NKI interpreter estimates on {target.name} (no real hardware timing)")
    for k in ("git_sha", "python", "torch", "numpy", "platform", "machine"):
        print(f"  {k}: {meta[k]}")
    head = (
        f"{'kernel':26s} {'T':>5s} {'dtype':5s} {'PE us':>8s} {'DVE us':>8s} {'ACT us':>8s} {'POOL us':>8s} "
        f"{'DMA us':>8s} {'DMA MB':>7s} {'est us':>9s} {'roof us':>8s} {'ratio':>6s}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['kernel']:26s} {r['T']:5d} {r['dtype']:5s} {r['tensor_us']:8.2f} {r['vector_us']:8.2f} "
            f"{r['scalar_us']:8.2f} {r['gpsimd_us']:8.2f} {r['dma_us']:8.2f} {r['dma_bytes'] / 1e6:7.2f} "
            f"{r['est_us']:9.2f} {r['roofline_us']:8.2f} {r['ratio']:6.2f}"
        )
    json_path, md_path = write_results(f"kernels_{target.name}", rows, meta)
    print(f"wrote {json_path} and {md_path}")
    return rows


if __name__ == "__main__":
    main()
