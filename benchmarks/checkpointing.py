"""Gradient checkpointing: peak training memory and step time with and without it, side by side.

    python -m benchmarks.checkpointing [--seqs 4096] [--models bmojo ssm] [--threads 2]

The train-speed benchmark's ~10M-parameter models (``benchmarks.train_speed``), one training step (forward,
loss, backward, AdamW) on one sequence of T tokens in fp32, each (model, T, checkpointing) in a fresh process.
``peak_extra_mb`` is the resident memory the steps add on top of the model and optimizer; the figures that
matter are the ratios ``off / on`` for memory and ``on / off`` for time, measured in one run.
Results: ``benchmarks/results/checkpointing.{json,md}``.
"""

from __future__ import annotations

import argparse
import json


def ratios(rows: list[dict]) -> list[dict]:
    """Per (model, seq, threads): memory saved (off / on) and time paid (on / off)."""
    by_key = {(r["model"], r["seq"], r["threads"], r["checkpointing"]): r for r in rows if "error" not in r}
    out = []
    for (model, seq, threads, on), row in by_key.items():
        off = by_key.get((model, seq, threads, False))
        if not on or off is None:
            continue
        out.append({
            "model": model, "seq": seq, "threads": threads,
            "memory_off_over_on": round(off["peak_extra_mb"] / max(row["peak_extra_mb"], 1e-9), 2),
            "time_on_over_off": round(row["step_s"] / off["step_s"], 2),
        })  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seqs", type=int, nargs="+", default=[4096], help="sequence lengths (default 4096)")
    parser.add_argument("--models", nargs="+", default=["bmojo"], help="B'MOJO layer types (default bmojo)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per worker (default 2)")
    args = parser.parse_args(argv)

    from benchmarks._common import environment_info, run_worker, write_results

    meta = environment_info()
    print("\n".join(f"{k}: {v}" for k, v in meta.items()))
    rows = []
    for seq in args.seqs:
        for model in args.models:
            for checkpointing in (False, True):  # side by side, so machine load hits both alike
                job = dict(model=model, seq=seq, warmup=1, repeats=2, checkpointing=checkpointing)
                row = run_worker("benchmarks.train_speed", job, args.threads)
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = ratios(rows)
    for line in summary:
        print(line)
    json_path, md_path = write_results("checkpointing", rows + summary, meta)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
