"""Regenerate the results page (``docs/results.md``) from the JSON files under ``benchmarks/results/``.

    python -m benchmarks.report            # rewrite docs/results.md between the markers
    python -m benchmarks.report --print    # print the section only

The generated section lies between ``<!-- results:start -->`` and ``<!-- results:end -->`` in
``docs/results.md``; nothing outside the markers (the page's hand-written introduction and reading of the
figures) is touched. Without the markers the section is printed and the page is left alone. Every number
and figure comes from a results file a run wrote: for each benchmark the full run's file is used when it
exists, else the quick one, and the section says which, with the date, git commit and machine of the run.
A figure is linked only if its PNG exists, by a path relative to the page.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmarks._common import RESULTS_DIR

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "results.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"

# A benchmark's results files, most complete first: <stem>.json, then <stem>_cpu.json (the part of a grid
# a CPU can run, when the full grid is meant for an accelerator), then <stem>_quick.json.
VARIANTS: tuple[tuple[str, str], ...] = (
    ("", "full run"),
    ("_cpu", "CPU-sized run (`--grid cpu`)"),
    ("_quick", "quick run (`--quick`, as in `make bench-quick`)"),
)

# (file stem, title, figure stems relative to the chosen file stem: "" = <stem>.png)
BENCHMARKS: list[tuple[str, str, tuple[str, ...]]] = [
    ("lm", "Language modelling at equal size and tokens, and length extrapolation", ("_length",)),
    ("lm_gated_e2", "Language modelling: the gated layer, the patterns and the SSM width (3 seeds)", ()),
    ("lm_gate_start", "Language modelling: where the SSM output gate starts (token gate, 3 seeds at 0.2)", ()),
    ("lm_innovation_norm", "Language modelling: the raw innovation (`_raw`, now the default), 3 seeds", ()),
    ("lm_gated_e2_4x", "Language modelling at 4x the training steps (seed 0)", ()),
    ("lm_raw_4x", "Language modelling at 4x the steps: the default token gate and raw innovation (seed 0)", ()),
    ("lm_4x_3seeds", "Language modelling at 4x the steps, lr 2e-3, 3 seeds: the default layer, SSSB, ssm, Mamba2", ()),
    ("lm_4x_seeds12", "Language modelling at 4x the steps, lr 2e-3: seeds 1 and 2 of four arms, side by side", ()),
    ("lm_lr_sweep", "Language modelling, each arm at its best of lr 2e-3, 4e-3, 6e-3 (3 seeds each)", ()),
    ("lm_lr6e3", "Language modelling at lr 6e-3 (3 seeds): the default layer, SSSB, ssm and Mamba2", ()),
    ("lm_lr4e3_probe", "Language modelling at lr 4e-3 (seed 0): the default layer and Mamba2", ()),
    ("lm_gated_mamba2_4x", "Language modelling at 4x the training steps: Mamba2 (seed 0)", ()),
    ("lm_gated_e2_step_speed", "Training tokens/s of the language-modelling arms, side by side", ()),
    ("recall", "MQAR recall against sequence length", ("_length",)),
    ("mqar", "MQAR grid (training issue)", ("",)),
    ("mqar_long", "MQAR grid, longer training (training issue)", ("",)),
    ("mqar_2500", "MQAR grid, zeros filler at 2500 steps (training issue)", ("",)),
    ("mqar_gated", "MQAR grid at 1500 steps: the gated bmojo layer, the SB pattern and the hybrid", ("",)),
    ("mqar_token02_random", "MQAR at 1500 steps, random filler: the token gate at 0.2 (the default), its curve", ("",)),
    ("mqar_innovation_probes", "MQAR probes: the innovation's normalisation and the gate's start", ()),
    ("mqar_lr_probes", "MQAR probes on random filler: the default layer at lr 3e-3, and two gate settings", ()),
    ("mqar_lr2e3_bmojo_zeros", "MQAR at 1500 steps and lr 2e-3, zeros filler: the default bmojo layer", ("",)),
    ("mqar_lr_sweep_seeds_cpu", "MQAR, each cell at its best of lr 1e-3, 2e-3, 3e-3, median of its seeds", ("",)),
    ("mqar_lr_sweep_cpu", "MQAR, each cell at its best of the learning rates 1e-3, 2e-3, 3e-3 (bmojo, hybrid)", ("",)),
    ("mqar_lr_sweep_2rates_cpu", "MQAR, each cell at its best of the learning rates 1e-3 and 2e-3 (every arm)", ("",)),
    ("mqar_lr2e3_bmojo_zeros_seed0", "MQAR, a second training seed (0): bmojo, zeros filler, lr 2e-3", ("",)),
    ("mqar_lr3e3_bmojo_random_seed0", "MQAR, a second training seed (0): bmojo, random filler, lr 3e-3", ("",)),
    ("mqar_lr1e3_hybrid_zeros_seed0", "MQAR, a second training seed (0): the hybrid, zeros filler, lr 1e-3", ("",)),
    ("mqar_lr1e3_hybrid_random_seed0", "MQAR, a second training seed (0): the hybrid, random filler, lr 1e-3", ("",)),
    ("mqar_lr2e3_bmojo_zeros_seed1", "MQAR, a third training seed (1): bmojo, zeros filler, lr 2e-3", ("",)),
    ("mqar_lr1e3_hybrid_zeros_seed1", "MQAR, a third training seed (1): the hybrid, zeros filler, lr 1e-3", ("",)),
    ("mqar_lr3e3_bmojo_random_seed1", "MQAR, a third training seed (1): bmojo, random filler, lr 3e-3", ("",)),
    ("mqar_lr1e3_hybrid_random_seed1", "MQAR, a third training seed (1): the hybrid, random filler, lr 1e-3", ("",)),
    ("mqar_lr1e3_bmojo", "MQAR at 1500 steps and lr 1e-3: the default bmojo layer, both fillers", ("",)),
    ("mqar_lr2e3_bmojo_random", "MQAR at 1500 steps and lr 2e-3, random filler: the default bmojo layer", ("",)),
    ("mqar_lr2e3_hybrid", "MQAR at 1500 steps and lr 2e-3: the hybrid", ("",)),
    ("mqar_lr2e3_baselines", "MQAR at 1500 steps and lr 2e-3: sliding window and ssm", ("",)),
    ("mqar_lr3e3_bmojo_random", "MQAR at 1500 steps and lr 3e-3, random filler: the default bmojo layer", ("",)),
    ("mqar_lr3e3_bmojo_zeros", "MQAR at 1500 steps and lr 3e-3, zeros filler: the default bmojo layer", ("",)),
    ("mqar_lr3e3_baselines_zeros_partial", "MQAR at lr 3e-3, zeros filler: hybrid (sliding window stopped)", ("",)),
    ("mqar_lr3e3_ssm_zeros", "MQAR at lr 3e-3, zeros filler: ssm", ("",)),
    ("mqar_lr3e3_sliding_zeros", "MQAR at lr 3e-3, zeros filler: sliding window", ("",)),
    ("mqar_lr3e3_ssm_random", "MQAR at lr 3e-3, random filler: ssm", ("",)),
    ("mqar_lr1e3_sliding_zeros", "MQAR at lr 1e-3, zeros filler: sliding window at today's size", ("",)),
    ("mqar_lr1e3_sliding_random", "MQAR at lr 1e-3, random filler: sliding window at today's size", ("",)),
    ("mqar_lr3e3_baselines_random_partial", "MQAR at lr 3e-3, random filler: hybrid and sliding window", ("",)),
    ("mqar_raw_SB_random", "MQAR at 1500 steps, random filler: the SB pattern with the raw innovation", ("",)),
    ("train_speed", "Training speed and memory", ("_length",)),
    ("decode", "Decode speed and cache size", ("",)),
    ("train_speed_issue18", "Training speed and memory: the shipped pattern and the paper's memory sizes", ()),
    ("decode_issue18", "Decode speed: the shipped pattern and the paper's memory sizes", ("",)),
    ("ops", "Op benchmarks", ()),
    ("suite", "Suite wall time", ()),
]
_HIDDEN_COLUMNS = {"config", "train_loss_curve"}  # long or per-run detail, kept in the JSON only


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[dict]) -> list[str]:
    """Rows with different key sets become separate tables (e.g. measurements, then target checks)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(k for k in row if k not in _HIDDEN_COLUMNS), []).append(row)
    lines: list[str] = []
    for columns, members in groups.items():
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in members]
        lines.append("")
    return lines


