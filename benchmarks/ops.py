"""Op benchmarks of the torch path on CPU: chunked scan vs the sequential reference, and the peak memory of a
``bmojo`` layer as the sequence grows.

    python -m benchmarks.ops [--quick] [--threads 1 2]

- scan: forward + backward of ``ssd_scan`` (batch 1, 8 heads x 64, state 16, chunk 64: the SSM of the
  benchmark model) through the dispatcher, ``torch`` vs ``reference``, at T = 1024, 4096, 16384.
  Target: >= 30x at T = 4096.
- layer memory: peak resident memory added by one forward + backward of a ``bmojo`` decoder layer (the
  benchmark model's, batch 1) at T = 4096 and 16384. Target: ratio <= 4.5 (linear in T).

Every measurement runs in a fresh process with the given thread count (so that peak memory is its own);
results go to ``benchmarks/results/ops.{json,md}``. Times are wall clock, median of the repeats; other
processes on the machine add noise (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

SCAN_SHAPE = dict(batch=1, heads=8, head_dim=64, state=16, chunk=64)
SCAN_TARGET_T, SCAN_TARGET = 4096, 30.0
MEMORY_TARGET = 4.5


def _scan_job(job: dict) -> dict:
    import torch
    import torch.nn.functional as F

    from bmojo_neuron import ops

    torch.manual_seed(0)
    s, T = SCAN_SHAPE, job["seq"]
    x = torch.randn(s["batch"], T, s["heads"], s["head_dim"], requires_grad=True)
    dt = F.softplus(torch.randn(s["batch"], T, s["heads"]) - 2).requires_grad_()
    A = -torch.linspace(1, 16, s["heads"]).requires_grad_()
    B = torch.randn(s["batch"], T, s["heads"], s["state"], requires_grad=True)
    C = torch.randn(s["batch"], T, s["heads"], s["state"], requires_grad=True)
    D = torch.ones(s["heads"], requires_grad=True)

    def step():
        with ops.use_kernels(job["impl"]):
            y, h = ops.ssd_scan(x, dt, A, B, C, D, None, s["chunk"])
        (y.sum() + h.sum()).backward()

    times = []
    for i in range(job["repeats"] + job["warmup"]):
        start = time.perf_counter()
        step()
        if i >= job["warmup"]:
            times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times)}


def _layer_memory_job(job: dict) -> dict:
    import torch

    from benchmarks._common import current_rss_mb, peak_rss_mb
    from benchmarks.train_speed import bmojo_config
    from bmojo_neuron.layers import Tokens
    from bmojo_neuron.modeling_bmojo import BMojoDecoderLayer

    torch.manual_seed(0)
    config = bmojo_config("bmojo")
    layer = BMojoDecoderLayer(config, 0)
    T = job["seq"]
    hidden = torch.randn(1, T, config.hidden_size, requires_grad=True)
    baseline = current_rss_mb()
    start = time.perf_counter()
    out, aux = layer(hidden, Tokens.whole_sequence(config, T, hidden.dtype))
    (out.sum() + aux).backward()
    seconds = time.perf_counter() - start
    return {"peak_extra_mb": peak_rss_mb() - baseline, "seconds": seconds}


def worker(job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    result = {"scan": _scan_job, "layer_memory": _layer_memory_job}[job["kind"]](job)
    return {**job, **result}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter sequences, one repeat (a few minutes)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    from benchmarks._common import environment_info, run_worker, write_results

    meta = environment_info()
    print("\n".join(f"{k}: {v}" for k, v in meta.items()))
    scan_seqs = [1024, 4096] if args.quick else [1024, 4096, 16384]
    memory_seqs = [1024, 4096] if args.quick else [4096, 16384]
    rows = []
    for threads in args.threads:
        for T in scan_seqs:
            fast = run_worker("benchmarks.ops", dict(kind="scan", impl="torch", seq=T, warmup=1, repeats=3), threads)
            ref = run_worker("benchmarks.ops", dict(kind="scan", impl="reference", seq=T, warmup=0, repeats=1), threads)
            row = {"bench": "scan fwd+bwd", "threads": threads, "T": T, "torch_s": fast.get("seconds"),
                   "reference_s": ref.get("seconds")}  # fmt: skip
            if "seconds" in fast and "seconds" in ref:
                row["speedup"] = ref["seconds"] / fast["seconds"]
                if T == SCAN_TARGET_T:
                    row["target"] = f">= {SCAN_TARGET:g}x: {'met' if row['speedup'] >= SCAN_TARGET else 'MISSED'}"
            rows.append(row)
            print(row, flush=True)
        memory = {}
        for T in memory_seqs:
            res = run_worker("benchmarks.ops", dict(kind="layer_memory", seq=T), threads)
            memory[T] = res.get("peak_extra_mb")
            row = {"bench": "bmojo layer fwd+bwd", "threads": threads, "T": T, "peak_extra_mb": memory[T],
                   "layer_s": res.get("seconds"), "error": res.get("error", "")}  # fmt: skip
            rows.append(row)
            print(row, flush=True)
        small, large = memory_seqs
        if memory[small] and memory[large]:
            ratio = memory[large] / memory[small]
            verdict = f"<= {MEMORY_TARGET}: {'met' if ratio <= MEMORY_TARGET else 'MISSED'}"
            row = {"bench": f"memory ratio T={large}/T={small}", "threads": threads, "ratio": ratio, "target": verdict}
            rows.append(row)
            print(row, flush=True)
    name = "ops_quick" if args.quick else "ops"
    json_path, md_path = write_results(name, rows, {**meta, "scan_shape": SCAN_SHAPE, "quick": args.quick})
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
