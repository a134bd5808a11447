"""The Trainer route in mixed precision: ``--precision bf16`` on CPU (autocast) trains a tiny run to the end
with finite losses (it failed in the backward of the fused ops until they replayed the forward's autocast)."""

from __future__ import annotations

import math

from training.config import parse
from training.train import run


def test_bf16_precision_trains(tiny_args, tmp_path, train_losses):
    out = tmp_path / "bf16"
    config = parse([*tiny_args, "--output-dir", str(out), "--max-steps", "3", "--eval-steps", "1000",
                    "--precision", "bf16"])[0]  # fmt: skip
    result = run(config)
    assert result.stopped_by is None and result.global_step == 3
    losses = train_losses(out)
    assert sorted(losses) == [1, 2, 3] and all(math.isfinite(v) for v in losses.values())
