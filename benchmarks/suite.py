"""The evaluation suite (``make bench`` / ``make bench-quick``): every benchmark in turn, then figures and results page.

    python -m benchmarks.suite --quick   # ~5 minutes on 2 CPU cores: checks every piece end to end
    python -m benchmarks.suite           # ~45 minutes on 2 CPU cores: the figures of docs/results.md

Steps run one after another as separate processes (so the timing benchmarks never share the machine
with another step), each with its own command line below; a failing step is recorded and the suite
goes on. Then ``benchmarks.plots`` redraws the figures and ``benchmarks.report`` regenerates the
results page (docs/results.md) from the JSON files. ``suite[_quick].{json,md}`` records each step's
command, exit status and wall time.

What each mode runs:

=============  ======================================  ==========================================
step           quick                                   full
=============  ======================================  ==========================================
lm             ``benchmarks.lm --quick``               ``benchmarks.lm`` (9 arms, 2 processes)
recall         ``benchmarks.recall --quick``           ``benchmarks.recall`` (T = 64, 128, 256)
train_speed    ``benchmarks.train_speed --quick``      ``benchmarks.train_speed`` (T up to 8192)
decode         ``benchmarks.decode --quick``           ``benchmarks.decode`` (context up to 8192)
=============  ======================================  ==========================================

The speed benchmarks run single-threaded here (the issues' reference figures are single-threaded;
``python -m benchmarks.train_speed`` alone also measures 2 threads). The MQAR grid of the training
issue (``python -m benchmarks.mqar``, hours on a CPU) and the op benchmarks (``python -m benchmarks.ops``)
are not part of the suite; the report includes their results when their JSON files exist.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import environment_info, write_results

ROOT = Path(__file__).resolve().parent.parent

# step -> (quick arguments, full arguments) of ``python -m``
STEPS: dict[str, tuple[list[str], list[str]]] = {
    "lm": (["benchmarks.lm", "--quick"], ["benchmarks.lm"]),
    "recall": (["benchmarks.recall", "--quick"], ["benchmarks.recall"]),
    "train_speed": (
        ["benchmarks.train_speed", "--quick", "--threads", "1"],
        ["benchmarks.train_speed", "--threads", "1"],
    ),
    "decode": (["benchmarks.decode", "--quick", "--name", "decode_quick"], ["benchmarks.decode"]),
}


def run_step(name: str, module_args: list[str]) -> dict:
    """Run ``python -m <module_args>`` from the repository root; its output goes to this terminal."""
    command = [sys.executable, "-m", *module_args]
    print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    status = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    seconds = time.perf_counter() - start
    print(f"=== {name}: exit {status} after {seconds:.0f} s", flush=True)
    return {"step": name, "command": "python -m " + " ".join(module_args), "exit_status": status,
            "seconds": round(seconds, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the ~5 minute version")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--no-report", action="store_true", help="do not regenerate docs/results.md")
    args = parser.parse_args(argv)
    steps = list(STEPS) if not args.only else [s.strip() for s in args.only.split(",")]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; choose from {', '.join(STEPS)}")

    start = time.perf_counter()
    rows = [run_step(name, STEPS[name][0 if args.quick else 1]) for name in steps]
    total = time.perf_counter() - start
    meta = {**environment_info(), "mode": "quick" if args.quick else "full", "wall_seconds": round(total, 1)}
    json_path, _ = write_results("suite_quick" if args.quick else "suite", rows, meta)

    from benchmarks import plots, report

    for path in plots.plot_all():
        print(f"wrote {path}")
    if not args.no_report:
        report.main([])
    failed = [r["step"] for r in rows if r["exit_status"] != 0]
    print(
        f"\nsuite ({meta['mode']}): {len(rows)} steps in {total:.0f} s; "
        + (f"FAILED: {', '.join(failed)}" if failed else "all passed")
    )
    print(f"wrote {json_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
