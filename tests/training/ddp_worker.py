"""Run by torchrun in test_train_ddp.py: one training run, then each rank saves its final weights.

Not a test module (no ``test_`` prefix): it is a program launched once per rank.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from training.config import parse
from training.train import run
from training.zero1 import unwrap


class SaveRankWeights(TrainerCallback):
    def __init__(self, folder: Path):
        self.folder = folder

    def on_train_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        rank = int(os.environ["RANK"])
        state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        inner = unwrap(optimizer)
        local = getattr(inner, "optim", inner)  # ZeRO-1: the optimizer of this rank's share
        record = {
            "world_size": args.world_size,
            "weights": state_dict,
            "optimizer": type(inner).__name__,
            "parameters_with_state": len(local.state),
        }
        torch.save(record, self.folder / f"rank{rank}.pt")


if __name__ == "__main__":
    config, _ = parse(sys.argv[1:])
    result = run(config, callbacks=[SaveRankWeights(Path(config.train.output_dir))])
    sys.exit(0 if result.stopped_by is None else 1)
