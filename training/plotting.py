"""The loss / evaluation curves of a run, drawn from its ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: training machines have no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(metrics_path: str | Path, out_path: str | Path, eval_metric: str | None = None) -> Path:
    """Plot training loss and ``eval_loss`` against steps, and ``eval_metric`` (e.g. ``eval_accuracy``)
    on a second panel when given; write a PNG to ``out_path`` and return it."""
    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    panels = 2 if eval_metric and any(eval_metric in r for r in evals) else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot(*zip(*train), label="train loss")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if panels == 2:
        ax = axes[0][1]
        points = [(r["step"], r[eval_metric]) for r in evals if eval_metric in r]
        ax.plot(*zip(*points), "o-", color="tab:green")
        ax.set_xlabel("step")
        ax.set_title(eval_metric)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


__all__ = ["plot_curves"]
