"""Fixtures of the training tests: tiny, fast run settings (the settings themselves are in tests.helpers.training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.training import TINY_MODEL, TINY_MQAR


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
