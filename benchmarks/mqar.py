"""MQAR grid: recall accuracy of every layer type at equal parameter count (``python -m benchmarks.mqar``).

The grid of the training issue: 2-layer models at hidden 64 and 128, sequences much longer than the
window (window 32; sequence 256 with 16 pairs and 512 with 32 pairs; eidetic slots = 4 x pairs, so
keys and values both fit), both fillers, and the arms ``attention`` (the ceiling), ``sliding_attention``,
``ssm``, ``bmojo_f``, ``bmojo``, ``hybrid`` (``ssm`` then ``attention``) and ``SB`` (``ssm`` then ``bmojo``,
the 2-layer form of the presets' ``SSSB``). Every model's MLP width is solved so that its parameter count
matches the ``bmojo`` model of the same hidden size. Training goes through the training package (HF Trainer,
AdamW, cosine), one run per cell.

This is a long benchmark (hours on a CPU; the full grid is meant for an accelerator), not a test.
``--grid cpu`` runs the part of the grid a CPU session can afford: sequence 128 = 8 windows with 8 pairs at
hidden 128, both fillers, 1500 steps (at 600, every arm but full attention on the random filler was still far
from recall). One cell takes 15 (``attention``) to 60 (``bmojo``) minutes on one thread, the grid about 7 hours
of one core: split it over processes (below). ``--quick`` runs one small setting (sequence 128, 8 pairs,
window 16, hidden 64, random filler) in minutes, as a pipeline check. Results:
``benchmarks/results/mqar[_cpu|_quick].{json,md,png}`` with versions, git sha and machine.

Cells are independent runs, so a grid can be split over processes or machines (``--layer-types``,
``--fillers``) and joined with ``--merge a.json b.json --name NAME`` (``--layer-types`` there keeps only those
arms, e.g. an older run's baselines beside new arms). A run trains at one ``--lr``; runs of the same grid at
several rates join with ``--merge ... --best-lr``, each cell at its best rate (Zoology's protocol: the phase
change of MQAR comes at different rates for different layers). The runs of docs/results.md: ``mqar_long_cpu``
(before the gated SSM output) was ``--grid cpu --threads 1`` at 1500 steps, one process per group of layer
types; the zeros-filler row again at 2500 steps and 160000 examples in ``mqar_2500_cpu``; ``mqar_gated_cpu`` joins the
gated ``bmojo``, ``hybrid`` and ``SB`` cells with ``mqar_long_cpu``'s attention, sliding-window and ``ssm`` ones.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from benchmarks._common import RESULTS_DIR, environment_info, write_results  # noqa: E402
from benchmarks.lm_models import hybrid_layer_types  # noqa: E402
from training.config import ModelSection, MQARSection, RunConfig, TrainSection  # noqa: E402
from training.data import load_tokenizer  # noqa: E402
from training.mqar import FILLERS  # noqa: E402
from training.presets import count_parameters, match_parameters  # noqa: E402
from training.train import make_model_config, run, saved_run_hit_rate  # noqa: E402

LAYER_TYPES = ("attention", "sliding_attention", "ssm", "bmojo_f", "bmojo")
# An arm's name -> its 2 layers: one per layer type, the usual SSM/attention hybrid, and "SB", the 2-layer
# form of the presets' SSSB pattern (SSM layers, then one bmojo layer). Rows keep the arm in "layer_type".
STACKS: dict[str, tuple[str, ...]] = {
    **{t: (t, t) for t in LAYER_TYPES},
    "hybrid": tuple(hybrid_layer_types(2)),
    "SB": ("ssm", "bmojo"),
}
ARMS = tuple(STACKS)
DEFAULT_ARMS = ARMS
TARGET = 0.95  # the target for bmojo
# The arms with eidetic memory that must reach TARGET, and the arms each must beat.
RECALL_ARMS = ("bmojo", "SB")
BASELINES = ("sliding_attention", "ssm", "hybrid")


@dataclass(frozen=True)
class Setting:
    seq_len: int
    num_pairs: int
    window: int
    slots: int


FULL = {
    "settings": [Setting(256, 16, 32, 64), Setting(512, 32, 32, 128)],
    "hidden": [64, 128],
    "fillers": ["random", "zeros"],
    "steps": 4000,
    "batch_size": 64,
    "train_examples": 100_000,
    "vocab": 8192,  # Zoology's
}
# What a CPU can run in hours: a sequence 8 windows long at hidden 128.
CPU = {
    "settings": [Setting(128, 8, 16, 32)],
    "hidden": [128],
    "fillers": ["zeros", "random"],
    "steps": 1500,
    "batch_size": 64,
    "train_examples": 96_000,
    "vocab": 256,  # the output layer of a 8192 vocabulary would cost more than the model on a CPU
}
QUICK = {
    "settings": [Setting(128, 8, 16, 32)],
    "hidden": [64],
    "fillers": ["random"],
    "steps": 300,
    "batch_size": 32,
    "train_examples": 9600,
    "vocab": 256,
}
GRIDS = {"full": FULL, "cpu": CPU, "quick": QUICK}


def cell_config(setting: Setting, hidden: int, filler: str, arm: str, steps: int, examples: int, args) -> RunConfig:
    heads = max(2, hidden // 32)
    overrides = {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_attention_heads": heads,
        "ssm_num_heads": heads,
        "ssm_head_dim": 2 * hidden // heads,  # SSM expansion 2, as Mamba
        "sliding_window": setting.window,
        "chunk_size": setting.window,
        "eidetic_slots": setting.slots,
        # Every token of a chunk is a candidate: the 2 x pairs key/value tokens all sit in the first chunk(s).
        # (At most the memory's size: BMojoConfig refuses more candidates than slots; with the topk policy,
        # keeping the best `slots` of memory + candidates is the same for any topk >= slots.)
        "eidetic_topk": min(setting.window, setting.slots),
        # Untied: with the tiny preset's tied embeddings, full attention (hidden 128, sequence 128, random
        # filler) was still at 0.16 after 500 of 800 steps, untied it reached 0.99 by step 400.
        "tie_word_embeddings": False,
        **getattr(args, "model_overrides", {}),
    }
    return RunConfig(
        task="mqar",
        model=ModelSection(preset="tiny", layer_types=list(STACKS[arm]), overrides=overrides),
        mqar=MQARSection(
            vocab_size=args.vocab,
            seq_len=setting.seq_len,
            num_pairs=setting.num_pairs,
            filler=filler,
            train_examples=examples,
            eval_examples=args.eval_examples,
        ),
        train=TrainSection(
            max_steps=steps,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_steps=max(1, steps // 20),
            weight_decay=0.0,
            logging_steps=max(1, steps // 20),
            eval_steps=steps,
            save_steps=steps,
            save_total_limit=1,
            precision="fp32",
            seed=args.seed,
            tqdm=not args.no_tqdm,
            plot=False,
        ),
    )


class AccuracyCurve(TrainerCallback):
    """Keeps ``{"step", "accuracy"}`` of every evaluation of a run."""

    def __init__(self):
        self.points: list[dict] = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_accuracy" in metrics:
            self.points.append({"step": state.global_step, "accuracy": round(metrics["eval_accuracy"], 4)})


def equalize(config: RunConfig, reference: RunConfig, tokenizer) -> tuple[RunConfig, int]:
    """Give ``config`` the MLP width that matches the reference (bmojo) model's parameter count."""
    target = count_parameters(make_model_config(reference, tokenizer))
    width = match_parameters(make_model_config(config, tokenizer), target).intermediate_size
    config.model.overrides["intermediate_size"] = width
    return config, count_parameters(make_model_config(config, tokenizer))


