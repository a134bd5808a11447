"""PNG figures drawn from the results JSON files (``python -m benchmarks.plots`` redraws them all).

Each figure is drawn only from what a run wrote, and its title says how many runs each point is the
median of. Figures:

- ``lm[_quick]_length.png``: held-out perplexity against evaluation length (left) and relative to the
  model's own perplexity at the training length (right);
- ``train_speed[_quick]_length.png``: training tokens/s and peak extra memory against sequence length
  (``benchmarks.train_speed`` writes no figure of its own);
- ``recall[_quick]_length.png``: MQAR accuracy against sequence length (``benchmarks.recall``).

``benchmarks.decode`` and ``benchmarks.mqar`` draw their own figures (``decode.png``, ``mqar[_quick].png``).
Columns are read by name (see ``_SERIES``); a file without them is skipped with a message rather than
guessed at.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import ScalarFormatter  # noqa: E402

from benchmarks._common import RESULTS_DIR  # noqa: E402


def _load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _runs_note(n: int | set) -> str:
    if isinstance(n, set):
        n = n.pop() if len(n) == 1 else f"{min(n)}-{max(n)}"
    return f"median of {n} run{'s' if n != 1 else ''}"


def plot_lm(json_path: Path) -> list[Path]:
    """Perplexity vs evaluation length for every arm of an ``lm`` result; returns the written paths."""
    data = _load(json_path)
    rows, settings = data["rows"], data["meta"]["settings"]
    if not rows:
        print(f"plots: {Path(json_path).name} has no rows to draw")
        return []
    factors, train_len = settings["factors"], settings["seq_len"]
    lengths = [train_len * f for f in factors]
    fig, (ax, rel) = plt.subplots(1, 2, figsize=(11, 4.2))
    for row in rows:
        ppl = [row[f"ppl_{f}x"] for f in factors]
        style = "--" if row["arm"] in ("llama", "mistral", "mamba2") else "-"
        ax.plot(lengths, ppl, style, marker="o", label=row["arm"])
        rel.plot(lengths, [p / ppl[0] for p in ppl], style, marker="o", label=row["arm"])
    for a in (ax, rel):
        a.set_xscale("log", base=2)
        a.set_xticks(lengths, [str(n) for n in lengths])
        a.axvline(train_len, color="grey", lw=0.8, ls=":")
        a.set_xlabel("evaluation length (tokens = bytes)")
        a.grid(alpha=0.3)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_ylabel("validation perplexity (per byte)")
    rel.set_ylabel("perplexity / perplexity at training length")
    rel.axhline(1.10, color="tab:red", lw=0.8, ls="--")
    rel.set_ylim(0.8, max(2.0, min(10.0, rel.get_ylim()[1])))
    ax.legend(fontsize=8, ncol=2)
    runs = {r["runs"] for r in rows}
    fig.suptitle(
        f"Length extrapolation: trained at {train_len}, {settings['train_tokens']:,} tokens, "
        f"~{rows[0]['non_embedding_params'] / 1e6:.2f}M non-embedding params ({_runs_note(runs)}, "
        f"{data['meta']['mode']} mode)",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(json_path).with_name(Path(json_path).stem + "_length.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return [out]


# benchmark -> (x column, group column, [(y column, y label, log scale)], runs-per-point column or constant)
_SERIES = {
    "train_speed": (
        "seq",
        "model",
        [("tokens_per_s", "training tokens/s", True), ("peak_extra_mb", "peak extra MB", True)],
    ),
    "recall": ("seq_len", "layer_type", [("accuracy", "MQAR recall accuracy", False)]),
}


def _points_note(kind: str, meta: dict) -> str:
    """How many runs or timed repeats each point is the median of."""
    if kind == "train_speed":  # benchmarks.train_speed.main: 1 timed step in --quick, else the median of 2
        steps = 1 if meta.get("quick") else 2
        return f"one process per point, median of {steps} timed step{'s' if steps > 1 else ''} after a warm-up"
    return _runs_note(meta.get("runs_per_point", 1))


def plot_series(json_path: Path, kind: str) -> list[Path]:
    """Lines of ``_SERIES[kind]`` per group (one panel per y column; per thread count if the rows have one)."""
    data = _load(json_path)
    x_col, group_col, ys = _SERIES[kind]
    rows = [r for r in data["rows"] if x_col in r and group_col in r and "error" not in r]
    ys = [y for y in ys if any(y[0] in r for r in rows)]
    if not rows or not ys or len({r[x_col] for r in rows}) < 2:
        print(f"plots: {json_path.name}: no {x_col} series to draw (needs columns {x_col}, {group_col} and 2+ lengths)")
        return []
    variants = sorted({(r.get("threads"), r.get("filler"), r.get("hidden")) for r in rows}, key=str)
    fig, axes = plt.subplots(len(variants), len(ys), figsize=(5.2 * len(ys), 3.6 * len(variants)), squeeze=False)
    for axes_row, variant in zip(axes, variants):
        mine = [r for r in rows if (r.get("threads"), r.get("filler"), r.get("hidden")) == variant]
        for ax, (y_col, label, log) in zip(axes_row, ys):
            for group in dict.fromkeys(r[group_col] for r in mine):
                points = sorted(
                    (r[x_col], r[y_col]) for r in mine if r[group_col] == group and r.get(y_col) is not None
                )
                if points:
                    ax.plot(*zip(*points), marker="o", label=str(group))
            ax.set_xscale("log", base=2)
            xs = sorted({r[x_col] for r in mine})
            ax.set_xticks(xs, [str(x) for x in xs])
            if log:
                ax.set_yscale("log")
            ax.set_xlabel(x_col)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.set_title(
                ", ".join(f"{k} {v}" for k, v in zip(("threads", "filler", "hidden"), variant) if v is not None),
                fontsize=9,
            )
        axes_row[0].legend(fontsize=8)
    fig.suptitle(f"{json_path.stem} ({_points_note(kind, data['meta'])})", fontsize=10)
    fig.tight_layout()
    out = Path(json_path).with_name(Path(json_path).stem + "_length.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return [out]


def plot_all(results_dir: Path = RESULTS_DIR) -> list[Path]:
    """Redraw every figure whose JSON exists in ``results_dir``."""
    written = []
    for name in ("lm", "lm_quick"):
        if (results_dir / f"{name}.json").exists():
            written += plot_lm(results_dir / f"{name}.json")
    for kind in _SERIES:
        for name in (kind, f"{kind}_quick"):
            if (results_dir / f"{name}.json").exists():
                written += plot_series(results_dir / f"{name}.json", kind)
    return written


def main() -> int:
    for path in plot_all():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
