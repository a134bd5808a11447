"""Shared fixtures for the training tests: tiny, fast run settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# A 2-layer, width-32 B'MOJO on a short MQAR task: a few steps take well under a second on one core.
TINY_MODEL = [
    *("--set", "model.overrides.hidden_size=32", "--set", "model.overrides.intermediate_size=64"),
    *("--set", "model.overrides.num_attention_heads=2", "--set", "model.overrides.ssm_num_heads=2"),
    *("--set", "model.overrides.ssm_head_dim=16", "--set", "model.overrides.sliding_window=8"),
    *("--set", "model.overrides.chunk_size=8", "--set", "model.overrides.eidetic_slots=8"),
]
TINY_MQAR = (
    "--task mqar --mqar-seq-len 32 --mqar-pairs 4 --mqar-vocab 64 --mqar-train-examples 256 "
    "--mqar-eval-examples 16 --batch-size 4 --logging-steps 1 --no-tqdm --no-plot --precision fp32 --warmup-steps 2"
).split()


@pytest.fixture
def tiny_args():
    """Command-line arguments of a tiny MQAR run (add --output-dir and --max-steps)."""
    return [*TINY_MQAR, *TINY_MODEL]


def _train_losses(output_dir: Path) -> dict[int, float]:
    lines = (Path(output_dir) / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, filter(None, lines)) if "loss" in r}


@pytest.fixture
def train_losses():
    """``train_losses(output_dir)``: step -> training loss, from the run's metrics.jsonl."""
    return _train_losses