def _provenance(meta: dict, stem: str, kind: str) -> str:
    sha = str(meta.get("git_sha", "unknown"))[:10] + (" (uncommitted changes)" if meta.get("git_dirty") is True else "")
    parts = [
        f"`{stem}.json`",
        kind,
        f"run {meta.get('timestamp', 'unknown time')}",
        f"commit {sha}",
        f"{meta.get('cpu_count', '?')} CPUs, {meta.get('platform', 'unknown platform')}",
        f"torch {meta.get('torch', '?')}",
    ]
    if "transformers" in meta:
        parts.append(f"transformers {meta['transformers']}")
    if meta.get("merged_from"):  # cells of one grid run in several processes (benchmarks.mqar --merge)
        runs = meta["merged_from"]
        shas = sorted({str(r.get("git_sha"))[:10] for r in runs})
        parts.append(f"cells merged from {len(runs)} runs (commits {', '.join(shas)})")
    if "wall_seconds" in meta:
        parts.append(f"wall time {meta['wall_seconds']:.0f} s")
    return "Source: " + ", ".join(parts) + "."


def section_for(
    stem: str, title: str, figures: tuple[str, ...], results_dir: Path, page_dir: Path = PAGE.parent
) -> list[str]:
    """The Markdown of one benchmark from its most complete results file (``VARIANTS``), or nothing; figures
    are linked relative to ``page_dir``, the folder of the page the section goes into."""
    found = [(stem + suffix, kind) for suffix, kind in VARIANTS if (results_dir / f"{stem}{suffix}.json").exists()]
    if not found:
        return []
    chosen, kind = found[0]
    data = json.loads((results_dir / f"{chosen}.json").read_text())
    meta, rows = data.get("meta", {}), data.get("rows", [])
    lines = [f"### {title}", "", _provenance(meta, chosen, kind), ""]
    if chosen.endswith("_quick"):
        lines += [
            "Quick mode: a small budget that checks the pipeline end to end; see the full run for conclusions.",
            "",
        ]
    lines += markdown_table(rows)
    targets = meta.get("targets")
    if isinstance(targets, dict):  # {description: measured value}
        targets = [{"target": k, "measured": v} for k, v in targets.items()]
    if targets:
        lines += ["Targets:", ""] + markdown_table(targets)
    if meta.get("failed_runs"):
        lines += ["Runs that failed (not in the table):", ""] + markdown_table(meta["failed_runs"])
    for suffix in figures:
        png = results_dir / f"{chosen}{suffix}.png"
        if png.exists():
            lines += [f"![{title}]({Path(os.path.relpath(png, page_dir)).as_posix()})", ""]
    return lines


