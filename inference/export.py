"""``python -m inference.export`` / ``bmojo-export``: save a B'MOJO model as static-shape graphs.

    python -m inference.export --model DIR --out OUT --target cpu     # torch.export, saved as .pt2
    python -m inference.export --model DIR --out OUT --target neuron  # torch_neuronx.trace (Neuron host only)

The graphs, their manifest and the runner of a CPU export (:class:`ExportedBMojo`) are in
:mod:`inference.static_export`; they are also reachable from here (``inference.export.ExportedBMojo``).
This module parses the command line before importing torch, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys

from .generate import HelpFormatter
from .loading import DTYPES, ModelLoadError, load_model_and_tokenizer

DEFAULT_BUCKETS = (64, 128, 256, 512)  # the same as static_export.DEFAULT_BUCKETS (checked in the tests)
_LAZY = ("ExportedBMojo", "StaticBMojo", "export")


def __getattr__(name: str):
    if name in _LAZY:  # the torch-importing part, on first use
        from . import static_export

        return getattr(static_export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bmojo-export",
        description="Save a B'MOJO model as static-shape graphs (prefill per bucket length, one-token decode).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="DIR", help="directory saved with save_pretrained")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (removed again on failure)")
    parser.add_argument(
        "--target", choices=["cpu", "neuron"], default="cpu", help="cpu: torch.export; neuron: torch_neuronx.trace"
    )
    parser.add_argument(
        "--buckets",
        default=",".join(map(str, DEFAULT_BUCKETS)),
        metavar="L1,L2,...",
        help="comma-separated prefill lengths; prompts are left-padded to the next one",
    )
    parser.add_argument("--batch-size", type=int, default=1, metavar="N", help="batch size of every graph")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weights' dtype")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        buckets = [int(b) for b in args.buckets.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--buckets must be comma-separated integers, got {args.buckets!r}")
    if not buckets or min(buckets) < 1 or args.batch_size < 1:
        parser.error("--buckets must list positive lengths and --batch-size must be >= 1")
    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    try:
        from .static_export import export

        model, tokenizer = load_model_and_tokenizer(args.model, args.dtype)
        out = export(model, tokenizer, args.out, args.target, buckets, args.batch_size)
    except (ModelLoadError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {args.target} graphs for buckets {sorted(set(buckets))} and decode to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