def group_key(row: dict) -> tuple:
    """The (setting, hidden, filler) a row's cell belongs to; its layer type tells the cells of a group apart."""
    return row["seq_len"], row["num_pairs"], row["hidden"], row["filler"]


def grouped(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by (setting, hidden, filler), in sorted order, each named like ``T=128, 8 pairs, d=128, zeros``."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(group_key(r), []).append(r)
    return {f"T={g[0]}, {g[1]} pairs, d={g[2]}, {g[3]}": groups[g] for g in sorted(groups)}


def plot(rows: list[dict], path: Path) -> None:
    """One panel per (setting, hidden, filler): recall accuracy per layer type."""
    groups = grouped(rows)
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.6), squeeze=False)
    for ax, (where, cells) in zip(axes[0], groups.items()):
        ax.bar([r["layer_type"] for r in cells], [r["accuracy"] for r in cells], color="tab:blue")
        ax.axhline(TARGET, color="tab:red", lw=0.8, ls="--")
        ax.set_ylim(0, 1)
        ax.set_title(where, fontsize=9)
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    axes[0][0].set_ylabel("recall accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def target_checks(rows: list[dict]) -> list[dict]:
    """The issues' targets per (setting, hidden, filler) cell group: each of ``RECALL_ARMS`` >= TARGET and above
    every arm of ``BASELINES`` (groups missing an arm skip the checks they cannot make)."""
    checks = []
    for where, cells in grouped(rows).items():
        by_arm = {r["layer_type"]: r["accuracy"] for r in cells}
        for arm in (a for a in RECALL_ARMS if a in by_arm):
            acc = by_arm[arm]
            checks.append({"target": f"{where}: {arm} >= {TARGET}", "measured": acc, "met": acc >= TARGET})
            for other in (b for b in BASELINES if b in by_arm):
                checks.append({"target": f"{where}: {arm} > {other}", "measured": f"{acc:.4g} vs {by_arm[other]:.4g}",
                               "met": acc > by_arm[other]})  # fmt: skip
    return checks


def hit_rate(config) -> dict:
    """The memory hit rate of the cell's saved model and its ceiling, rounded for the table (None without
    eidetic memory)."""
    hits = saved_run_hit_rate(config)
    if hits is None:
        return {"memory_hit_rate": None, "memory_hit_ceiling": None}
    return {"memory_hit_rate": round(hits[0], 4), "memory_hit_ceiling": round(hits[1], 4)}


# What makes two runs' cells comparable: the same training budget and task on the same grid.
SAME_IN_MERGED_RUNS = ("steps", "train_examples", "batch_size", "lr", "vocab", "layers", "mode", "model_overrides",
                       "seed")  # fmt: skip
# What runs older than a field had: no overrides, and the training package's default seed.
FIELD_DEFAULTS = {"model_overrides": {}, "seed": TrainSection.seed}


def _grid_field(meta: dict, key: str):
    """A meta field that must agree between merged runs (see ``FIELD_DEFAULTS`` for runs older than it)."""
    value = meta.get(key)
    return FIELD_DEFAULTS.get(key) if value is None else value


def merge(
    paths: list[Path],
    arms: list[str] | None = None,
    best_lr: bool = False,
    across_seeds: bool = False,
    arms_of_file: list[list[str] | None] | None = None,
) -> tuple[list[dict], dict]:
    """The cells of several runs of one grid (e.g. its layer types split over two machines or processes) as one
    result: rows in grid order, the first run's meta plus where each part came from, targets recomputed.
    ``arms``: keep only these arms' cells (e.g. the baselines of an older run beside new arms).
    ``arms_of_file``: per path, the arms to keep from that file alone (``None``: all), e.g. an older run's
    ``ssm`` cells beside a rerun of its other arms; an arm its file does not hold is an error.

    ``best_lr``: the runs may differ in their learning rate, and each cell is reported at the rate where it
    recalled best, with every rate's accuracy in ``accuracy_by_lr`` (Zoology's protocol: MQAR's sudden phase
    changes come at different rates for different layers, and at 3e-3 full attention stays at chance here).
    Every cell must have run at every rate of the sweep, so that no arm gets more tries than another.

    ``across_seeds``: the runs may differ in their training seed, and each cell reports the median accuracy of
    its seeds (``accuracy_seeds`` in seed order, ``accuracy_spread`` = max - min). With ``best_lr`` too, a
    cell's rate is chosen on the seeds that ran at every one of its rates (extra seeds run only at the chosen
    rate must not make it look better than the rates they skipped); the median is then over all the seeds at
    that rate."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    first = runs[0]["meta"]
    same = [k for k in SAME_IN_MERGED_RUNS if not (best_lr and k == "lr") and not (across_seeds and k == "seed")]
    for path, run_ in zip(paths[1:], runs[1:]):
        differ = [k for k in same if _grid_field(run_["meta"], k) != _grid_field(first, k)]
        if differ:
            raise ValueError(f"{path}: not the same grid as {paths[0]} (differs in {', '.join(differ)})")
    file_arms = arms_of_file or [None] * len(paths)
    for path, run_, kept in zip(paths, runs, file_arms):
        absent = sorted(set(kept or ()) - {row["layer_type"] for row in run_["rows"]})
        if absent:
            raise ValueError(f"{path}: no cell of {', '.join(absent)}")
    rows = [
        {**row, "lr": row.get("lr", run_["meta"]["lr"]), "seed": _grid_field(run_["meta"], "seed")}
        for run_, kept in zip(runs, file_arms)
        for row in run_["rows"]
        if (arms is None or row["layer_type"] in arms) and (kept is None or row["layer_type"] in kept)
    ]
    runs_of_a_cell = [(*group_key(r), r["layer_type"], r["lr"], r["seed"]) for r in rows]
    if len(set(runs_of_a_cell)) != len(runs_of_a_cell):
        shared = sorted({c for c in runs_of_a_cell if runs_of_a_cell.count(c) > 1})
        raise ValueError(f"the runs share cells (setting, filler, arm, lr, seed): {shared}")
    rows = _one_row_per_cell(rows, best_lr, across_seeds)
    rows.sort(key=lambda r: (*group_key(r), ARMS.index(r["layer_type"])))
    parts = [{"file": str(p), "git_sha": r["meta"].get("git_sha"), "git_dirty": r["meta"].get("git_dirty"),
              "timestamp": r["meta"].get("timestamp"), "cells": len(r["rows"]),
              "eval_examples": r["meta"].get("eval_examples"), "seed": _grid_field(r["meta"], "seed")}
             for p, r in zip(paths, runs)]  # fmt: skip
    meta = {**first, "merged_from": parts, "targets": target_checks(rows)}
    # Not a grid field: the evaluation's size changes the accuracy's noise, not what was trained. Runs older than
    # this field evaluated 1000 examples unless their command said otherwise, so they count as unknown.
    eval_sizes = {part["eval_examples"] for part in parts}
    meta["eval_examples"] = eval_sizes.pop() if len(eval_sizes) == 1 else "per run, see merged_from"
    if best_lr:
        meta["lr"] = f"best of {sorted({r['meta']['lr'] for r in runs})} per cell"
    if across_seeds:
        meta["seed"] = f"median over the seeds of each cell, of {sorted({part['seed'] for part in parts})}"
    return rows, meta


def _one_row_per_cell(rows: list[dict], best_lr: bool, across_seeds: bool) -> list[dict]:
    """One row per cell from its runs at one or more rates and seeds (``rows`` hold each (cell, rate, seed)
    once: :func:`merge` checks). The row shown is the run whose accuracy is the (lower) median at the chosen
    rate (``curve_seed``), so its curve and hit rate belong to one real run; ``accuracy`` is the median itself."""
    by_cell: dict[tuple, dict[float, dict[int, dict]]] = {}
    for r in rows:
        by_cell.setdefault((*group_key(r), r["layer_type"]), {}).setdefault(r["lr"], {})[r["seed"]] = r
    sweep = sorted({lr for by_lr in by_cell.values() for lr in by_lr})
    missing = [f"{cell} at lr {lr}" for cell, by_lr in by_cell.items() for lr in sweep if lr not in by_lr]
    if missing:
        raise ValueError(f"every cell must run at every learning rate of the sweep; missing: {'; '.join(missing)}")
    out = []
    for cell, by_lr in by_cell.items():
        common = set.intersection(*(set(by_seed) for by_seed in by_lr.values()))
        if not common:
            raise ValueError(f"{cell}: no training seed ran at every learning rate, so its rate cannot be chosen")
        score = {lr: statistics.median(by_lr[lr][s]["accuracy"] for s in common) for lr in sweep}
        lr = max(sweep, key=score.__getitem__)  # the first rate on a tie
        runs_ = sorted(by_lr[lr].values(), key=lambda r: r["accuracy"])
        accuracies = [r["accuracy"] for r in runs_]
        row = {**runs_[(len(runs_) - 1) // 2], "accuracy": round(statistics.median(accuracies), 4)}
        shown_seed = row.pop("seed")
        if best_lr:
            row["accuracy_by_lr"] = {str(rate): round(score[rate], 4) for rate in sweep}
        if across_seeds:
            row["curve_seed"] = shown_seed  # whose curve, hit rate and seconds the row shows
            row["seeds"] = len(runs_)
            row["accuracy_seeds"] = " ".join(f"{s}: {by_lr[lr][s]['accuracy']:.4g}" for s in sorted(by_lr[lr]))
            row["accuracy_spread"] = round(accuracies[-1] - accuracies[0], 4)
        out.append(row)
    return out


def write(name: str, rows: list[dict], meta: dict) -> None:
    json_path, md_path = write_results(name, rows, meta)
    png_path = RESULTS_DIR / f"{name}.png"
    plot(rows, png_path)
    print(f"\nwrote {json_path}, {md_path}, {png_path}")
    print(md_path.read_text().split("\n\n")[-1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", choices=GRIDS, default="full",
                        help="full: the issue's grid (hours); cpu: sequence 128 at hidden 128, both fillers (~7 core-hours); "
                        "quick: one small setting (minutes)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="same as --grid quick")
    parser.add_argument("--steps", type=int, help="optimizer steps per cell (default: full 4000, cpu 1500, quick 300)")
    parser.add_argument("--train-examples", type=int, help="MQAR training examples (default: the grid's)")
    parser.add_argument("--eval-examples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, help="examples per step (default: full/cpu 64, quick 32)")
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="AdamW peak learning rate (default 1e-3: at 3e-3 even full attention stays at chance)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=TrainSection.seed,
                        help=f"training seed of every cell: initialisation and batch order (default {TrainSection.seed}; "
                        "the MQAR data keep their own seeds); runs of different seeds merge with --across-seeds")  # fmt: skip
    parser.add_argument("--vocab", type=int, help="MQAR vocabulary (default: full 8192 as Zoology, cpu/quick 256)")
    parser.add_argument("--fillers", help="comma-separated subset of the grid's fillers (zeros, random)")
    parser.add_argument("--layer-types",
                        help=f"comma-separated arms, from {', '.join(ARMS)} (SB: ssm then bmojo; hybrid: ssm then "
                        f"attention; default {','.join(DEFAULT_ARMS)}); with --merge, the arms to keep")  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-tqdm", action="store_true")
    parser.add_argument("--name", help="results file stem (default: mqar, mqar_cpu or mqar_quick by --grid)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="model_set",
                        help="a model config field for every cell (repeatable), e.g. ssm_output_gate=none")  # fmt: skip
    parser.add_argument("--curve-every", type=int, metavar="STEPS",
                        help="also evaluate every STEPS steps and keep the recall accuracies as the row's "
                        "accuracy_curve (phase changes in MQAR are sudden: the curve says how far a cell was from one)")  # fmt: skip
    parser.add_argument("--merge", nargs="+", metavar="JSON[:ARMS]",
                        help="do not train: merge the cells of these results files of one grid into --name; "
                        "FILE.json:ssm,hybrid keeps only those arms of that file")  # fmt: skip
    parser.add_argument("--best-lr", action="store_true",
                        help="with --merge: the runs may differ in --lr; report each cell at its best rate (every "
                        "cell must have run at every rate)")  # fmt: skip
    parser.add_argument("--across-seeds", action="store_true",
                        help="with --merge: the runs may differ in --seed; report each cell's median accuracy over "
                        "its seeds, with every seed's and the spread (with --best-lr, the rate is chosen on the "
                        "seeds that ran at every rate)")  # fmt: skip
    return parser


def _merge_files(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--merge``: no training, the cells of several results files of one grid written as ``--name``."""
    if not args.name:
        parser.error("--merge needs --name")
    sources = [_merge_source(parser, text) for text in args.merge]
    paths = [path for path, _ in sources]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        parser.error(f"--merge: no such file: {', '.join(missing)}")
    try:
        arms = _arms(parser, args.layer_types) if args.layer_types else None
        rows, meta = merge(paths, arms, args.best_lr, args.across_seeds, arms_of_file=[a for _, a in sources])
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        parser.error(f"--merge: {e}")
    write(args.name, rows, meta)
    return 0


def _merge_source(parser: argparse.ArgumentParser, text: str) -> tuple[Path, list[str] | None]:
    """``FILE`` or ``FILE:arm,arm`` (keep only those arms of that file)."""
    path, colon, arms = text.rpartition(":")
    if colon and path.endswith(".json"):
        return Path(path), _arms(parser, arms, option=f"--merge {text}")
    return Path(text), None


def _arms(parser: argparse.ArgumentParser, text: str, option: str = "--layer-types") -> list[str]:
    arms = [t.strip() for t in text.split(",")]
    if not set(arms) <= set(ARMS):
        parser.error(f"{option}: choose from {', '.join(ARMS)}, got {text!r}")
    return arms


def _model_overrides(parser: argparse.ArgumentParser, items: list[str]) -> dict:
    """``--set FIELD=VALUE`` items as a dict; a value is JSON if it parses, else a bare string."""
    overrides = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field:
            parser.error(f"--set: expected FIELD=VALUE, got {item!r}")
        try:
            overrides[field] = json.loads(value)
        except json.JSONDecodeError:
            overrides[field] = value  # a bare string
    return overrides


def _grid(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, dict]:
    """The grid mode and its settings with the command line's choices applied (fillers, vocab, batch size)."""
    mode = "quick" if args.quick else args.grid
    grid = dict(GRIDS[mode])
    if args.fillers:
        grid["fillers"] = [f.strip() for f in args.fillers.split(",")]
        if not set(grid["fillers"]) <= set(FILLERS):
            parser.error(f"--fillers: choose from {', '.join(FILLERS)}, got {args.fillers!r}")
    args.vocab = args.vocab or grid["vocab"]
    args.batch_size = args.batch_size or grid["batch_size"]
    return mode, grid


def _run_cell(setting, hidden: int, filler: str, layer_type: str, steps: int, examples: int, args, tokenizer, scratch):
    """Train one cell (size-matched to the bmojo cell); its results row, or None if a signal stopped it."""
    reference = cell_config(setting, hidden, filler, "bmojo", steps, examples, args)
    config, params = equalize(
        cell_config(setting, hidden, filler, layer_type, steps, examples, args), reference, tokenizer
    )
    config.train.output_dir = str(Path(scratch) / f"{setting.seq_len}-{hidden}-{filler}-{layer_type}")
    curve = AccuracyCurve()
    if args.curve_every:
        config.train.eval_steps = args.curve_every
    print(f"\n== T={setting.seq_len} pairs={setting.num_pairs} d={hidden} {filler} {layer_type}: {params:,} params")
    start = time.time()
    result = run(config, callbacks=[curve])
    if result.stopped_by is not None:
        return None, result.stopped_by
    row = {
        "seq_len": setting.seq_len,
        "num_pairs": setting.num_pairs,
        "window": setting.window,
        "slots": setting.slots,
        "hidden": hidden,
        "filler": filler,
        "layer_type": layer_type,
        "params": params,
        "accuracy": round(result.metrics["eval_accuracy"], 4),
        "lr": args.lr,
        **hit_rate(config),
        "train_seconds": round(time.time() - start, 1),
    }
    if args.curve_every:
        row["accuracy_curve"] = curve.points
    print(row)
    return row, None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.merge:
        return _merge_files(parser, args)
    if args.best_lr:
        parser.error("--best-lr goes with --merge (train one rate per run, then merge the runs)")
    if args.across_seeds:
        parser.error("--across-seeds goes with --merge (train one seed per run, then merge the runs)")
    args.model_overrides = _model_overrides(parser, args.model_set)
    mode, grid = _grid(parser, args)
    steps = args.steps or grid["steps"]
    examples = args.train_examples or grid["train_examples"]
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()

    meta = {**environment_info(), "transformers": transformers.__version__, "steps": steps,
            "train_examples": examples, "batch_size": args.batch_size, "lr": args.lr, "vocab": args.vocab,
            "eval_examples": args.eval_examples, "seed": args.seed, "layers": 2, "mode": mode,
            "model_overrides": args.model_overrides}  # fmt: skip
    print("\n".join(f"{k}: {v}" for k, v in meta.items()))
    tokenizer = load_tokenizer("byte")
    layer_types = _arms(parser, args.layer_types or ",".join(DEFAULT_ARMS))
    cells = [
        (setting, hidden, filler, layer_type)
        for setting, hidden, filler in itertools.product(grid["settings"], grid["hidden"], grid["fillers"])
        for layer_type in layer_types
    ]
    rows, stopped_by = [], None
    with tempfile.TemporaryDirectory(prefix="mqar-bench-") as scratch:
        for cell in cells:
            row, stopped_by = _run_cell(*cell, steps, examples, args, tokenizer, scratch)
            if stopped_by is not None:  # SIGTERM/SIGINT: keep the finished cells
                print(f"stopped by signal {stopped_by}: writing the {len(rows)} finished cells")
                break
            rows.append(row)
    meta["targets"] = target_checks(rows)
    name = args.name or ("mqar" if mode == "full" else f"mqar_{mode}")  # the suffixes benchmarks.report reads
    if stopped_by is not None:  # a partial grid must not replace a complete one (the report reads <name>.json)
        meta["interrupted_by_signal"] = stopped_by
        name += "_partial"
    if not rows:
        print("no finished cell: nothing written")
        return 128 + stopped_by if stopped_by is not None else 1
    write(name, rows, meta)
    return 0 if stopped_by is None else 128 + stopped_by


if __name__ == "__main__":
    raise SystemExit(main())