def build_section(results_dir: Path = RESULTS_DIR, page_dir: Path = PAGE.parent) -> str:
    """The whole results section (without the markers), its figure links relative to ``page_dir``."""
    lines = [
        "## Measurements",
        "",
        "Generated by `python -m benchmarks.report` from `benchmarks/results/*.json` "
        "(`make bench` / `make bench-quick` run the suite and then this). Do not edit by hand.",
        "",
    ]
    body = [
        line for stem, title, figures in BENCHMARKS for line in section_for(stem, title, figures, results_dir, page_dir)
    ]
    lines += body or ["No results yet: run `make bench-quick` or `make bench`.", ""]
    return "\n".join(lines).rstrip() + "\n"


def replace_between_markers(text: str, section: str) -> str | None:
    """``text`` with the part between the markers replaced by ``section``; ``None`` if the markers are missing."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return None
    return text[: start + len(START)] + "\n" + section + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--print", action="store_true", help="print the section instead of editing the page")
    parser.add_argument("--page", type=Path, default=PAGE, help="the Markdown page with the markers (docs/results.md)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    section = build_section(args.results, args.page.resolve().parent)
    if args.print:
        print(section)
        return 0
    text = args.page.read_text() if args.page.exists() else ""
    updated = replace_between_markers(text, section)
    if updated is None:
        print(section)
        print(f"report: {args.page} has no {START} ... {END} markers; printed the section, page unchanged",
              file=sys.stderr)  # fmt: skip
        return 0
    args.page.write_text(updated)
    print(f"report: results section of {args.page} regenerated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
