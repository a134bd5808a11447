"""MQAR recall against the sequence length (``python -m benchmarks.recall``), for the accuracy-vs-length figure.

The cells are those of the MQAR grid (``benchmarks.mqar``: its ``cell_config`` and equal-size
``equalize``, trained with ``training.train.run``), swept over the sequence length with the number
of pairs growing with it (``T / 16``) and a window that holds only a fraction of the pairs, so every
length needs memory beyond the window. Two-layer models at hidden 64, random filler (Zoology's
default), eidetic slots = 4 x pairs. The vocabulary is smaller than the grid's (``--vocab``, default
256 instead of Zoology's 8192) so the sweep fits the ``make bench`` budget on a CPU; the grid itself
(``python -m benchmarks.mqar``) is the reference for the training issue's target.

Cells run ``--jobs`` at a time in separate processes. Writes ``benchmarks/results/recall[_quick].{json,md}``
and ``recall[_quick]_length.png`` (one run per point, seed fixed by the training defaults).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks._common import environment_info, write_results

LAYER_TYPES = ("attention", "sliding_attention", "ssm", "bmojo_f", "bmojo")
FULL = {"seq_lens": (64, 128, 256), "steps": 300, "train_examples": 9600, "eval_examples": 500}
QUICK = {"seq_lens": (32, 64), "steps": 40, "train_examples": 1280, "eval_examples": 200}
WINDOW, HIDDEN, FILLER = 16, 64, "random"


def _mqar_args(vocab: int, batch_size: int, lr: float, eval_examples: int) -> argparse.Namespace:
    """The namespace ``benchmarks.mqar.cell_config`` reads its training options from."""
    return argparse.Namespace(vocab=vocab, batch_size=batch_size, lr=lr, eval_examples=eval_examples, no_tqdm=True)


def run_cell(seq_len: int, layer_type: str, steps: int, examples: int, options: dict) -> dict:
    """Train and evaluate one (sequence length, layer type) cell; runs in a worker process."""
    import torch
    import transformers

    from benchmarks.mqar import Setting, cell_config, equalize
    from training.data import load_tokenizer
    from training.train import run

    torch.set_num_threads(options["threads"])
    transformers.logging.set_verbosity_error()
    pairs = max(2, seq_len // 16)
    setting = Setting(seq_len=seq_len, num_pairs=pairs, window=WINDOW, slots=4 * pairs)
    args = _mqar_args(options["vocab"], options["batch_size"], options["lr"], options["eval_examples"])
    reference = cell_config(setting, HIDDEN, FILLER, "bmojo", steps, examples, args)
    config, params = equalize(
        cell_config(setting, HIDDEN, FILLER, layer_type, steps, examples, args), reference, load_tokenizer("byte")
    )
    with tempfile.TemporaryDirectory(prefix="bench-recall-") as scratch:
        config.train.output_dir = str(Path(scratch) / "run")
        start = time.perf_counter()
        result = run(config)
    return {
        "seq_len": seq_len,
        "num_pairs": pairs,
        "window": WINDOW,
        "slots": setting.slots,
        "hidden": HIDDEN,
        "filler": FILLER,
        "layer_type": layer_type,
        "params": params,
        "accuracy": round(result.metrics["eval_accuracy"], 4),
        "train_seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="two short lengths, few steps (checks the pipeline)")
    parser.add_argument("--seq-lens", type=int, nargs="+", help="sequence lengths (default 64 128 256)")
    parser.add_argument("--steps", type=int, help="optimizer steps per cell (default 300, quick 40)")
    parser.add_argument("--layer-types", default=",".join(LAYER_TYPES))
    parser.add_argument("--vocab", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-examples", type=int, help="evaluation examples per cell (default 500, quick 200)")
    parser.add_argument("--jobs", type=int, default=2, help="cells at a time (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per cell")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    grid = QUICK if args.quick else FULL
    seq_lens, steps = tuple(args.seq_lens or grid["seq_lens"]), args.steps or grid["steps"]
    args.eval_examples = args.eval_examples or grid["eval_examples"]
    options = {k: getattr(args, k) for k in ("vocab", "batch_size", "lr", "eval_examples", "threads")}
    layer_types = [t.strip() for t in args.layer_types.split(",")]

    import transformers

    name = "recall_quick" if args.quick else "recall"
    meta = {**environment_info(), "transformers": transformers.__version__, "mode": "quick" if args.quick else "full",
            "steps": steps, "train_examples": grid["train_examples"], "runs_per_point": 1, "jobs": args.jobs,
            "layers": 2, **options}  # fmt: skip
    start = time.perf_counter()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the spawned workers
    cells = [(t, lt) for t in sorted(seq_lens, reverse=True) for lt in layer_types]  # longest first
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_cell, t, lt, steps, grid["train_examples"], options) for t, lt in cells]
        rows = []
        for future in futures:
            rows.append(future.result())
            print(rows[-1], flush=True)
    rows.sort(key=lambda r: (r["seq_len"], layer_types.index(r["layer_type"])))
    meta["wall_seconds"] = round(time.perf_counter() - start, 1)
    json_path, md_path = write_results(name, rows, meta)
    if not args.no_plots:
        from benchmarks.plots import plot_series

        plot_series(json_path, "recall")
    print(md_path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
